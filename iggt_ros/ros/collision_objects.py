"""Confirmed instances as collision objects of a MoveIt planning scene (`publish.collision_objects`, off by default).

Each window's instances go through `PlanningSceneTracker` (`iggt_ros.messages.planning_scene`), which
sends only the changes (ADD, MOVE, REMOVE) as `moveit_msgs/CollisionObject` on `/collision_object`,
the topic move_group's planning scene monitor listens on (remap it for another). Boxes are in the
window's output frame at its stamp; MoveIt places them in its planning frame through TF.

Rules:

* The publisher exists when moveit_msgs can be imported; with the flag on and moveit_msgs missing,
  the node says so once and publishes everything else.
* Changes are incremental, so a planning scene that subscribes later would miss what was added
  before: when the number of subscribers grows, every confirmed instance is sent again (ADD
  replaces an object of the same ID).
* Turning the flag off at run time removes every object sent; a reset of the map (`/iggt/reset`)
  removes them at once, without waiting for the next window.

`CollisionObjectChanges` holds these rules without rclpy or moveit_msgs (tested everywhere);
`CollisionObjectPublisher` is the node's thin rclpy side.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from iggt_ros.config import PublishConfig
from iggt_ros.messages.message import Header, MessageData
from iggt_ros.messages.planning_scene import TYPENAME, PlanningSceneTracker
from iggt_ros.perception.object_map import ObjectInstance
from iggt_ros.perception.records import instance_record

TOPIC = "/collision_object"
"""move_group's collision object topic (`planning_scene_monitor::PlanningSceneMonitor`'s default)."""
QUEUE_DEPTH = 100
"""Reliable, and deep enough for every change of a window at once (each change is its own message)."""


class CollisionObjectChanges:
    """The CollisionObject messages of each window and of a reset (thread-safe: windows and the reset service
    run on different threads)."""

    def __init__(self, publish: PublishConfig) -> None:
        self.publish = publish
        """Read at every window: the flag can change at run time."""
        self._tracker = PlanningSceneTracker()
        self._frame_id = ""
        self._lock = threading.Lock()

    @property
    def sent(self) -> int:
        """Objects the planning scene holds from this node."""
        with self._lock:
            return self._tracker.sent

    def window(self, stamp_ns: int, frame_id: str, instances: Sequence[ObjectInstance],
               new_subscriber: bool = False) -> list[MessageData]:
        """The changes one window's map makes to the planning scene."""
        header = Header(int(stamp_ns), frame_id)
        with self._lock:
            self._frame_id = frame_id
            if not self.publish.collision_objects:
                return self._tracker.clear(header)
            if new_subscriber:
                self._tracker.resend()
            return self._tracker.update(header, [instance_record(i) for i in instances])

    def reset(self, stamp_ns: int) -> list[MessageData]:
        """REMOVE for everything sent (the map was cleared), in the frame of the last window."""
        with self._lock:
            return self._tracker.clear(Header(int(stamp_ns), self._frame_id))


class CollisionObjectPublisher:
    """A lifecycle publisher on `TOPIC` when moveit_msgs imports, fed with every published window."""

    def __init__(self, node: Any, publish: PublishConfig) -> None:
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        from iggt_ros.ros.convert import message_class

        self.changes = CollisionObjectChanges(publish)
        self._node = node
        self._pub: Any = None
        self._subscribers = 0
        self._warned = False
        try:
            cls = message_class(TYPENAME)
        except ImportError:
            self._warn_unavailable()
            return
        self._pub = node.create_lifecycle_publisher(
            cls, TOPIC, QoSProfile(depth=QUEUE_DEPTH, reliability=ReliabilityPolicy.RELIABLE))

    @property
    def available(self) -> bool:
        """Whether moveit_msgs is installed (the publisher exists)."""
        return self._pub is not None

    def _warn_unavailable(self) -> None:
        if self.changes.publish.collision_objects and not self._warned:
            self._warned = True
            self._node.get_logger().warning(
                f"publish.collision_objects is on, but moveit_msgs is not installed: nothing is published on "
                f"{TOPIC} (install ros-$ROS_DISTRO-moveit-msgs and configure the node again)")

    def publish_window(self, stamp_ns: int, frame_id: str, instances: Sequence[ObjectInstance]) -> None:
        if self._pub is None:
            self._warn_unavailable()
            return
        count = self._pub.get_subscription_count()
        grew, self._subscribers = count > self._subscribers, count
        self._send(self.changes.window(stamp_ns, frame_id, instances, new_subscriber=grew))

    def reset(self) -> None:
        if self._pub is not None:
            self._send(self.changes.reset(self._node.get_clock().now().nanoseconds))

    def _send(self, messages: list[MessageData]) -> None:
        from iggt_ros.ros.convert import to_rclpy

        for message in messages:
            self._pub.publish(to_rclpy(message))

    def release(self) -> None:
        if self._pub is not None:
            self._node.destroy_lifecycle_publisher(self._pub)
            self._pub = None
