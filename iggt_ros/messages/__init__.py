"""The message layer: plain message layouts, topic and frame conventions, output messages, image decoding and
the TF buffer, shared by the node (`iggt_ros.ros`) and the bag tools (`iggt_ros.bag`)."""
