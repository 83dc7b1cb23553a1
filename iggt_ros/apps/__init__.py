"""Applications on top of the core, the message layer and bag I/O: the rosbag replay and the demo.

They may import every other package of iggt_ros; nothing below them imports them.
"""
