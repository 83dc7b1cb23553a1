"""The rosbags typestore of the package: ROS 2 Jazzy plus iggt_ros and vision_msgs types.

Bags written and read without ROS need every message type the node publishes. The Jazzy store
already holds common_interfaces (sensor, geometry, visualization, tf2, diagnostic messages); our
own interfaces and vision_msgs are registered from the definitions in `msgdefs`, so a pip install
without ROS can write and read /iggt/instances and /iggt/detections.
"""

from __future__ import annotations

from functools import lru_cache

from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from iggt_ros.bag.msgdefs import (
    INSTANCE_ARRAY_MSG,
    INSTANCE_MSG,
    LOAD_MAP_SRV,
    QUERY_SRV,
    SAVE_MAP_SRV,
    VISION_MSGS,
    split_service,
)

INSTANCE = "iggt_ros/msg/Instance"
INSTANCE_ARRAY = "iggt_ros/msg/InstanceArray"
QUERY_REQUEST = "iggt_ros/srv/Query_Request"
QUERY_RESPONSE = "iggt_ros/srv/Query_Response"
DETECTION3D_ARRAY = "vision_msgs/msg/Detection3DArray"


def own_definitions() -> dict[str, str]:
    """Type name -> .msg text of every type registered on top of the Jazzy store."""
    defs = {INSTANCE: INSTANCE_MSG, INSTANCE_ARRAY: INSTANCE_ARRAY_MSG}
    for name, text in (("Query", QUERY_SRV), ("SaveMap", SAVE_MAP_SRV), ("LoadMap", LOAD_MAP_SRV)):
        request, response = split_service(text)
        defs[f"iggt_ros/srv/{name}_Request"] = request
        defs[f"iggt_ros/srv/{name}_Response"] = response
    defs.update(VISION_MSGS)
    return defs


def make_typestore() -> Typestore:
    """A fresh Jazzy typestore with the package's and vision_msgs' types registered."""
    store = get_typestore(Stores.ROS2_JAZZY)
    types = {}
    for name, text in own_definitions().items():
        # The .msg parser resolves relative names (``Instance[]``) in the package's msg namespace;
        # service parts are parsed as messages and registered under their srv name.
        parse_name = name.replace("/srv/", "/msg/")
        for parsed_name, fields in get_types_from_msg(text, parse_name).items():
            types[name if parsed_name == parse_name else parsed_name] = fields
    store.register(types)
    return store


@lru_cache(maxsize=1)
def typestore() -> Typestore:
    """The shared typestore (built once per process; registration parses every definition)."""
    return make_typestore()
