"""Confirmed instances as moveit_msgs/CollisionObject boxes, added, moved and removed as the map changes.

A manipulation planner keeps a planning scene; publishing every box on every window would make it
rebuild its collision world each time. `PlanningSceneTracker` remembers what it has sent and emits
only the changes: ADD for a newly confirmed instance (and again when its box size changes, which
MOVE cannot express), MOVE when its pose moved by more than a tolerance, REMOVE when it leaves the
map or stops being confirmed. The layout is plain `MessageData` like the package's other optional
messages, so it is built and tested without moveit_msgs installed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from iggt_ros.messages.message import Header, MessageData
from iggt_ros.perception.records import STATE_CONFIRMED, InstanceRecord
from iggt_ros.spatial import yaw_quaternion

ADD, REMOVE, APPEND, MOVE = 0, 1, 2, 3
"""moveit_msgs/CollisionObject operation values."""
BOX = 1
"""shape_msgs/SolidPrimitive type of a box (dimensions x, y, z)."""
TYPENAME = "moveit_msgs/msg/CollisionObject"


def object_id(instance_id: int) -> str:
    """The collision object's ID for an instance (stable while the instance is tracked)."""
    return f"iggt_instance_{int(instance_id)}"


def _pose(center: np.ndarray, yaw: float) -> dict:
    x, y, z = (float(v) for v in np.asarray(center, np.float64).reshape(3))
    qx, qy, qz, qw = (float(v) for v in yaw_quaternion(yaw))
    return {"position": {"x": x, "y": y, "z": z}, "orientation": {"x": qx, "y": qy, "z": qz, "w": qw}}


def collision_object(header: Header, inst: InstanceRecord | None, operation: int, instance_id: int) -> MessageData:
    """One CollisionObject: the instance's box (pose at the box centre, yaw about z) for ADD and MOVE;
    only the ID for REMOVE."""
    identity = {"position": {"x": 0.0, "y": 0.0, "z": 0.0}, "orientation": {"x": 0.0, "y": 0.0, "z": 0.0, "w": 1.0}}
    fields = {
        "header": header.to_plain(), "pose": identity, "id": object_id(instance_id),
        "type": {"key": "", "db": ""}, "primitives": [], "primitive_poses": [], "meshes": [], "mesh_poses": [],
        "planes": [], "plane_poses": [], "subframe_names": [], "subframe_poses": [], "operation": int(operation),
    }
    if operation in (ADD, MOVE):
        if inst is None:
            raise ValueError("ADD and MOVE need the instance's box")
        fields["pose"] = _pose(inst.box_center, inst.box_yaw)
        if operation == ADD:
            fields["primitives"] = [{"type": BOX, "dimensions": np.asarray(inst.box_size, np.float64).reshape(3)}]
            fields["primitive_poses"] = [identity]
    return MessageData(TYPENAME, fields)


@dataclass
class _Sent:
    center: np.ndarray
    yaw: float
    size: np.ndarray


class PlanningSceneTracker:
    """The changes to send for each map snapshot (see the module docstring)."""

    def __init__(self, move_tolerance_m: float = 0.01, size_tolerance_m: float = 0.01,
                 yaw_tolerance_rad: float = 0.02) -> None:
        self.move_tolerance_m = move_tolerance_m
        self.size_tolerance_m = size_tolerance_m
        self.yaw_tolerance_rad = yaw_tolerance_rad
        self._sent: dict[int, _Sent] = {}

    def update(self, header: Header, instances: Sequence[InstanceRecord]) -> list[MessageData]:
        out: list[MessageData] = []
        current = {int(i.id): i for i in instances if int(i.state) == STATE_CONFIRMED}
        for iid in sorted(set(self._sent) - set(current)):
            out.append(collision_object(header, None, REMOVE, iid))
            del self._sent[iid]
        for iid, inst in sorted(current.items()):
            box = _Sent(np.asarray(inst.box_center, np.float64), float(inst.box_yaw),
                        np.asarray(inst.box_size, np.float64))
            before = self._sent.get(iid)
            if before is None or np.max(np.abs(box.size - before.size)) > self.size_tolerance_m:
                out.append(collision_object(header, inst, ADD, iid))
            elif (np.linalg.norm(box.center - before.center) > self.move_tolerance_m
                  or abs(np.angle(np.exp(1j * (box.yaw - before.yaw)))) > self.yaw_tolerance_rad):
                out.append(collision_object(header, inst, MOVE, iid))
            else:
                continue
            self._sent[iid] = box
        return out

    def resend(self) -> None:
        """Forget what was sent, so the next update ADDs every confirmed instance again (ADD replaces an object
        of the same ID): a planning scene that subscribed late has missed the earlier changes."""
        self._sent.clear()

    @property
    def sent(self) -> int:
        """Objects the planning scene holds from this tracker."""
        return len(self._sent)

    def clear(self, header: Header) -> list[MessageData]:
        """REMOVE for everything sent (the map was reset)."""
        out = [collision_object(header, None, REMOVE, iid) for iid in sorted(self._sent)]
        self._sent.clear()
        return out
