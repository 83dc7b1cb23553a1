"""Message definitions the rosbags typestore needs beyond the ROS 2 Jazzy built-ins.

The package's own interfaces are kept here as text so that bags can carry them when iggt_ros is
pip-installed without ROS (no generated code, no share/ directory). A test asserts that this text
equals msg/*.msg and srv/*.srv of the repository, so the two cannot drift apart.

vision_msgs is not part of the rosbags stores; its definitions below follow vision_msgs 4.x (the
message set of ROS 2 Humble and Jazzy), limited to the types the 3D detection output uses.
"""

from __future__ import annotations

INSTANCE_MSG = """\
# One tracked object instance in the output frame (header.frame_id).
# IDs are stable over time: the same physical object keeps its id while it is tracked,
# and gets it back when it is re-identified after leaving the view.

uint8 STATE_TENTATIVE=0   # seen in fewer than the confirmation count of windows
uint8 STATE_CONFIRMED=1   # tracked and currently or recently observed
uint8 STATE_LOST=2        # not observed for the configured number of windows; kept for re-identification

std_msgs/Header header
uint32 id                 # instance id, > 0; the same value as the 'label' field of /iggt/points
uint8 state
string label              # text label when known (from a query plug-in or ground truth), else empty
float32 score             # confidence of the label, or of the detection when no label is known
geometry_msgs/Point centroid
geometry_msgs/Pose box_pose          # box centre and orientation (gravity-aligned: rotation about z only)
geometry_msgs/Vector3 box_size       # full box extents along the box axes, metres
uint32 point_count                   # points in the instance's map point set
uint32 views_seen                    # camera views in which the instance was segmented
builtin_interfaces/Time first_seen
builtin_interfaces/Time last_seen
diagnostic_msgs/KeyValue[] attributes  # free-form attributes, e.g. shape=cube, color=red (ground truth bags)
"""

INSTANCE_ARRAY_MSG = """\
# All instances the node tracks at header.stamp, in header.frame_id.
std_msgs/Header header
Instance[] instances
"""

QUERY_SRV = """\
# Text query against the latest object map, answered without waiting for inference.
string text              # e.g. "the red mug", "the cube left of the blue ball", "the largest box"
uint32 max_results       # 0 means the node's default (query.max_results)
float32 min_score        # drop instances scoring below this; 0 keeps every ranked instance
string target_frame      # frame of the returned boxes and centroids (TF at the map's stamp); empty = the map's frame
---
bool success             # false: message says why (empty or too long text, no instances, no text encoder, no transform)
string message
Instance[] instances     # ranked, best first; header.frame_id is target_frame when one was given
float32[] scores         # one per instance, same order
string understood        # how the text was read: target attributes, relation and references, e.g.
                         # "target: the red cube [scarlet->red]; relation: left_of the blue sphere; reference IDs 7"
"""

SAVE_MAP_SRV = """\
# Save the object map (instances, IDs, boxes, voxel points, embeddings, labels, frame, stamps) to
# <mapping.map_directory>/<name>.npz, replacing a map of the same name.
string name              # a map name (letters, digits, '_', '-', '.'), never a path; '..', '/' and links are refused
---
bool success             # false: message says why (bad name, no window yet, map not in the world frame, disk error)
string message           # on success: the file written and how many instances it holds
"""

LOAD_MAP_SRV = """\
# Replace the object map by <mapping.map_directory>/<name>.npz. Saved instances keep their IDs, are
# re-identified when seen again, and new IDs continue after the largest saved one. A file of another
# format version, another frame than input.world_frame, or a corrupted one is refused and the running
# map is kept.
string name              # a map name (letters, digits, '_', '-', '.'), never a path; '..', '/' and links are refused
---
bool success
string message           # what was loaded, or why nothing was
"""

VISION_MSGS: dict[str, str] = {
    "vision_msgs/msg/ObjectHypothesis": """\
# A class hypothesis: a class identifier (any string, e.g. a label or a query) and its score.
string class_id
float64 score
""",
    "vision_msgs/msg/ObjectHypothesisWithPose": """\
# A class hypothesis together with the pose of the object under that hypothesis.
vision_msgs/ObjectHypothesis hypothesis
geometry_msgs/PoseWithCovariance pose
""",
    "vision_msgs/msg/BoundingBox3D": """\
# An oriented 3D box: centre pose and full size along the box axes, metres.
geometry_msgs/Pose center
geometry_msgs/Vector3 size
""",
    "vision_msgs/msg/BoundingBox3DArray": """\
std_msgs/Header header
vision_msgs/BoundingBox3D[] boxes
""",
    "vision_msgs/msg/Detection3D": """\
# One 3D detection; id stays the same for the same object across messages.
std_msgs/Header header
vision_msgs/ObjectHypothesisWithPose[] results
vision_msgs/BoundingBox3D bbox
string id
""",
    "vision_msgs/msg/Detection3DArray": """\
std_msgs/Header header
vision_msgs/Detection3D[] detections
""",
    "vision_msgs/msg/VisionClass": """\
uint16 class_id
string class_name
""",
    "vision_msgs/msg/LabelInfo": """\
std_msgs/Header header
vision_msgs/VisionClass[] class_map
float32 threshold
""",
}
"""vision_msgs type name -> .msg text."""


def split_service(text: str) -> tuple[str, str]:
    """Request and response parts of a .srv text (separated by a line of three dashes)."""
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.strip() == "---":
            return "".join(lines[:i]), "".join(lines[i + 1:])
    raise ValueError("service definition has no '---' separator")
