"""Which path each input of the node takes: image decoding, camera synchronisation and TF.

Each is chosen once per configure and said once in the log (and on /diagnostics):

* images: cv_bridge when it imports, else the package's numpy decoder (`camera_input`);
* synchronisation: message_filters' ApproximateTimeSynchronizer when it imports (images are decoded
  once a synchronised set forms), else one subscription per camera feeding the perception core's
  own synchroniser (`Pipeline.add_frame`). On both, the stamp rule runs per camera before the
  synchroniser, and a dropped image leaves its place (`MissingFrame`, or `MissingMessage` in
  message_filters' queues), so its time step forms with the other cameras instead of being lost;
  an image that cannot be decoded once its set formed is left out of that set alone;
* TF: tf2_ros when it imports (plus a light /tf subscription of our own to measure its lag), else
  the package's `TransformBuffer` on /tf and /tf_static, else none (outputs stay in the fallback frame).

Both paths end in the same core calls with the same `CameraFrame`s (`camera_input.CameraInputs`
applies the core's camera-frame rule), so a node on a ROS installation and one without it publish
the same outputs.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

from iggt_ros.config import IggtConfig
from iggt_ros.messages.message import stamp_ns
from iggt_ros.messages.outputs import INSTANCE_FRAME_PREFIX
from iggt_ros.messages.tf_buffer import TransformBuffer
from iggt_ros.perception.frames import CameraFrame, FrameSet, MissingFrame
from iggt_ros.perception.input_checks import InputProblem, problem
from iggt_ros.ros.camera_input import CameraInputs, PoseSource, make_image_decoder
from iggt_ros.ros.tf_health import TfHealth, transport_warning
from iggt_ros.spatial import transform_from

TF_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
TF_STATIC_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                           durability=DurabilityPolicy.TRANSIENT_LOCAL)

SetInfo = Callable[[str, str], None]
"""(key, value): a fact shown with every diagnostics report (which path is active)."""


def input_qos(name: str) -> QoSProfile:
    """The subscription profile of `input.qos`."""
    if name == "reliable":
        return QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    return qos_profile_sensor_data


class MissingMessage:
    """A dropped image's place in message_filters' queues: the synchroniser reads only its header stamp,
    matches it like an image, and the set it completes goes on without this camera."""

    def __init__(self, frame: MissingFrame) -> None:
        from builtin_interfaces.msg import Time

        self.frame = frame
        sec, nanosec = divmod(int(frame.stamp_ns), 1_000_000_000)
        self.header = SimpleNamespace(stamp=Time(sec=sec, nanosec=nanosec))


class InputPaths:
    """The node's camera, camera_info and TF subscriptions on the path each can take.

    `on_arrival()` is called for every image as it arrives (before synchronisation, so every image
    counts on both paths); `on_frame(frame)` with each decoded frame (or a dropped image's
    `MissingFrame`) on the fallback path and `on_frameset(frameset)` with each decoded synchronised
    set on the standard path.
    """

    def __init__(self, node: Any, cfg: IggtConfig, *, sensor_group: Any, tf_group: Any, set_info: SetInfo,
                 tf_health: TfHealth | None, on_arrival: Callable[[], None],
                 on_frame: Callable[[CameraFrame | MissingFrame], None],
                 on_frameset: Callable[[FrameSet], None]) -> None:
        self._node = node
        self._cfg = cfg
        self._sensor_group = sensor_group
        self._tf_group = tf_group
        self._set_info = set_info
        self._tf_health = tf_health
        self._on_arrival = on_arrival
        self._on_frame = on_frame
        self._on_frameset = on_frameset
        self._tf_subs: list[Any] = []
        self._input_subs: list[Any] = []
        self._filters: list[Any] = []
        self._synchronizer: Any = None
        self._tf_listener: Any = None
        self.tf_buffer: Any = None
        """tf2_ros.Buffer (standard path), TransformBuffer (fallback) or None (TF off or unavailable)."""
        log = node.get_logger()
        self._report_problem: Callable[[InputProblem], None] = lambda item: None
        self.inputs = CameraInputs(cfg.input.cameras, make_image_decoder(log.info), log.warning, self._pose_source(),
                                   model_hw=(cfg.input.image_height, cfg.input.image_width))
        self._report_problem = self.inputs.report_problem
        transport = transport_warning(len(cfg.input.cameras), cfg.input.image_width, cfg.input.image_height,
                                      os.environ)
        if transport is not None:
            log.warning(f"transport: {transport}")
        set_info("transport", "default Fast DDS segment too small for these images" if transport else "ok")
        set_info("images", self.inputs.decoder.name)

    # ------------------------------------------------------------------ TF
    def _pose_source(self) -> PoseSource | None:
        cfg, node, log = self._cfg, self._node, self._node.get_logger()
        if not cfg.input.use_tf:
            log.info(f"TF: disabled (input.use_tf false); outputs are in '{cfg.input.fallback_frame}'")
            self._set_info("tf", "disabled")
            return None
        try:
            import tf2_ros
        except ImportError:
            tf2_ros = None
        if tf2_ros is not None:
            from rclpy.duration import Duration
            from rclpy.time import Time

            buffer = tf2_ros.Buffer(node=node)
            self._tf_listener = tf2_ros.TransformListener(buffer, node)
            self.tf_buffer = buffer
            timeout = Duration(nanoseconds=int(cfg.input.tf_timeout_s * 1e9))

            def lookup(target: str, source: str, stamp: int) -> np.ndarray:
                t = buffer.lookup_transform(target, source, Time(nanoseconds=stamp), timeout=timeout).transform
                return transform_from((t.translation.x, t.translation.y, t.translation.z),
                                      (t.rotation.x, t.rotation.y, t.rotation.z, t.rotation.w))

            log.info("TF: tf2_ros (standard path)")
            self._set_info("tf", "tf2_ros")
            self._measure_tf_lag()
            return PoseSource(lookup, cfg.input.world_frame, cfg.input.fallback_frame, cfg.input.tf_timeout_s,
                              log.info, waits_itself=True, health=self._tf_health)
        try:
            from tf2_msgs.msg import TFMessage
        except ImportError:
            log.error("TF: neither tf2_ros nor tf2_msgs is installed, so /tf cannot be received; outputs are in "
                      f"'{cfg.input.fallback_frame}'. Install ros-<distro>-tf2-ros (or tf2-msgs) to use TF")
            self._set_info("tf", "unavailable (tf2_ros and tf2_msgs missing)")
            return None
        buffer = TransformBuffer()
        self.tf_buffer = buffer

        def on_tf(msg: Any, static: bool) -> None:
            topic = "/tf_static" if static else "/tf"

            def invalid(exc: Exception, stamp: int) -> None:  # that transform alone is lost, said and counted
                self._report_problem(problem("bad transform", topic, stamp, str(exc),
                                             "Check the node publishing this transform; the other transforms are used"))

            if not static:
                self._record_tf_lag(msg)
            dropped_old = buffer.dropped_old
            buffer.add_message(msg, static=static, on_invalid=invalid)
            if buffer.dropped_old > dropped_old:
                buffer.clear(dynamic_only=True)  # time went back (a looped bag): start over
                buffer.add_message(msg, static=static)

        self._tf_subs = [
            node.create_subscription(TFMessage, "/tf", lambda m: on_tf(m, False), TF_QOS,
                                     callback_group=self._tf_group),
            node.create_subscription(TFMessage, "/tf_static", lambda m: on_tf(m, True), TF_STATIC_QOS,
                                     callback_group=self._tf_group),
        ]
        log.info("TF: tf2_ros is not installed; using the package's TF buffer on /tf and /tf_static (fallback path)")
        self._set_info("tf", "TransformBuffer (fallback)")
        return PoseSource(buffer.lookup, cfg.input.world_frame, cfg.input.fallback_frame, cfg.input.tf_timeout_s,
                          log.info, health=self._tf_health)

    def _measure_tf_lag(self) -> None:
        """Standard path: tf2_ros keeps /tf to itself, so a light subscription of our own measures its lag."""
        try:
            from tf2_msgs.msg import TFMessage
        except ImportError:
            return
        self._tf_subs.append(self._node.create_subscription(TFMessage, "/tf", self._record_tf_lag, TF_QOS,
                                                            callback_group=self._tf_group))

    def _record_tf_lag(self, msg: Any) -> None:
        """How late a /tf message arrived: now (node clock) minus its newest stamp.

        The node's own instance frames (`publish.instance_frames`) go out on /tf after inference, stamped
        with the window: counted, they would report the pipeline's latency as TF lag.
        """
        health = self._tf_health
        stamps = [stamp_ns(t.header.stamp) for t in msg.transforms
                  if not t.child_frame_id.startswith(INSTANCE_FRAME_PREFIX)]
        if health is None or not stamps:
            return
        newest = max(stamps)
        health.record_message(newest, self._node.get_clock().now().nanoseconds)

    # ------------------------------------------------------------------ cameras
    def subscribe(self) -> None:
        """Subscribe camera_info and the images (activate)."""
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image

        cfg, node, log = self._cfg, self._node, self._node.get_logger()
        qos = input_qos(cfg.input.qos)
        for cam in cfg.input.cameras:
            topic = f"{cam}/camera_info"
            self._input_subs.append(node.create_subscription(
                CameraInfo, topic, lambda m, c=cam, t=topic: self.inputs.set_camera_info(c, m, t), qos,
                callback_group=self._sensor_group))
        topics = [(cam, f"{cam}/image_raw/compressed" if cam in cfg.input.compressed_cameras else f"{cam}/image_raw",
                   cam in cfg.input.compressed_cameras) for cam in cfg.input.cameras]
        try:
            import message_filters
        except ImportError:
            message_filters = None
        if message_filters is not None:
            self._filters = [message_filters.Subscriber(node, CompressedImage if comp else Image, topic,
                                                        qos_profile=qos, callback_group=self._sensor_group)
                             for _, topic, comp in topics]
            admitted = []
            for (cam, topic, _), f in zip(topics, self._filters, strict=True):
                relay = message_filters.SimpleFilter()  # before the synchroniser: every image counts, in a set or not
                f.registerCallback(lambda msg, c=cam, t=topic, r=relay: self._admit(c, t, msg, r))
                admitted.append(relay)
            self._synchronizer = message_filters.ApproximateTimeSynchronizer(
                admitted, cfg.input.sync_queue_size, cfg.input.sync_slop_s)
            self._synchronizer.registerCallback(lambda *msgs: self._synced(topics, msgs))
            log.info("sync: message_filters ApproximateTimeSynchronizer (standard path)")
            self._set_info("sync", "message_filters")
        else:
            for cam, topic, comp in topics:
                self._input_subs.append(node.create_subscription(
                    CompressedImage if comp else Image, topic,
                    lambda m, c=cam, t=topic, z=comp: self._image(c, m, t, z), qos,
                    callback_group=self._sensor_group))
            log.info("sync: message_filters is not installed; using the package's approximate-time synchroniser "
                     "(fallback path)")
            self._set_info("sync", "ApproximateTimeSynchronizer (fallback)")

    def _image(self, camera: str, msg: Any, topic: str, compressed: bool) -> None:
        """Fallback path: one camera's image through the stamp rule, decoded now, for the core's synchroniser."""
        self._on_arrival()
        for frame in self.inputs.frames(camera, msg, topic, compressed):
            self._on_frame(frame)

    def _admit(self, camera: str, topic: str, msg: Any, relay: Any) -> None:
        """Standard path: one image through the stamp rule, on to message_filters with the places of the
        captures it lost, so their time steps still form with the other cameras."""
        self._on_arrival()
        admitted = self.inputs.admit(topic, msg)
        for stamp in admitted.missing_ns:
            relay.signalMessage(MissingMessage(MissingFrame(camera, stamp)))
        for item in admitted.items:
            relay.signalMessage(item)

    def _synced(self, topics: list[tuple[str, str, bool]], msgs: tuple[Any, ...]) -> None:
        """Standard path: a set message_filters synchronised; its images are decoded now, and one that
        cannot be used is left out alone: the set goes on with the other cameras."""
        frames = {}
        for (cam, topic, comp), msg in zip(topics, msgs, strict=True):
            if isinstance(msg, MissingMessage):
                continue
            frame = self.inputs.frame(cam, msg, topic, comp)
            if frame is not None:
                frames[cam] = frame
        if frames:
            self._on_frameset(FrameSet(stamp_ns=next(iter(frames.values())).stamp_ns, frames=frames))

    def unsubscribe(self) -> None:
        """Close the camera and camera_info subscriptions (deactivate)."""
        for sub in self._input_subs:
            self._node.destroy_subscription(sub)
        for f in self._filters:
            self._node.destroy_subscription(f.sub)
        self._input_subs, self._filters, self._synchronizer = [], [], None

    def release(self) -> None:
        """Everything, TF included (cleanup)."""
        self.unsubscribe()
        for sub in self._tf_subs:
            self._node.destroy_subscription(sub)
        self._tf_subs = []
        if self._tf_listener is not None:
            self._tf_listener.unregister()
            self._tf_listener = None
        self.tf_buffer = None
