"""A ROS message as plain data, the neutral form every layout produces.

Layouts describe each output message once, as nested dicts keyed by the ROS field names with
numpy arrays for numeric arrays. Two converters turn that into a concrete message: one for rosbags
typestore classes (`iggt_ros.bag.convert`) and one for rclpy classes (`iggt_ros.ros.convert`).
Because both read the same description, the node and the replay publish byte-identical messages.

Conventions of the plain form:
- a nested message is a dict; a sequence or array of messages is a list of dicts;
- a numeric array or sequence is a numpy array (or anything `np.asarray` accepts);
- fields left out take the message's default value (zero, empty, or the .msg default).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

NS_PER_S = 1_000_000_000


@dataclass
class MessageData:
    """A message type name (``pkg/msg/Name``) and its fields as plain data."""

    typename: str
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Header:
    """std_msgs/Header as the layouts take it: a stamp in integer nanoseconds and a frame id."""

    stamp_ns: int
    frame_id: str

    def to_plain(self) -> dict[str, Any]:
        return {"stamp": time_plain(self.stamp_ns), "frame_id": self.frame_id}


def time_plain(stamp_ns: int) -> dict[str, int]:
    """builtin_interfaces/Time fields of a nanosecond stamp (floor division keeps nanosec >= 0)."""
    sec, nanosec = divmod(int(stamp_ns), NS_PER_S)
    return {"sec": sec, "nanosec": nanosec}


def stamp_ns(stamp: Any) -> int:
    """Nanoseconds of a builtin_interfaces/Time message of either library (fields sec, nanosec)."""
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)

