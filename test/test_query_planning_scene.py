"""CollisionObject layout and the add / move / remove sequence, without moveit_msgs."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from iggt_ros.messages.message import Header
from iggt_ros.messages.planning_scene import ADD, BOX, MOVE, REMOVE, PlanningSceneTracker, collision_object
from iggt_ros.perception.records import STATE_CONFIRMED, STATE_LOST, STATE_TENTATIVE, InstanceRecord

H = Header(7_000_000_000, "odom")


def box(iid: int, x: float, size: float = 0.3, state: int = STATE_CONFIRMED, yaw: float = 0.0) -> InstanceRecord:
    c = np.array([x, 1.0, size / 2])
    return InstanceRecord(id=iid, centroid=c, box_center=c, box_size=np.array([size, 0.2, size]), box_yaw=yaw,
                          state=state)


def test_layout_of_an_added_box():
    m = collision_object(H, box(4, 2.0, yaw=np.pi / 2), ADD, 4)
    f = m.fields
    assert m.typename == "moveit_msgs/msg/CollisionObject"
    assert f["id"] == "iggt_instance_4" and f["operation"] == ADD and f["header"]["frame_id"] == "odom"
    assert f["pose"]["position"] == {"x": 2.0, "y": 1.0, "z": 0.15}
    q = f["pose"]["orientation"]
    assert (q["x"], q["y"]) == (0.0, 0.0) and q["z"] == pytest.approx(np.sqrt(0.5)) and q["w"] == pytest.approx(
        np.sqrt(0.5))
    assert [p["type"] for p in f["primitives"]] == [BOX]
    assert np.allclose(f["primitives"][0]["dimensions"], [0.3, 0.2, 0.3])
    assert f["primitive_poses"][0]["orientation"]["w"] == 1.0  # the box sits at the object's pose
    assert set(f) >= {"meshes", "mesh_poses", "planes", "plane_poses", "subframe_names", "subframe_poses", "type"}
    with pytest.raises(ValueError, match="need the instance"):
        collision_object(H, None, MOVE, 4)


def test_add_move_remove_follow_the_map():
    t = PlanningSceneTracker()
    ops = lambda msgs: [(m.fields["id"], m.fields["operation"]) for m in msgs]  # noqa: E731
    first = t.update(H, [box(1, 0.0), box(2, 1.0, state=STATE_TENTATIVE)])
    assert ops(first) == [("iggt_instance_1", ADD)]                     # tentative instances are not obstacles
    assert t.update(H, [box(1, 0.005), box(2, 1.0, state=STATE_TENTATIVE)]) == []  # within the tolerance
    moved = t.update(H, [box(1, 0.2), box(2, 1.0)])
    assert ops(moved) == [("iggt_instance_1", MOVE), ("iggt_instance_2", ADD)]
    assert moved[0].fields["primitives"] == [] and moved[0].fields["pose"]["position"]["x"] == 0.2
    grown = t.update(H, [box(1, 0.2, size=0.5), box(2, 1.0)])
    assert ops(grown) == [("iggt_instance_1", ADD)]                     # a new size needs ADD (replaces)
    gone = t.update(H, [dataclasses.replace(box(2, 1.0), state=STATE_LOST)])
    assert ops(gone) == [("iggt_instance_1", REMOVE), ("iggt_instance_2", REMOVE)]
    assert gone[0].fields["primitives"] == []
    t.update(H, [box(3, 0.0)])
    assert ops(t.clear(H)) == [("iggt_instance_3", REMOVE)] and t.update(H, []) == []
