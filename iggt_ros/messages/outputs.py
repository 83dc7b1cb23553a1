"""The output messages of one processed window: the one adapter shared by the node and the replay.

`OutputAdapter.messages(result)` turns a `WindowResult` into layout data (`MessageData`) with its
topic and stamp. The replay writes these with rosbags (`BagWriter.write`), the node publishes them
with rclpy (`iggt_ros.ros.convert.to_rclpy`), so a bag recorded from the robot and a replay output
carry the same topics and bytes. Topics, relative to the namespace (default ``/iggt``):

| topic | type | content |
|---|---|---|
| `points` | sensor_msgs/PointCloud2 | the window's cloud (x, y, z, rgb, label), output frame |
| `instances` | iggt_ros/InstanceArray | every instance of the map, whatever its state |
| `detections` | vision_msgs/Detection3DArray | the instances that are not lost (id = instance ID) |
| `markers` | visualization_msgs/MarkerArray | box + text per instance; DELETE for lost and removed ones |
| `instance_image/<camera>` | sensor_msgs/Image 16UC1 | instance IDs of one view, 0 = none |
| `instance_image/<camera>/colorized` | sensor_msgs/Image rgb8 | the same IDs in the stable palette |
| `depth/<camera>` | sensor_msgs/Image 32FC1 | depth in metres (output-frame units), NaN = unknown |
| `/tf` (absolute; off by default) | tf2_msgs/TFMessage | output frame -> `iggt/instance_<id>` at each confirmed box |

Decisions users rely on:

* World outputs (points, instances, detections, markers) carry the window's stamp (its newest
  frame) and output frame (the TF world frame, or the fallback frame without TF).
* Per-view images carry the source image's header (camera optical frame, image stamp) and are
  published once per view: only for the views a window adds (`ViewInfo.new`), so consecutive
  overlapping windows never publish two images with the same stamp on one topic.
* Per-view images are resized (nearest neighbour: IDs are never blended) from the model's
  resolution to the source image's resolution, so the camera's own CameraInfo describes them
  exactly and they overlay the camera image pixel for pixel. When the caller does not know a
  camera's source size they stay at the model resolution (logged once per camera).
* Marker DELETEs: an instance that was published and is gone from the map (forgotten, merged
  into another, or dropped by a reset) gets a DELETE in both marker namespaces in the next
  array, once; lost instances get a DELETE in every array while they stay lost. The adapter keeps
  the set of published marker IDs for this, so use one adapter per output stream.
* Publish flags are read from `PublishConfig` on every call, so flags changed at run time apply
  to the next window.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from iggt_ros.config import PublishConfig
from iggt_ros.engine.preprocess import resize_nearest
from iggt_ros.messages import convention as C
from iggt_ros.messages import layouts as L
from iggt_ros.messages.message import Header, MessageData
from iggt_ros.perception.pipeline import WindowResult
from iggt_ros.perception.records import STATE_CONFIRMED, InstanceRecord, instance_record
from iggt_ros.spatial import transform_from, yaw_quaternion

log = logging.getLogger(__name__)

DEFAULT_NAMESPACE = "/iggt"

IMAGE_TYPE = "sensor_msgs/msg/Image"
POINTS_TYPE = "sensor_msgs/msg/PointCloud2"
INSTANCES_TYPE = "iggt_ros/msg/InstanceArray"
DETECTIONS_TYPE = "vision_msgs/msg/Detection3DArray"
MARKERS_TYPE = "visualization_msgs/msg/MarkerArray"


@dataclass(frozen=True)
class OutputTopics:
    """Names of the output topics under one namespace."""

    namespace: str = DEFAULT_NAMESPACE

    def _name(self, rel: str) -> str:
        ns = self.namespace.rstrip("/")
        return f"{ns}/{rel}" if ns else rel

    @property
    def points(self) -> str:
        return self._name("points")

    @property
    def instances(self) -> str:
        return self._name("instances")

    @property
    def detections(self) -> str:
        return self._name("detections")

    @property
    def markers(self) -> str:
        return self._name("markers")

    def instance_image(self, camera: str) -> str:
        return self._name(f"instance_image/{camera.strip('/')}")

    def colorized_instance_image(self, camera: str) -> str:
        return self._name(f"instance_image/{camera.strip('/')}/colorized")

    def depth(self, camera: str) -> str:
        return self._name(f"depth/{camera.strip('/')}")

    def all_topics(self, cameras: Sequence[str], publish: PublishConfig | None = None) -> dict[str, str]:
        """topic -> message type of every topic `publish` enables (all of them when None)."""
        p = publish
        topics: dict[str, str] = {}
        if p is None or p.points:
            topics[self.points] = POINTS_TYPE
        topics[self.instances] = INSTANCES_TYPE
        if p is None or p.detections:
            topics[self.detections] = DETECTIONS_TYPE
        if p is None or p.markers:
            topics[self.markers] = MARKERS_TYPE
        if p is None or p.instance_frames:
            topics[C.TF_TOPIC] = TF_TYPE
        for cam in cameras:
            if p is None or p.instance_images:
                topics[self.instance_image(cam)] = IMAGE_TYPE
            if p is None or p.colorized_instance_images:
                topics[self.colorized_instance_image(cam)] = IMAGE_TYPE
            if p is None or p.depth:
                topics[self.depth(cam)] = IMAGE_TYPE
        return topics


TF_TYPE = "tf2_msgs/msg/TFMessage"
INSTANCE_FRAME_PREFIX = "iggt/instance_"


def instance_frames(header: Header, rows: Sequence[InstanceRecord]) -> MessageData:
    """/tf transforms header.frame_id -> iggt/instance_<id> at the box (centre, yaw) of each confirmed instance."""
    transforms = [L.TransformData(header.frame_id, f"{INSTANCE_FRAME_PREFIX}{int(r.id)}", header.stamp_ns,
                                  transform_from(r.box_center, yaw_quaternion(r.box_yaw)))
                  for r in rows if int(r.state) == STATE_CONFIRMED]
    return L.tf_message(transforms)


@dataclass
class OutputMessage:
    """One message to publish or record: its topic, its layout data and its header stamp."""

    topic: str
    data: MessageData
    stamp_ns: int


class OutputAdapter:
    """`WindowResult` -> output messages, with the little state marker DELETEs need.

    publish: the flags to honour (read on every call; the same object may be changed at run time).
    topics: the names, under a namespace.
    """

    def __init__(self, publish: PublishConfig | None = None, topics: OutputTopics | None = None) -> None:
        self.publish = publish if publish is not None else PublishConfig()
        self.topics = topics if topics is not None else OutputTopics()
        self._marker_ids: set[int] = set()
        self._unsized: set[str] = set()

    def messages(self, result: WindowResult, source_sizes: Mapping[str, tuple[int, int]] | None = None,
                 removed_ids: Iterable[int] = ()) -> list[OutputMessage]:
        """Every enabled output of one window, world outputs first, then per-view images.

        source_sizes: camera -> (height, width) of its source images; per-view images are resized to
        it. removed_ids: instance IDs known to be gone since the last window, in addition to the
        ones the adapter notices itself (published earlier, absent now).
        """
        p = self.publish
        header = Header(int(result.stamp_ns), result.frame_id)
        rows = [instance_record(inst) for inst in result.instances]
        out: list[OutputMessage] = []
        if p.points:
            out.append(OutputMessage(self.topics.points, L.point_cloud(header, result.cloud), header.stamp_ns))
        out.append(OutputMessage(self.topics.instances, L.instance_array(header, rows), header.stamp_ns))
        if p.detections:
            out.append(OutputMessage(self.topics.detections, L.detection3d_array(header, rows), header.stamp_ns))
        if p.markers:
            current = {r.id for r in rows}
            gone = (self._marker_ids - current) | (set(int(i) for i in removed_ids) - current)
            out.append(OutputMessage(self.topics.markers, L.marker_array(header, rows, sorted(gone)),
                                     header.stamp_ns))
            self._marker_ids = {r.id for r in rows if r.state != L.STATE_LOST}
        if p.instance_frames:
            frames = instance_frames(header, rows)
            if frames.fields["transforms"]:
                out.append(OutputMessage(C.TF_TOPIC, frames, header.stamp_ns))
        if p.instance_images or p.colorized_instance_images or p.depth:
            out.extend(self._view_messages(result, source_sizes or {}))
        return out

    def _view_messages(self, result: WindowResult, sizes: Mapping[str, tuple[int, int]]) -> list[OutputMessage]:
        p = self.publish
        out: list[OutputMessage] = []
        for i, view in enumerate(result.views):
            if not view.new:
                continue
            header = Header(int(view.stamp_ns), view.frame_id)
            size = sizes.get(view.camera)
            if size is None:
                size = tuple(result.instance_images.shape[1:3])
                if view.camera not in self._unsized:
                    self._unsized.add(view.camera)
                    log.warning("source image size of camera '%s' unknown: its instance and depth images are "
                                "published at the model resolution %dx%d, which its CameraInfo does not describe",
                                view.camera, size[1], size[0])
            if p.instance_images or p.colorized_instance_images:
                ids = resize_nearest(result.instance_images[i], size)
                if p.instance_images:
                    out.append(OutputMessage(self.topics.instance_image(view.camera), L.instance_image(header, ids),
                                             header.stamp_ns))
                if p.colorized_instance_images:
                    out.append(OutputMessage(self.topics.colorized_instance_image(view.camera),
                                             L.colorized_instance_image(header, ids), header.stamp_ns))
            if p.depth:
                depth = resize_nearest(result.depth[i], size)
                out.append(OutputMessage(self.topics.depth(view.camera), L.depth_image(header, depth),
                                         header.stamp_ns))
        return out
