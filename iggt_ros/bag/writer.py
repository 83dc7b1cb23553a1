"""Writing rosbag2 bags (mcap or sqlite3) from plain layout data.

A thin layer over `rosbags.rosbag2.Writer` that knows the package's typestore, converts layout
data (`MessageData`) to CDR, and records the QoS a ROS publisher would offer, so that
`ros2 bag play` republishes latched topics such as /tf_static as transient-local. Used by the
sample-bag command and by the replay's output bag.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import StoragePlugin, Writer

from iggt_ros.bag.convert import to_rosbags
from iggt_ros.bag.typestore import typestore
from iggt_ros.messages.message import MessageData

STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
_DEFAULT_TIME = QosTime(0, 0)  # rmw: 0 means the default (no deadline, infinite lifespan)


def qos(depth: int, latched: bool = False) -> Qos:
    """Reliable keep-last QoS; `latched` makes it transient-local (late subscribers get the last messages)."""
    return Qos(
        history=QosHistory.KEEP_LAST,
        depth=depth,
        reliability=QosReliability.RELIABLE,
        durability=QosDurability.TRANSIENT_LOCAL if latched else QosDurability.VOLATILE,
        deadline=_DEFAULT_TIME,
        lifespan=_DEFAULT_TIME,
        liveliness=QosLiveliness.AUTOMATIC,
        liveliness_lease_duration=_DEFAULT_TIME,
        avoid_ros_namespace_conventions=False,
    )


class BagWriter:
    """A rosbag2 being written: declare topics, then write layout messages in time order.

    Messages should be written in non-decreasing time order: readers of a bag whose index was lost
    (an interrupted copy) can then still stream it.
    """

    def __init__(self, path: str | Path, storage: str = "mcap") -> None:
        if storage not in STORAGES:
            raise ValueError(f"unknown bag storage '{storage}'; choose from {', '.join(STORAGES)}")
        self.path = Path(path)
        if self.path.exists():
            raise FileExistsError(f"{self.path} already exists; remove it or choose another output path")
        self.storage = storage
        self._store = typestore()
        self._writer = Writer(self.path, version=9, storage_plugin=STORAGES[storage])
        self._connections: dict[str, object] = {}
        self._types: dict[str, str] = {}
        self.counts: dict[str, int] = {}

    def __enter__(self) -> BagWriter:
        self._writer.open()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._writer.close()

    def add_topic(self, topic: str, typename: str, latched: bool = False, depth: int = 10) -> None:
        """Declare a topic before writing to it; latched topics are recorded as transient-local."""
        if topic in self._connections:
            raise ValueError(f"topic {topic} is already declared")
        self._connections[topic] = self._writer.add_connection(
            topic, typename, typestore=self._store, offered_qos_profiles=[qos(1 if latched else depth, latched)])
        self._types[topic] = typename
        self.counts[topic] = 0

    def write(self, topic: str, time_ns: int, data: MessageData) -> None:
        """Write one message received at `time_ns` (the bag's record time)."""
        if topic not in self._connections:
            raise KeyError(f"topic {topic} was not declared with add_topic")
        if data.typename != self._types[topic]:
            raise TypeError(f"topic {topic} carries {self._types[topic]}, not {data.typename}")
        raw = self._store.serialize_cdr(to_rosbags(data, self._store), data.typename)
        self._writer.write(self._connections[topic], int(time_ns), bytes(raw))
        self.counts[topic] += 1
