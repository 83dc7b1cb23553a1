"""A real rclpy node publishes our generated InstanceArray over DDS and receives it back."""

from __future__ import annotations

import time

import pytest


def test_instance_array_round_trip_over_dds(rclpy_context):
    from geometry_msgs.msg import Point
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    from iggt_ros.msg import Instance, InstanceArray
    from iggt_ros.srv import Query

    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    pub_node = Node("smoke_pub", context=rclpy_context)
    sub_node = Node("smoke_sub", context=rclpy_context)
    received: list[InstanceArray] = []
    sub_node.create_subscription(InstanceArray, "/iggt/instances", received.append, qos)
    pub = pub_node.create_publisher(InstanceArray, "/iggt/instances", qos)

    msg = InstanceArray()
    msg.header.frame_id = "odom"
    for i in (3, 7):
        inst = Instance(id=i, state=Instance.STATE_CONFIRMED, label=f"obj{i}", score=0.5 + 0.1 * i)
        inst.centroid = Point(x=float(i), y=-1.0, z=0.25)
        inst.point_count = 100 * i
        msg.instances.append(inst)

    executor = SingleThreadedExecutor(context=rclpy_context)
    executor.add_node(pub_node)
    executor.add_node(sub_node)
    deadline = time.monotonic() + 10.0
    while not received and time.monotonic() < deadline:
        pub.publish(msg)
        executor.spin_once(timeout_sec=0.1)
    executor.shutdown()
    pub_node.destroy_node()
    sub_node.destroy_node()

    assert received, "no InstanceArray arrived within 10 s"
    got = received[0]
    assert got.header.frame_id == "odom"
    assert [m.id for m in got.instances] == [3, 7]
    assert got.instances[1].label == "obj7"
    assert got.instances[1].centroid.x == 7.0
    assert got.instances[0].point_count == 300
    assert abs(got.instances[1].score - 1.2) < 1e-6
    # The service type is generated too: a request survives the wire format field for field.
    from rclpy.serialization import deserialize_message, serialize_message

    req = deserialize_message(serialize_message(Query.Request(text="the red cube", max_results=3, min_score=0.1)),
                              Query.Request)
    assert (req.text, req.max_results, req.min_score) == ("the red cube", 3, pytest.approx(0.1))
