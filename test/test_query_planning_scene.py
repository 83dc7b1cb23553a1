"""CollisionObject layout and the add / move / remove sequence, without moveit_msgs; the node's planning scene
output (its rules here, over DDS where moveit_msgs is installed)."""

from __future__ import annotations

import dataclasses
import sys
import threading

import numpy as np
import pytest
from test_node import HeldEngine, base_params, harness_factory, input_path, oracle, wait_for  # noqa: F401

from iggt_ros.config import PublishConfig
from iggt_ros.messages.message import Header
from iggt_ros.messages.planning_scene import (
    ADD,
    BOX,
    MOVE,
    REMOVE,
    PlanningSceneTracker,
    collision_object,
    object_id,
)
from iggt_ros.perception.object_map import ObjectInstance
from iggt_ros.perception.records import STATE_CONFIRMED, STATE_LOST, STATE_TENTATIVE, InstanceRecord, TrackState
from iggt_ros.ros.collision_objects import CollisionObjectChanges

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


# ---------------------------------------------------------------------- the node's rules (no rclpy, no moveit_msgs)
def instance(iid: int, x: float, state: TrackState = TrackState.CONFIRMED) -> ObjectInstance:
    c = np.array([x, 1.0, 0.15])
    return ObjectInstance(id=iid, state=state, centroid=c, box_center=c, box_size=np.array([0.3, 0.2, 0.3]),
                          box_yaw=0.0, num_points=50, views_seen=3, windows_seen=2, first_seen_ns=1, last_seen_ns=2)


def ops(msgs):
    return [(m.fields["id"], m.fields["operation"]) for m in msgs]


def test_collision_objects_follow_the_flag_subscribers_and_resets():
    publish = PublishConfig()
    assert publish.collision_objects is False, "off by default"
    changes = CollisionObjectChanges(publish)
    two = [instance(1, 0.0), instance(2, 1.0), instance(3, 2.0, TrackState.TENTATIVE)]
    assert changes.window(10, "odom", two) == [] and changes.sent == 0

    publish.collision_objects = True  # a run-time parameter change: read at the next window
    first = changes.window(20, "odom", two)
    assert ops(first) == [("iggt_instance_1", ADD), ("iggt_instance_2", ADD)]
    assert all(m.fields["header"]["frame_id"] == "odom" and m.fields["header"]["stamp"] == {"sec": 0, "nanosec": 20}
               for m in first)
    assert changes.window(30, "odom", two) == []  # nothing changed: nothing sent
    again = changes.window(40, "odom", two, new_subscriber=True)
    assert ops(again) == [("iggt_instance_1", ADD), ("iggt_instance_2", ADD)], "a late planning scene gets them all"
    moved = changes.window(50, "odom", [instance(1, 0.3), instance(2, 1.0, TrackState.LOST)])
    assert ops(moved) == [("iggt_instance_2", REMOVE), ("iggt_instance_1", MOVE)]

    cleared = changes.reset(60)
    assert ops(cleared) == [("iggt_instance_1", REMOVE)] and cleared[0].fields["header"]["frame_id"] == "odom"
    assert changes.sent == 0 and changes.reset(70) == []

    changes.window(80, "map", two)
    publish.collision_objects = False  # switched off: the planning scene is emptied once
    assert ops(changes.window(90, "map", two)) == [("iggt_instance_1", REMOVE), ("iggt_instance_2", REMOVE)]
    assert changes.window(100, "map", two) == []


# ---------------------------------------------------------------------- the node over DDS
def test_node_without_moveit_msgs_publishes_everything_else(harness_factory, input_path, monkeypatch):  # noqa: F811
    """publish.collision_objects on where moveit_msgs is missing: the node configures, says so, and runs."""
    from rclpy.lifecycle import TransitionCallbackReturn

    from iggt_ros.ros.convert import message_class

    monkeypatch.setitem(sys.modules, "moveit_msgs", None)  # import raises ImportError, as where it is not installed
    monkeypatch.setitem(sys.modules, "moveit_msgs.msg", None)
    message_class.cache_clear()  # a class looked up by an earlier test would hide the missing package
    h = harness_factory(base_params(**{"publish.collision_objects": True}), HeldEngine(oracle()))
    assert h.node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert h.node.collision_objects is not None and not h.node.collision_objects.available
    assert h.node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    h.publish_static_tf()
    for step in range(4):
        h.play(step)
    wait_for(lambda: h.messages("/iggt/instances"), 60.0, "the first window's instances")


def test_node_publishes_the_planning_scene(harness_factory, input_path):  # noqa: F811
    """ADD / MOVE / REMOVE over DDS, applied as a planning scene applies them, give the node's confirmed boxes;
    a reset empties the scene."""
    pytest.importorskip("moveit_msgs.msg", reason="moveit_msgs is not installed here (it runs in the ROS workflow)")
    from moveit_msgs.msg import CollisionObject
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from std_srvs.srv import Trigger

    h = harness_factory(base_params(**{"publish.collision_objects": True}), HeldEngine(oracle()))
    scene: dict[str, CollisionObject] = {}
    operations: list[int] = []
    lock = threading.Lock()

    def apply(msg: CollisionObject) -> None:  # what a planning scene does with each message
        op = msg.operation[0] if isinstance(msg.operation, bytes) else int(msg.operation)
        with lock:
            operations.append(op)
            if op == ADD:
                scene[msg.id] = msg
            elif op == MOVE and msg.id in scene:
                scene[msg.id].pose = msg.pose
            elif op == REMOVE:
                scene.pop(msg.id, None)

    h.io.create_subscription(CollisionObject, "/collision_object", apply,
                             QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
    node = h.node
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert node.collision_objects.available
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    h.publish_static_tf()
    for step in range(10):
        h.play(step)
    wait_for(lambda: node.worker.processed >= 4, 90.0, "four processed windows")

    def matches_the_map() -> bool:
        confirmed = {object_id(i.id): i for i in node.pipeline.snapshot().instances
                     if int(i.state) == STATE_CONFIRMED}
        with lock:
            if not confirmed or set(scene) != set(confirmed):
                return False
            for oid, inst in confirmed.items():
                p = scene[oid].pose.position
                size = np.asarray(scene[oid].primitives[0].dimensions)
                if np.linalg.norm([p.x - inst.box_center[0], p.y - inst.box_center[1], p.z - inst.box_center[2]]) \
                        > 0.011 or np.abs(size - inst.box_size).max() > 0.011:
                    return False
            return all(m.header.frame_id == "odom" for m in scene.values())

    wait_for(matches_the_map, 30.0, "the planning scene holding the map's confirmed boxes")
    with lock:
        assert operations.count(ADD) >= len(scene)
    reply = h.call(h.service(Trigger, "/iggt/reset"), Trigger.Request(), 10.0)
    assert reply.success
    wait_for(lambda: not scene, 30.0, "REMOVE of every object after the reset")
