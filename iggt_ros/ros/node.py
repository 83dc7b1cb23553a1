"""The iggt_ros lifecycle node (`ros2 run iggt_ros iggt_node`).

Interface (names relative to the node's namespace; the README lists every topic and field):

- subscribes, per camera of `input.cameras`: `<camera>/image_raw` (sensor_msgs/Image) or, for
  `input.compressed_cameras`, `<camera>/image_raw/compressed` (sensor_msgs/CompressedImage), and
  `<camera>/camera_info`; QoS from `input.qos` (SENSOR_DATA by default). TF from /tf and /tf_static.
- publishes `iggt/points`, `iggt/instances`, `iggt/detections` (when vision_msgs is installed),
  `iggt/markers`, `iggt/instance_image/<camera>` (+ `/colorized`), `iggt/depth/<camera>`, and
  `/diagnostics` ("perception": per-stage latency, window rate, images, drops, engine; "TF": /tf lag
  and camera pose lookup failures). Instance labels come from the query side's region embeddings.
- serves `iggt/query` (iggt_ros/Query), `iggt/reset` (std_srvs/Trigger), `iggt/save_map`
  (iggt_ros/SaveMap) and `iggt/load_map` (iggt_ros/LoadMap) in their own callback group, so they
  answer while a window is being processed (a save waits for the window in progress). Maps are
  named, never given as paths (`map_services`); `mapping.map_file` loads one at configure time.
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
behave the same (`input_paths`). The node logs once which path each part uses.

Everything between the inputs and the outputs is the perception core (`Pipeline`): the node
hands it frames (`add_frame` / `collect`), queues the windows it completes, and publishes what
`process_window` returns; the rosbag replay drives the same calls.
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
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleState, TransitionCallbackReturn
from rclpy.lifecycle import Node as LifecycleNode
from rclpy.qos import QoSProfile, ReliabilityPolicy

from iggt_ros import threads
from iggt_ros.config import NODE_NAME, ConfigError, IggtConfig
from iggt_ros.engine.base import Engine, EngineError
from iggt_ros.messages.outputs import OutputAdapter, OutputTopics
from iggt_ros.perception.engine_setup import create_window_engine
from iggt_ros.perception.frames import CameraFrame, FrameSet, MissingFrame
from iggt_ros.perception.pipeline import Collected, Pipeline, WindowResult
from iggt_ros.perception.window import Window
from iggt_ros.ros.camera_input import CameraInputs
from iggt_ros.ros.collision_objects import CollisionObjectPublisher
from iggt_ros.ros.convert import to_rclpy
from iggt_ros.ros.diagnostics import diagnostic_array
from iggt_ros.ros.input_paths import InputPaths
from iggt_ros.ros.map_services import load_map, map_report, save_map
from iggt_ros.ros.parameters import NodeParameters
from iggt_ros.ros.query_side import QuerySide
from iggt_ros.ros.ros_log import ForwardToRosLog
from iggt_ros.ros.runtime_stats import RuntimeStats
from iggt_ros.ros.tf_health import TfHealth
from iggt_ros.ros.work_queue import DropOldestQueue
from iggt_ros.ros.worker import InferenceWorker

EngineFactory = Callable[[IggtConfig], Engine]

OUTPUT_NAMESPACE = "iggt"
"""Outputs and services live under `iggt/` relative to the node's namespace (`/iggt/...` at the root)."""
OUTPUT_QOS = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)


def default_engine_factory(config: IggtConfig) -> Engine:
    """The engine `engine.*` describes, created by the core's rule the replay and CLI also use."""
    return create_window_engine(config)


