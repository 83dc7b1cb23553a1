"""The iggt_ros lifecycle node (`ros2 run iggt_ros iggt_node`).

Interface (names relative to the node's namespace; the README lists every topic and field):

- subscribes, per camera of `input.cameras`: `<camera>/image_raw` (sensor_msgs/Image) or, for
  `input.compressed_cameras`, `<camera>/image_raw/compressed` (sensor_msgs/CompressedImage), and
  `<camera>/camera_info`; QoS from `input.qos` (SENSOR_DATA by default). TF from /tf and /tf_static.
- publishes `iggt/points`, `iggt/instances`, `iggt/detections` (when vision_msgs is installed),
  `iggt/markers`, `iggt/instance_image/<camera>` (+ `/colorized`), `iggt/depth/<camera>`, and
  `/diagnostics` ("perception": per-stage latency, window rate, images, drops, engine; "TF": /tf lag
  and camera pose lookup failures). Instance labels come from the query side's region embeddings.
- serves `iggt/query` (iggt_ros/Query) and `iggt/reset` (std_srvs/Trigger) in their own callback
  group, so they answer while a window is being processed.
- parameters: every configuration key under its dotted name (`window.size`, ...) plus
  `config_file`, a parameter file whose values are the defaults of the others. They are declared
  at the first configure and stay declared for the life of the node, so the keys that are fixed
  while configured can be set between cleanup and the next configure (`ros2 param set`).

Lifecycle: configure reads the parameters and loads the engine (a bad value or a missing engine
fails the transition with the reason, and the value can then be corrected); activate subscribes
and starts the inference thread; deactivate unsubscribes and stops it; cleanup releases the engine.

Threading: subscription callbacks decode, synchronise and buffer frames (cheap) and put complete
windows on a bounded queue; one worker thread runs the pipeline and publishes. When inference is
slower than the input, the oldest waiting window is dropped and counted.

Standard and fallback paths: message_filters, cv_bridge and tf2_ros are used when they import (a
ROS installation); otherwise the package's own synchroniser, image decoder and TF buffer, which
behave the same. The node logs once which path each part uses.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np
import rclpy
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.exceptions import ParameterUninitializedException
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleState, TransitionCallbackReturn
from rclpy.lifecycle import Node as LifecycleNode
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

from iggt_ros.bag import layouts as L
from iggt_ros.bag.message import Header, stamp_ns
from iggt_ros.bag.outputs import OutputAdapter, OutputTopics
from iggt_ros.bag.tf_buffer import TransformBuffer
from iggt_ros.config import NODE_NAME, ConfigError, IggtConfig, load_config
from iggt_ros.engine.base import Engine, EngineError
from iggt_ros.perception.engine_setup import create_window_engine
from iggt_ros.perception.frames import FrameSet
from iggt_ros.perception.pipeline import Collected, Pipeline, WindowResult
from iggt_ros.perception.records import instance_record
from iggt_ros.perception.window import Window
from iggt_ros.ros.camera_input import CameraInputs, PoseSource, make_image_decoder
from iggt_ros.ros.convert import to_rclpy
from iggt_ros.ros.param_rules import apply_update, check_update
from iggt_ros.ros.query_side import QuerySide
from iggt_ros.ros.runtime_stats import ERROR, WARN, DiagnosticsReport, RuntimeStats
from iggt_ros.ros.tf_health import TfHealth
from iggt_ros.ros.work_queue import DropOldestQueue
from iggt_ros.ros.worker import InferenceWorker
from iggt_ros.spatial import transform_from

EngineFactory = Callable[[IggtConfig], Engine]

OUTPUT_NAMESPACE = "iggt"
"""Outputs and services live under `iggt/` relative to the node's namespace (`/iggt/...` at the root)."""
OUTPUT_QOS = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
TF_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
TF_STATIC_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                           durability=DurabilityPolicy.TRANSIENT_LOCAL)


def default_engine_factory(config: IggtConfig) -> Engine:
    """The engine `engine.*` describes, created by the core's rule the replay and CLI also use."""
    return create_window_engine(config)


def input_qos(name: str) -> QoSProfile:
    """The subscription profile of `input.qos`."""
    if name == "reliable":
        return QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    return qos_profile_sensor_data


def _parameter_of(name: str, value: Any) -> Parameter:
    """A parameter holding a configuration value (lists as string arrays, also when empty)."""
    if isinstance(value, list):
        return Parameter(name, Parameter.Type.STRING_ARRAY, list(value))
    return Parameter(name, value=value)


