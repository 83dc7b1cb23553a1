"""Topic and frame names of camera bags and of the ground-truth convention (see `iggt_ros.bag.sample`).

The sample-bag writer, the bag reader and the evaluation all derive names from here, so a bag that
one writes the others find.
"""

from __future__ import annotations

WORLD_FRAME = "odom"
BASE_FRAME = "base_link"
TF_TOPIC = "/tf"
TF_STATIC_TOPIC = "/tf_static"
GT_OBJECTS_TOPIC = "/gt/objects"
GT_PREFIX = "/gt/"

IMAGE_SUFFIX = "/image_raw"
COMPRESSED_SUFFIX = "/image_raw/compressed"
CAMERA_INFO_SUFFIX = "/camera_info"

IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_TYPE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
TF_TYPE = "tf2_msgs/msg/TFMessage"
INSTANCE_ARRAY_TYPE = "iggt_ros/msg/InstanceArray"


def optical_frame(camera: str) -> str:
    """Frame id of a camera's optical frame (OpenCV axes: x right, y down, z forward)."""
    return f"{camera.strip('/').replace('/', '_')}_optical_frame"


def image_topic(camera: str) -> str:
    return f"/{camera.strip('/')}{IMAGE_SUFFIX}"


def compressed_topic(camera: str) -> str:
    return f"/{camera.strip('/')}{COMPRESSED_SUFFIX}"


def camera_info_topic(camera: str) -> str:
    return f"/{camera.strip('/')}{CAMERA_INFO_SUFFIX}"


def gt_instances_topic(camera: str) -> str:
    return f"{GT_PREFIX}{camera.strip('/')}/instances"


def gt_depth_topic(camera: str) -> str:
    return f"{GT_PREFIX}{camera.strip('/')}/depth"


def camera_of_topic(topic: str) -> str | None:
    """Camera name of a camera image topic (``/front/image_raw`` -> ``front``), else None.

    Outputs (/iggt/...) and ground truth (/gt/...) are not cameras even when their names match.
    """
    if topic.startswith(GT_PREFIX) or topic.startswith("/iggt/"):
        return None
    for suffix in (COMPRESSED_SUFFIX, IMAGE_SUFFIX):
        if topic.endswith(suffix) and len(topic) > len(suffix) + 1:
            return topic[: -len(suffix)].strip("/")
    return None