class IggtNode(LifecycleNode):
    """Cameras in; point cloud, instances, instance images, markers, query service out."""

    def __init__(self, node_name: str = NODE_NAME, *, engine_factory: EngineFactory | None = None,
                 **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self._engine_factory = engine_factory or default_engine_factory
        self.parameters = NodeParameters(self)
        self._sensor_group = MutuallyExclusiveCallbackGroup()
        self._service_group = ReentrantCallbackGroup()
        self._tf_group = ReentrantCallbackGroup()
        self.config: IggtConfig | None = None
        self.engine: Engine | None = None
        self.pipeline: Pipeline | None = None
        self.queue: DropOldestQueue[Window] | None = None
        self.worker: InferenceWorker | None = None
        self.stats: RuntimeStats | None = None
        self.tf_health: TfHealth | None = None
        self.query_side: QuerySide | None = None
        self.adapter: OutputAdapter | None = None
        self.paths: InputPaths | None = None
        self.inputs: CameraInputs | None = None
        self._publishers_by_topic: dict[str, Any] = {}
        self._diag_pub: Any = None
        self._diag_timer: Any = None
        self._iggt_services: list[Any] = []
        self.collision_objects: CollisionObjectPublisher | None = None
        self._input_lock = threading.Lock()
        self.add_on_set_parameters_callback(lambda params: self.parameters.on_set(params, self.config))
        guard_lifecycle_requests(self)
        self._log_handler = ForwardToRosLog(self.get_logger())
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
        started = time.monotonic()
        try:
            self.config = self.parameters.read_config()
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
        if cfg.mapping.map_file:
            loaded = load_map(self.pipeline, cfg.mapping, cfg.mapping.map_file)
            if not loaded.success:
                log.error(f"configure failed: mapping.map_file: {loaded.message}")
                self._release()
                return TransitionCallbackReturn.FAILURE
            log.info(f"mapping.map_file: {loaded.message}")
        self.stats = RuntimeStats(getattr(engine, "name", type(engine).__name__), started=started)
        self.queue = DropOldestQueue(cfg.window.max_queue)
        self.tf_health = TfHealth(cfg.input.tf_lag_warn_s) if cfg.input.use_tf else None
        self.worker = InferenceWorker(self.pipeline, self.queue, self._publish_result, self.stats)
        self.adapter = OutputAdapter(cfg.publish, OutputTopics(OUTPUT_NAMESPACE))
        self.query_side = QuerySide(cfg.query, log.info, log.error, on_label=self._set_label)
        self.query_side.start()
        self.paths = InputPaths(self, cfg, sensor_group=self._sensor_group, tf_group=self._tf_group,
                                set_info=self._set_info, tf_health=self.tf_health, on_arrival=self.stats.record_frame,
                                on_frame=self._on_frame, on_frameset=self._on_frameset)
        self.inputs = self.paths.inputs
        self._create_outputs(cfg)
        log.info(f"configured: engine '{self.stats.engine}', cameras {cfg.input.cameras}, window "
                 f"{cfg.window.size} steps (stride {cfg.window.stride}), queue {cfg.window.max_queue}")
        log.info(threads.describe(cfg.threads))
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        assert self.paths is not None and self.worker is not None
        try:
            self.paths.subscribe()
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

    # ================================================================== outputs and services
    def _create_outputs(self, cfg: IggtConfig) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from std_srvs.srv import Trigger

        from iggt_ros.ros.convert import message_class
        from iggt_ros.srv import LoadMap, Query, SaveMap

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
        self.collision_objects = CollisionObjectPublisher(self, cfg.publish)
        self._diag_timer = self.create_timer(cfg.publish.diagnostics_period_s, self._publish_diagnostics,
                                             callback_group=self._service_group)
        self._iggt_services = [
            self.create_service(Query, f"{OUTPUT_NAMESPACE}/query", self._on_query,
                                callback_group=self._service_group),
            self.create_service(Trigger, f"{OUTPUT_NAMESPACE}/reset", self._on_reset,
                                callback_group=self._service_group),
            self.create_service(SaveMap, f"{OUTPUT_NAMESPACE}/save_map", self._on_save_map,
                                callback_group=self._service_group),
            self.create_service(LoadMap, f"{OUTPUT_NAMESPACE}/load_map", self._on_load_map,
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
        if self.collision_objects is not None:
            self.collision_objects.publish_window(result.stamp_ns, result.frame_id, result.instances)
        publish_ms = (time.perf_counter() - t0) * 1e3
        self.query_side.observe(result)
        return {"publish": publish_ms}

    def _set_label(self, instance_id: int, label: str, score: float) -> None:
        """From the query side's embedder thread: a label for the map (published with the next window)."""
        pipeline = self.pipeline
        if pipeline is not None:
            pipeline.set_label(instance_id, label, score)

    def _publish_diagnostics(self) -> None:
        if self.stats is None or self.queue is None or self._diag_pub is None or self.config is None:
            return
        reports = {"perception": self.stats.report(self.queue.stats())}
        if self.tf_health is not None:
            reports["TF"] = self.tf_health.report(self.config.input.fallback_frame)
        if self.pipeline is not None:
            reports["map"] = map_report(self.pipeline.map_size(), self.config.mapping)
        if self.inputs is not None:
            reports["inputs"] = self.inputs.report()
        self._diag_pub.publish(diagnostic_array(self.get_name(), self.stats.engine, reports,
                                                self.get_clock().now().to_msg()))

    def _on_query(self, request: Any, response: Any) -> Any:
        if self.pipeline is None or self.query_side is None:
            response.success = False
            response.message = "the node is not configured"
            return response
        from iggt_ros.ros.query_side import tf_lookup

        lookup = tf_lookup(self.paths.tf_buffer) if self.paths is not None else None
        answer = self.query_side.respond(request.text, self.pipeline.snapshot(), request.max_results,
                                         request.min_score, getattr(request, "target_frame", ""), lookup)
        response.success, response.message, response.scores = answer.success, answer.message, answer.scores
        response.instances = to_rclpy(answer.instances).instances
        if hasattr(response, "understood"):
            response.understood = answer.understood
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
        if self.collision_objects is not None:
            self.collision_objects.reset()
        response.success = True
        response.message = (f"map, tracks and instance IDs cleared; {dropped} queued windows discarded"
                            + ("; the window in progress is discarded" if self.worker.busy else ""))
        return response

    def _on_save_map(self, request: Any, response: Any) -> Any:
        if self.pipeline is None or self.config is None:
            response.success, response.message = False, "the node is not configured"
            return response
        reply = save_map(self.pipeline, self.config.mapping, request.name)
        response.success, response.message = reply.success, reply.message
        return response

    def _on_load_map(self, request: Any, response: Any) -> Any:
        if self.pipeline is None or self.config is None or self.worker is None:
            response.success, response.message = False, "the node is not configured"
            return response

        def drop_old_windows() -> None:  # windows of the old map, as on a reset
            self.worker.discard_pending()
            if self.query_side is not None:
                self.query_side.reset()

        with self._input_lock:
            reply = load_map(self.pipeline, self.config.mapping, request.name, before_swap=drop_old_windows)
        response.success, response.message = reply.success, reply.message
        return response

    # ================================================================== inputs
    def _set_info(self, key: str, value: str) -> None:
        """A fact shown with every diagnostics report (which path is active)."""
        if self.stats is not None:
            self.stats.info[key] = value

    def _on_frame(self, frame: CameraFrame | MissingFrame) -> None:
        """Fallback path: one decoded camera frame (or a bad one's place) for the core's synchroniser."""
        if self.pipeline is not None:
            with self._input_lock:
                self._collect(self.pipeline.add_frame(frame))

    def _on_frameset(self, frameset: FrameSet) -> None:
        """Standard path: a set message_filters synchronised, decoded."""
        if self.pipeline is not None:
            with self._input_lock:
                self._collect(self.pipeline.collect(frameset))

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
    def _unsubscribe_inputs(self) -> None:
        if self.paths is not None:
            self.paths.unsubscribe()

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
        if self.collision_objects is not None:
            self.collision_objects.release()
            self.collision_objects = None
        if self._diag_pub is not None:
            self.destroy_lifecycle_publisher(self._diag_pub)
            self._diag_pub = None
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = None
        for srv in self._iggt_services:
            self.destroy_service(srv)
        self._iggt_services = []
        if self.paths is not None:
            self.paths.release()
        if self.query_side is not None:
            self.query_side.stop()
        if self.engine is not None:
            self.engine.close()
        self.engine = self.pipeline = self.queue = self.worker = self.stats = self.tf_health = None
        self.query_side = self.adapter = self.inputs = self.paths = None
        self.config = None  # the parameters stay declared: fixed keys are set between cleanup and configure


def guard_lifecycle_requests(node: LifecycleNode) -> None:
    """Answer a lifecycle request that is invalid in the current state with a refusal, never an exception.

    rclpy's change_state service raises out of the executor for a transition that does not start at
    the current state (e.g. `configure` while active), which would end the process: the request is
    checked here first, refused with success false, and the reason is logged with the valid choices.
    """
    service = getattr(node, "_service_change_state", None)
    if service is None:  # the node was created without lifecycle services
        return
    handle = service.callback

    def change_state(request: Any, response: Any) -> Any:
        machine = node._state_machine
        state_id, state = machine.current_state
        valid = {t[0]: t[1] for t in machine.available_transitions}
        wanted = request.transition.label or str(request.transition.id)
        known = request.transition.id in valid if not request.transition.label else \
            request.transition.label in valid.values()
        if not known:
            choices = ", ".join(f"{label} ({tid})" for tid, label in sorted(valid.items())) or "none"
            node.get_logger().warning(f"lifecycle transition '{wanted}' refused: it is not valid in state "
                                      f"'{state}'; valid now: {choices}")
            response.success = False
            return response
        try:
            return handle(request, response)
        except Exception as exc:  # rclpy's own errors for a transition that changed under us
            node.get_logger().error(f"lifecycle transition '{wanted}' from state '{state}' failed: {exc}")
            response.success = False
            return response

    service.callback = change_state


def main(args: list[str] | None = None) -> int:
    """Run the node on a multi-threaded executor until interrupted (configure/activate via lifecycle)."""
    rclpy.init(args=args)
    node = IggtNode()
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    try:
        while rclpy.ok():
            try:
                executor.spin()
            except (KeyboardInterrupt, ExternalShutdownException):
                break
            except Exception as exc:  # nothing from outside may end the node: say it and keep serving
                node.get_logger().error(f"a callback raised {type(exc).__name__}: {exc}; the node goes on\n"
                                        f"{traceback.format_exc()}")
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
