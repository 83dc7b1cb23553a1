"""The rosbags typestore carries our interfaces and vision_msgs, from text embedded in the package."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from iggt_ros.bag import msgdefs
from iggt_ros.bag.convert import to_plain, to_rosbags
from iggt_ros.bag.typestore import INSTANCE_ARRAY, QUERY_REQUEST, QUERY_RESPONSE, make_typestore, typestore
from iggt_ros.messages.message import MessageData

REPO = Path(__file__).resolve().parents[1]


def test_embedded_definitions_equal_the_repository_interfaces():
    assert (REPO / "msg" / "Instance.msg").read_text() == msgdefs.INSTANCE_MSG
    assert (REPO / "msg" / "InstanceArray.msg").read_text() == msgdefs.INSTANCE_ARRAY_MSG
    assert (REPO / "srv" / "Query.srv").read_text() == msgdefs.QUERY_SRV
    assert (REPO / "srv" / "SaveMap.srv").read_text() == msgdefs.SAVE_MAP_SRV
    assert (REPO / "srv" / "LoadMap.srv").read_text() == msgdefs.LOAD_MAP_SRV


def test_every_interface_file_is_embedded():
    """A new .msg or .srv in the repository must be added to msgdefs (and so to the typestore)."""
    names = {p.name for p in (REPO / "msg").glob("*.msg")} | {p.name for p in (REPO / "srv").glob("*.srv")}
    assert names == {"Instance.msg", "InstanceArray.msg", "Query.srv", "SaveMap.srv", "LoadMap.srv"}
    store = typestore()
    for service in ("Query", "SaveMap", "LoadMap"):
        assert {f"iggt_ros/srv/{service}_Request", f"iggt_ros/srv/{service}_Response"} <= set(store.fielddefs)


def test_typestore_fields_follow_the_definitions():
    store = typestore()
    consts, fields = store.fielddefs["iggt_ros/msg/Instance"]
    assert [c[0] for c in consts] == ["STATE_TENTATIVE", "STATE_CONFIRMED", "STATE_LOST"]
    assert [f[0] for f in fields] == ["header", "id", "state", "label", "score", "centroid", "box_pose", "box_size",
                                      "point_count", "views_seen", "first_seen", "last_seen", "attributes"]
    _, req = store.fielddefs[QUERY_REQUEST]
    assert [f[0] for f in req] == ["text", "max_results", "min_score", "target_frame"]
    _, resp = store.fielddefs[QUERY_RESPONSE]
    assert resp[2] == ("instances", resp[2][1]) and resp[2][1][1][0][1] == "iggt_ros/msg/Instance"
    _, det = store.fielddefs["vision_msgs/msg/Detection3D"]
    assert [f[0] for f in det] == ["header", "results", "bbox", "id"]
    assert "vision_msgs/msg/Detection3D" not in get_typestore(Stores.ROS2_JAZZY).fielddefs


def test_query_service_parts_round_trip_through_cdr():
    store = typestore()
    inst = {"id": 4, "label": "red cube", "box_pose": {"orientation": {"w": 1.0}}}
    data = MessageData(QUERY_RESPONSE, {"success": True, "message": "ok", "instances": [inst],
                                        "scores": np.array([0.75], np.float32)})
    raw = store.serialize_cdr(to_rosbags(data, store), QUERY_RESPONSE)
    back = store.deserialize_cdr(raw, QUERY_RESPONSE)
    assert back.success and back.message == "ok"
    assert back.instances[0].id == 4 and back.instances[0].label == "red cube"
    assert back.scores.tolist() == [0.75]
    req = store.deserialize_cdr(store.serialize_cdr(
        to_rosbags(MessageData(QUERY_REQUEST, {"text": "the chair", "max_results": 3}), store), QUERY_REQUEST),
        QUERY_REQUEST)
    assert (req.text, req.max_results, req.min_score) == ("the chair", 3, 0.0)


def test_unknown_fields_are_refused_with_their_names():
    with pytest.raises(KeyError, match="no field"):
        to_rosbags(MessageData(INSTANCE_ARRAY, {"header": {}, "objects": []}))


@pytest.mark.parametrize("storage", [StoragePlugin.MCAP, StoragePlugin.SQLITE3])
def test_bag_carries_our_definitions_for_readers_without_them(tmp_path, storage):
    """A version-9 bag embeds the definitions, so a plain rosbags reader decodes InstanceArray."""
    store = make_typestore()
    data = MessageData(INSTANCE_ARRAY, {
        "header": {"stamp": {"sec": 5, "nanosec": 7}, "frame_id": "odom"},
        "instances": [{"id": 2, "attributes": [{"key": "shape", "value": "cube"}]}],
    })
    path = tmp_path / "bag"
    with Writer(path, version=9, storage_plugin=storage) as writer:
        conn = writer.add_connection("/iggt/instances", INSTANCE_ARRAY, typestore=store)
        writer.write(conn, 5_000_000_007, bytes(store.serialize_cdr(to_rosbags(data, store), INSTANCE_ARRAY)))
    with AnyReader([path], default_typestore=get_typestore(Stores.ROS2_JAZZY)) as reader:
        (conn,) = reader.connections
        (_, stamp, raw), = list(reader.messages())
        msg = reader.deserialize(raw, conn.msgtype)
    assert stamp == 5_000_000_007
    plain = to_plain(msg)
    assert plain["header"]["frame_id"] == "odom"
    assert plain["instances"][0]["id"] == 2
    assert plain["instances"][0]["attributes"] == [{"key": "shape", "value": "cube"}]