def _same(a: Any, b: Any) -> bool:
    """Equal as configuration values (an unset list parameter reads as None and equals [])."""
    if isinstance(a, list) or isinstance(b, list) or a is None or b is None:
        return list(a or []) == list(b or [])
    return a == b and type(a) is type(b)


def _parameter_for(name: str, value: Any) -> tuple[Any, ParameterDescriptor]:
    """Declaration value and descriptor; empty lists get an explicit string-array type."""
    if isinstance(value, list):
        if not value:
            return Parameter.Type.STRING_ARRAY, ParameterDescriptor(name=name)
        return list(value), ParameterDescriptor(name=name)
    return value, ParameterDescriptor(name=name)


class _ForwardToRosLog(logging.Handler):
    """Sends the package's Python log records (pipeline warnings) to the node's ROS logger."""

    def __init__(self, ros_logger: Any) -> None:
        super().__init__(logging.INFO)
        self._ros_logger = ros_logger

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = f"[{record.name}] {record.getMessage()}"
            if record.levelno >= logging.ERROR:
                self._ros_logger.error(text)
            elif record.levelno >= logging.WARNING:
                self._ros_logger.warning(text)
            else:
                self._ros_logger.info(text)
        except Exception:  # logging must never break the caller
            self.handleError(record)


class IggtNode(LifecycleNode):
    """Cameras in; point cloud, instances, instance images, markers, query service out."""

    def __init__(self, node_name: str = NODE_NAME, *, engine_factory: EngineFactory | None = None,
                 **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self._engine_factory = engine_factory or default_engine_factory
        self.declare_parameter("config_file", "", ParameterDescriptor(
            description="YAML parameter file whose values are the defaults of every other parameter ('' = built-in)"))
        self._sensor_group = MutuallyExclusiveCallbackGroup()
        self._service_group = ReentrantCallbackGroup()
        self._tf_group = ReentrantCallbackGroup()
        self._declaring = False
        self._file_values: dict[str, Any] | None = None
        """Flat values of the parameter file read at the last configure (None before the first)."""
        self.config: IggtConfig | None = None
        self.engine: Engine | None = None
        self.pipeline: Pipeline | None = None
        self.queue: DropOldestQueue[Window] | None = None
        self.worker: InferenceWorker | None = None
        self.stats: RuntimeStats | None = None
        self.tf_health: TfHealth | None = None
        self.query_side: QuerySide | None = None
        self.adapter: OutputAdapter | None = None
        self.inputs: CameraInputs | None = None
        self._publishers_by_topic: dict[str, Any] = {}
        self._diag_pub: Any = None
        self._diag_timer: Any = None
        self._iggt_services: list[Any] = []
        self._tf_subs: list[Any] = []
        self._input_subs: list[Any] = []
        self._filters: list[Any] = []
        self._synchronizer: Any = None
        self._tf_listener: Any = None
        self._tf_buffer: Any = None
        self._input_lock = threading.Lock()
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._log_handler = _ForwardToRosLog(self.get_logger())
        package_log = logging.getLogger("iggt_ros")
        package_log.addHandler(self._log_handler)
        if package_log.level == logging.NOTSET:
            package_log.setLevel(logging.INFO)

    def destroy_node(self) -> None:
        logging.getLogger("iggt_ros").removeHandler(self._log_handler)
        super().destroy_node()

    # ================================================================== lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            return self._configure()
        except Exception as exc:  # a bug or an unexpected library error: report it and fail the transition
            self.get_logger().error(f"configure failed: {exc}\n{traceback.format_exc()}")
            self._release()
            return TransitionCallbackReturn.FAILURE

    def _configure(self) -> TransitionCallbackReturn:
        log = self.get_logger()
        try:
            self.config = self._read_config()
        except ConfigError as exc:
            log.error(f"configure failed: {exc}; correct it (ros2 param set) and configure again")
            return TransitionCallbackReturn.FAILURE
        cfg = self.config
        try:
            engine = self._engine_factory(cfg)
        except (EngineError, ConfigError, FileNotFoundError, ImportError, OSError, ValueError) as exc:
            log.error(f"configure failed: engine '{cfg.engine.backend}' could not be loaded: {exc}")
            self._release()
            return TransitionCallbackReturn.FAILURE
        self.engine = engine
        self.pipeline = Pipeline(cfg, engine)
        self.stats = RuntimeStats(getattr(engine, "name", type(engine).__name__))
        self.queue = DropOldestQueue(cfg.window.max_queue)
        self.tf_health = TfHealth(cfg.input.tf_lag_warn_s) if cfg.input.use_tf else None
        self.worker = InferenceWorker(self.pipeline, self.queue, self._publish_result, self.stats)
        self.adapter = OutputAdapter(cfg.publish, OutputTopics(OUTPUT_NAMESPACE))
        self.query_side = QuerySide(cfg.query, log.info, log.error, on_label=self._set_label)
        self.query_side.start()
        self.inputs = CameraInputs(cfg.input.cameras, make_image_decoder(log.info), log.warning,
                                   self._make_pose_source(cfg))
        self.stats.info["images"] = self.inputs.decoder.name
        self._create_outputs(cfg)
        log.info(f"configured: engine '{self.stats.engine}', cameras {cfg.input.cameras}, window "
                 f"{cfg.window.size} steps (stride {cfg.window.stride}), queue {cfg.window.max_queue}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        assert self.config is not None and self.worker is not None
        try:
            self._subscribe_inputs(self.config)
        except Exception as exc:
            self.get_logger().error(f"activate failed: {exc}\n{traceback.format_exc()}")
            self._unsubscribe_inputs()
            return TransitionCallbackReturn.FAILURE
        self.worker.start()
        self.get_logger().info("active: waiting for camera frames")
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._unsubscribe_inputs()
        self._stop_worker()
        self.get_logger().info("inactive: subscriptions closed, inference stopped")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release()
        self.get_logger().info("unconfigured: engine and outputs released")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._unsubscribe_inputs()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.get_logger().error(f"error while in state '{state.label}': releasing everything")
        self._unsubscribe_inputs()
        self._release()
        return TransitionCallbackReturn.SUCCESS

    # ================================================================== parameters
    def _read_config(self) -> IggtConfig:
        """The configuration the parameters hold now; `config_file` gives the values nobody set.

        The first configure declares every key with the file's value (a parameter given to the node
        wins). Later configures read the parameters as they are: a value set between cleanup and
        configure is used, not reloaded from the file. Only when `config_file` names another file
        do its values replace the ones that still hold the previous file's value.
        """
        path = str(self.get_parameter("config_file").value or "")
        file_values = load_config(path or None).to_flat()
        self._declaring = True
        try:
            for key, value in file_values.items():
                if not self.has_parameter(key):
                    declared, descriptor = _parameter_for(key, value)
                    self.declare_parameter(key, declared, descriptor)
                elif self._file_values is not None and not _same(self._file_values.get(key), value) \
                        and _same(self._file_values.get(key), self._parameter_value(key)):
                    self.set_parameters([_parameter_of(key, value)])
        except Exception as exc:  # a parameter override of the wrong type
            raise ConfigError(f"parameter override rejected: {exc}") from exc
        finally:
            self._declaring = False
        self._file_values = file_values
        flat = {key: self._parameter_value(key) for key in file_values}
        if path:
            self.get_logger().info(f"parameters: defaults from '{path}'")
        return IggtConfig.from_flat(flat)

    def _parameter_value(self, key: str) -> Any:
        """A declared parameter's value; None for an empty list (declared with a type but no value)."""
        try:
            return self.get_parameter(key).value
        except ParameterUninitializedException:
            return None

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        if self._declaring or self.config is None:
            return SetParametersResult(successful=True)
        flat = self.config.to_flat()
        changes = {p.name: p.value for p in params if p.name in flat}
        if not changes:
            return SetParametersResult(successful=True)
        update = check_update(self.config, changes)
        if not update.successful:
            self.get_logger().warning(f"parameter change refused: {update.reason}")
            return SetParametersResult(successful=False, reason=update.reason)
        apply_update(self.config, update)
        if update.applied:
            self.get_logger().info(f"parameters changed: {update.applied}")
        return SetParametersResult(successful=True)

    # ================================================================== outputs and services
    def _create_outputs(self, cfg: IggtConfig) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from std_srvs.srv import Trigger

        from iggt_ros.ros.convert import message_class
        from iggt_ros.srv import Query

        assert self.adapter is not None
        log = self.get_logger()
        for topic, typename in self.adapter.topics.all_topics(cfg.input.cameras).items():
            try:
                cls = message_class(typename)
            except ImportError:
                log.warning(f"'{topic}' is not published: {typename.split('/')[0]} is not installed")
                continue
            self._publishers_by_topic[topic] = self.create_lifecycle_publisher(cls, topic, OUTPUT_QOS)
        self._diag_pub = self.create_lifecycle_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_timer = self.create_timer(cfg.publish.diagnostics_period_s, self._publish_diagnostics,
                                             callback_group=self._service_group)
        self._iggt_services = [
            self.create_service(Query, f"{OUTPUT_NAMESPACE}/query", self._on_query,
                                callback_group=self._service_group),
            self.create_service(Trigger, f"{OUTPUT_NAMESPACE}/reset", self._on_reset,
                                callback_group=self._service_group),
        ]

    def _publish_result(self, result: WindowResult, window: Window) -> dict[str, float]:
        """Runs on the worker thread: every enabled output of one window."""
        assert self.adapter is not None and self.query_side is not None
        t0 = time.perf_counter()
        sizes = {f.camera: tuple(np.shape(f.image)[:2]) for f in window.frames()}
        result.instances = self.query_side.annotate(result.instances)  # unlabelled ones say why
        for message in self.adapter.messages(result, sizes):
            pub = self._publishers_by_topic.get(message.topic)
            if pub is not None:
                pub.publish(to_rclpy(message.data))
        publish_ms = (time.perf_counter() - t0) * 1e3
        self.query_side.observe(result)
        return {"publish": publish_ms}

    def _set_label(self, instance_id: int, label: str, score: float) -> None:
        """From the query side's embedder thread: a label for the map (published with the next window)."""
        pipeline = self.pipeline
        if pipeline is not None:
            pipeline.object_map.set_label(instance_id, label, score)

    def _publish_diagnostics(self) -> None:
        from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

        if self.stats is None or self.queue is None or self._diag_pub is None:
            return
        def status(name: str, report: DiagnosticsReport) -> DiagnosticStatus:
            level = {WARN: DiagnosticStatus.WARN, ERROR: DiagnosticStatus.ERROR}.get(report.level,
                                                                                     DiagnosticStatus.OK)
            return DiagnosticStatus(level=level, name=f"{self.get_name()}: {name}", message=report.message,
                                    hardware_id=self.stats.engine,
                                    values=[KeyValue(key=k, value=v) for k, v in report.values.items()])

        statuses = [status("perception", self.stats.report(self.queue.stats()))]
        if self.tf_health is not None and self.config is not None:
            statuses.append(status("TF", self.tf_health.report(self.config.input.fallback_frame)))
        msg = DiagnosticArray(status=statuses)
        msg.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(msg)

    def _on_query(self, request: Any, response: Any) -> Any:
        if self.pipeline is None or self.query_side is None:
            response.success = False
            response.message = "the node is not configured"
            return response
        snapshot = self.pipeline.snapshot()
        result = self.query_side.answer(request.text, snapshot, request.max_results, request.min_score)
        header = Header(int(snapshot.stamp_ns), result.frame_id or snapshot.frame_id)
        by_id = {int(i.id): i for i in snapshot.instances}
        rows = [instance_record(by_id[r.id]) for r in result.instances if r.id in by_id]
        response.success = bool(result.success)
        response.message = result.message
        response.instances = to_rclpy(L.instance_array(header, rows)).instances
        response.scores = [float(s) for r, s in zip(result.instances, result.scores, strict=True) if r.id in by_id]
        return response

    def _on_reset(self, request: Any, response: Any) -> Any:
        if self.pipeline is None or self.worker is None:
            response.success = False
            response.message = "the node is not configured"
            return response
        with self._input_lock:
            self.pipeline.reset("requested on the reset service")
            dropped = self.worker.discard_pending()
        if self.query_side is not None:
            self.query_side.reset()
        response.success = True
        response.message = (f"map, tracks and instance IDs cleared; {dropped} queued windows discarded"
                            + ("; the window in progress is discarded" if self.worker.busy else ""))
        return response

    # ================================================================== inputs
    def _make_pose_source(self, cfg: IggtConfig) -> PoseSource | None:
        log = self.get_logger()
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

            buffer = tf2_ros.Buffer(node=self)
            self._tf_listener = tf2_ros.TransformListener(buffer, self)
            self._tf_buffer = buffer
            timeout = Duration(nanoseconds=int(cfg.input.tf_timeout_s * 1e9))

            def lookup(target: str, source: str, stamp: int) -> np.ndarray:
                t = buffer.lookup_transform(target, source, Time(nanoseconds=stamp), timeout=timeout).transform
                return transform_from((t.translation.x, t.translation.y, t.translation.z),
                                      (t.rotation.x, t.rotation.y, t.rotation.z, t.rotation.w))

            log.info("TF: tf2_ros (standard path)")
            self._set_info("tf", "tf2_ros")
            self._measure_tf_lag()
            return PoseSource(lookup, cfg.input.world_frame, cfg.input.fallback_frame, cfg.input.tf_timeout_s,
                              log.info, waits_itself=True, health=self.tf_health)
        try:
            from tf2_msgs.msg import TFMessage
        except ImportError:
            log.error("TF: neither tf2_ros nor tf2_msgs is installed, so /tf cannot be received; outputs are in "
                      f"'{cfg.input.fallback_frame}'. Install ros-<distro>-tf2-ros (or tf2-msgs) to use TF")
            self._set_info("tf", "unavailable (tf2_ros and tf2_msgs missing)")
            return None
        buffer = TransformBuffer()
        self._tf_buffer = buffer

        def on_tf(msg: Any, static: bool) -> None:
            if not static:
                self._record_tf_lag(msg)
            if buffer.add_message(msg, static=static) < len(msg.transforms):
                buffer.clear(dynamic_only=True)  # time went back (a looped bag): start over
                buffer.add_message(msg, static=static)

        self._tf_subs = [
            self.create_subscription(TFMessage, "/tf", lambda m: on_tf(m, False), TF_QOS,
                                     callback_group=self._tf_group),
            self.create_subscription(TFMessage, "/tf_static", lambda m: on_tf(m, True), TF_STATIC_QOS,
                                     callback_group=self._tf_group),
        ]
        log.info("TF: tf2_ros is not installed; using the package's TF buffer on /tf and /tf_static (fallback path)")
        self._set_info("tf", "TransformBuffer (fallback)")
        return PoseSource(buffer.lookup, cfg.input.world_frame, cfg.input.fallback_frame, cfg.input.tf_timeout_s,
                          log.info, health=self.tf_health)

    def _measure_tf_lag(self) -> None:
        """Standard path: tf2_ros keeps /tf to itself, so a light subscription of our own measures its lag."""
        try:
            from tf2_msgs.msg import TFMessage
        except ImportError:
            return
        self._tf_subs.append(self.create_subscription(TFMessage, "/tf", self._record_tf_lag, TF_QOS,
                                                      callback_group=self._tf_group))

    def _record_tf_lag(self, msg: Any) -> None:
        """How late a /tf message arrived: now (node clock) minus its newest stamp."""
        health = self.tf_health
        if health is None or not msg.transforms:
            return
        newest = max(stamp_ns(t.header.stamp) for t in msg.transforms)
        health.record_message(newest, self.get_clock().now().nanoseconds)

    def _set_info(self, key: str, value: str) -> None:
        """A fact shown with every diagnostics report (which path is active)."""
        if self.stats is not None:
            self.stats.info[key] = value

    def _subscribe_inputs(self, cfg: IggtConfig) -> None:
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image

        log = self.get_logger()
        qos = input_qos(cfg.input.qos)
        for cam in cfg.input.cameras:
            topic = f"{cam}/camera_info"
            self._input_subs.append(self.create_subscription(
                CameraInfo, topic, lambda m, c=cam, t=topic: self._on_camera_info(c, m, t), qos,
                callback_group=self._sensor_group))
        topics = [(cam, f"{cam}/image_raw/compressed" if cam in cfg.input.compressed_cameras else f"{cam}/image_raw",
                   cam in cfg.input.compressed_cameras) for cam in cfg.input.cameras]
        try:
            import message_filters
        except ImportError:
            message_filters = None
        if message_filters is not None:
            self._filters = [message_filters.Subscriber(self, CompressedImage if comp else Image, topic,
                                                        qos_profile=qos, callback_group=self._sensor_group)
                             for _, topic, comp in topics]
            for f in self._filters:  # before the synchroniser: every image counts, in a set or not
                f.registerCallback(self._on_image_arrived)
            self._synchronizer = message_filters.ApproximateTimeSynchronizer(
                self._filters, cfg.input.sync_queue_size, cfg.input.sync_slop_s)
            self._synchronizer.registerCallback(lambda *msgs: self._on_synced_images(topics, msgs))
            log.info("sync: message_filters ApproximateTimeSynchronizer (standard path)")
            self._set_info("sync", "message_filters")
        else:
            for cam, topic, comp in topics:
                self._input_subs.append(self.create_subscription(
                    CompressedImage if comp else Image, topic,
                    lambda m, c=cam, t=topic, z=comp: self._on_image(c, m, t, z), qos,
                    callback_group=self._sensor_group))
            log.info("sync: message_filters is not installed; using the package's approximate-time synchroniser "
                     "(fallback path)")
            self._set_info("sync", "ApproximateTimeSynchronizer (fallback)")

    def _unsubscribe_inputs(self) -> None:
        for sub in self._input_subs:
            self.destroy_subscription(sub)
        for f in self._filters:
            self.destroy_subscription(f.sub)
        self._input_subs, self._filters, self._synchronizer = [], [], None

    def _on_camera_info(self, camera: str, msg: Any, topic: str) -> None:
        if self.inputs is not None:
            self.inputs.set_camera_info(camera, msg, topic)

    def _on_image(self, camera: str, msg: Any, topic: str, compressed: bool) -> None:
        """Fallback path: one camera's image through the package's synchroniser."""
        if self.inputs is None or self.pipeline is None or self.stats is None:
            return
        self.stats.record_frame()
        frame = self.inputs.frame(camera, msg, topic, compressed)
        if frame is None:
            return
        with self._input_lock:
            self._collect(self.pipeline.add_frame(frame))

    def _on_image_arrived(self, msg: Any) -> None:
        """Standard path: counts an image as it arrives (message_filters hands over only complete sets)."""
        if self.stats is not None:
            self.stats.record_frame()

    def _on_synced_images(self, topics: list[tuple[str, str, bool]], msgs: tuple[Any, ...]) -> None:
        """Standard path: a set message_filters synchronised; its images are decoded now."""
        if self.inputs is None or self.stats is None:
            return
        frames = {}
        for (cam, topic, comp), msg in zip(topics, msgs, strict=True):
            frame = self.inputs.frame(cam, msg, topic, comp)
            if frame is None:
                return
            frames[cam] = frame
        stamp = frames[topics[0][0]].stamp_ns
        with self._input_lock:
            self._collect(self.pipeline.collect(FrameSet(stamp_ns=stamp, frames=frames)))

    def _collect(self, collected: Collected) -> None:
        """What the core made of an input: a completed window goes on the queue (caller holds the input lock)."""
        assert self.pipeline is not None and self.queue is not None and self.worker is not None
        if collected.frameset is None:
            return
        self.stats.record_frame_set()
        if collected.reset:  # time went backwards: windows of the old sequence are stale
            self.worker.discard_pending()
            if self.query_side is not None:
                self.query_side.reset()
        window = collected.window
        if window is not None:
            dropped = self.queue.put(window)
            if dropped is not None:
                self.get_logger().warning(
                    f"inference is slower than the input: window {dropped.index} dropped "
                    f"({self.queue.stats().dropped} so far)", throttle_duration_sec=5.0)

    # ================================================================== teardown
    def _stop_worker(self) -> None:
        if self.worker is not None and not self.worker.stop():
            self.get_logger().warning("the inference thread did not stop within 30 s")
        if self.queue is not None:
            self.queue.clear()

    def _release(self) -> None:
        self._stop_worker()
        for pub in self._publishers_by_topic.values():
            self.destroy_lifecycle_publisher(pub)
        self._publishers_by_topic = {}
        if self._diag_pub is not None:
            self.destroy_lifecycle_publisher(self._diag_pub)
            self._diag_pub = None
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = None
        for srv in self._iggt_services:
            self.destroy_service(srv)
        self._iggt_services = []
        for sub in self._tf_subs:
            self.destroy_subscription(sub)
        self._tf_subs = []
        if self._tf_listener is not None:
            self._tf_listener.unregister()
            self._tf_listener = None
        self._tf_buffer = None
        if self.query_side is not None:
            self.query_side.stop()
        if self.engine is not None:
            self.engine.close()
        self.engine = self.pipeline = self.queue = self.worker = self.stats = self.tf_health = None
        self.query_side = self.adapter = self.inputs = None
        self.config = None  # the parameters stay declared: fixed keys are set between cleanup and configure


def main(args: list[str] | None = None) -> int:
    """Run the node on a multi-threaded executor until interrupted (configure/activate via lifecycle)."""
    rclpy.init(args=args)
    node = IggtNode()
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        try:
            node.trigger_shutdown()  # releases subscriptions, the worker and the engine in any primary state
        except Exception as exc:  # already finalized, or the context is gone after an external shutdown
            node.get_logger().debug(f"shutdown transition skipped: {exc}")
        executor.shutdown()
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0
