"""The lifecycle node over real DDS: synthetic cameras and TF in, every output checked against ground truth.

The node runs in-process on a MultiThreadedExecutor in a thread, with the ground-truth oracle engine
(wrapped to hold inference when a test needs it) so the outputs can be compared with the truth of
the synthetic scene. Another node publishes the cameras, camera_info and TF, and records every
output topic; the lifecycle is driven through the node's lifecycle services.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from iggt_ros.engine.base import Engine
from iggt_ros.engine.oracle import OracleEngine
from iggt_ros.messages import layouts as L
from iggt_ros.messages.convention import optical_frame
from iggt_ros.messages.message import Header, MessageData, stamp_ns
from iggt_ros.synthetic.sequence import make_sequence

WIDTH, HEIGHT = 168, 112
SEQ = None


def sequence():
    """Two cameras, 14 steps, small images (rendered once per test session)."""
    global SEQ
    if SEQ is None:
        SEQ = make_sequence(seed=4, num_steps=14, cameras=2, trajectory="orbit", width=WIDTH, height=HEIGHT,
                            coverage=0.25, num_objects=5)
    return SEQ


class HeldEngine(Engine):
    """The oracle engine behind a gate: inference waits while the gate is closed (a slow engine)."""

    def __init__(self, inner: OracleEngine) -> None:
        self.inner = inner
        self.name = "oracle"
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.calls = 0

    @property
    def input_size(self) -> tuple[int, int]:
        return self.inner.input_size

    def infer(self, images, views=None):
        self.entered.set()
        self.gate.wait(60.0)
        self.calls += 1
        return self.inner.infer(images, views)


def png_image(header: Header, rgb: np.ndarray):
    """sensor_msgs/CompressedImage (png, lossless) layout data of an RGB image."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return MessageData("sensor_msgs/msg/CompressedImage", {
        "header": header.to_plain(), "format": "png", "data": np.frombuffer(buf.getvalue(), np.uint8)})


def wait_for(pred: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def base_params(**overrides: Any) -> dict[str, Any]:
    seq = sequence()
    params = {
        "input.cameras": list(seq.rig.names),
        "input.image_width": WIDTH,
        "input.image_height": HEIGHT,
        "input.qos": "reliable",
        "input.tf_timeout_s": 0.2,
        "window.size": 4,
        "window.stride": 2,
        "window.min_translation_m": 0.0,
        "window.min_rotation_deg": 0.0,
        "window.min_image_change": 0.0,
        "window.max_queue": 8,
        "mapping.max_cloud_points": 5000,
        "clustering.min_instance_area_px": 20,
        "publish.colorized_instance_images": True,
        "publish.diagnostics_period_s": 0.25,
        "query.text_encoder": "none",
        "query.region_encoder": "none",
    }
    params.update(overrides)
    return params


class Harness:
    """The node under test, a camera/TF publisher and an output recorder on one executor."""

    def __init__(self, context, params: dict[str, Any], engine: Engine | None = None,
                 use_default_factory: bool = False) -> None:
        from rclpy.executors import MultiThreadedExecutor
        from rclpy.node import Node
        from rclpy.parameter import Parameter
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

        from iggt_ros.ros.node import IggtNode

        self.context = context
        self.engine = engine
        overrides = [Parameter(k, value=v) for k, v in params.items()]
        factory = None if use_default_factory else (lambda cfg: self.engine)
        self.node = IggtNode(engine_factory=factory, parameter_overrides=overrides, context=context)
        self.io = Node("iggt_test_io", context=context)
        reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.received: dict[str, list] = defaultdict(list)
        self.lock = threading.Lock()
        self.cameras = list(params.get("input.cameras", ["camera"]))
        self._pubs: dict[str, Any] = {}
        self._clients: dict[str, Any] = {}
        self._subscribe_outputs(reliable)
        from sensor_msgs.msg import CameraInfo, CompressedImage, Image

        self.compressed = set(params.get("input.compressed_cameras", []))
        for cam in self.cameras:
            if cam in self.compressed:
                self._pubs[f"{cam}/image_raw"] = self.io.create_publisher(
                    CompressedImage, f"{cam}/image_raw/compressed", reliable)
            else:
                self._pubs[f"{cam}/image_raw"] = self.io.create_publisher(Image, f"{cam}/image_raw", reliable)
            self._pubs[f"{cam}/camera_info"] = self.io.create_publisher(CameraInfo, f"{cam}/camera_info", reliable)
        try:
            from tf2_msgs.msg import TFMessage
        except ImportError:
            TFMessage = None
        if TFMessage is not None:
            self._pubs["/tf"] = self.io.create_publisher(TFMessage, "/tf", QoSProfile(
                depth=100, reliability=ReliabilityPolicy.RELIABLE))
            self._pubs["/tf_static"] = self.io.create_publisher(TFMessage, "/tf_static", QoSProfile(
                depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL))
        self.executor = MultiThreadedExecutor(num_threads=4, context=context)
        self.executor.add_node(self.node)
        self.executor.add_node(self.io)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def _subscribe_outputs(self, qos) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from sensor_msgs.msg import Image, PointCloud2
        from visualization_msgs.msg import MarkerArray

        from iggt_ros.msg import InstanceArray

        topics = {"/iggt/points": PointCloud2, "/iggt/instances": InstanceArray, "/iggt/markers": MarkerArray,
                  "/diagnostics": DiagnosticArray}
        for cam in self.cameras:
            topics[f"/iggt/instance_image/{cam}"] = Image
            topics[f"/iggt/instance_image/{cam}/colorized"] = Image
            topics[f"/iggt/depth/{cam}"] = Image
        try:
            from vision_msgs.msg import Detection3DArray

            topics["/iggt/detections"] = Detection3DArray
        except ImportError:
            pass
        for topic, cls in topics.items():
            self.io.create_subscription(cls, topic, lambda m, t=topic: self._record(t, m), qos)

    def _record(self, topic: str, msg: Any) -> None:
        with self.lock:
            self.received[topic].append(msg)

    def messages(self, topic: str) -> list:
        with self.lock:
            return list(self.received[topic])

    # ------------------------------------------------------------------ lifecycle over services
    def change_state(self, transition_id: int, timeout: float = 60.0) -> bool:
        from lifecycle_msgs.srv import ChangeState

        client = self.service(ChangeState, f"/{self.node.get_name()}/change_state")
        req = ChangeState.Request()
        req.transition.id = transition_id
        return bool(self.call(client, req, timeout).success)

    def state(self) -> str:
        from lifecycle_msgs.srv import GetState

        client = self.service(GetState, f"/{self.node.get_name()}/get_state")
        return self.call(client, GetState.Request(), 10.0).current_state.label

    def call(self, client, request, timeout: float):
        future = client.call_async(request)
        done = threading.Event()
        future.add_done_callback(lambda f: done.set())
        assert done.wait(timeout), f"service {client.srv_name} did not answer within {timeout} s"
        return future.result()

    def set_remote_parameters(self, values: dict[str, Any], timeout: float = 10.0) -> list:
        """`ros2 param set` as a user does it: the node's SetParameters service, from another node."""
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        client = self.service(SetParameters, f"/{self.node.get_name()}/set_parameters")
        request = SetParameters.Request(parameters=[Parameter(k, value=v).to_parameter_msg()
                                                    for k, v in values.items()])
        return list(self.call(client, request, timeout).results)

    def service(self, srv_type, name: str):
        """One client per service for the harness's life: discovery happens once, not per call (a busy
        machine can take seconds to discover a new client's server)."""
        client = self._clients.get(name)
        if client is None:
            client = self._clients[name] = self.io.create_client(srv_type, name)
        assert client.wait_for_service(30.0), f"service {name} not available"
        return client

    # ------------------------------------------------------------------ inputs
    def publish_static_tf(self) -> None:
        """Publish the camera mounts and wait until the node's TF buffer holds them (when it has one)."""
        from iggt_ros.ros.convert import to_rclpy

        seq = sequence()
        static = [L.TransformData("base_link", optical_frame(cam), 0, seq.rig.base_from_camera[i])
                  for i, cam in enumerate(seq.rig.names)]
        if "/tf_static" not in self._pubs:
            return
        self._pubs["/tf_static"].publish(to_rclpy(L.tf_message(static)))

        def received() -> bool:
            buffer = self.node.paths.tf_buffer if self.node.paths is not None else None
            if buffer is None:
                return True
            if hasattr(buffer, "lookup_transform"):  # tf2_ros
                from rclpy.time import Time

                return all(buffer.can_transform("base_link", optical_frame(c), Time()) for c in seq.rig.names)
            return all(buffer.can_transform("base_link", optical_frame(c), 0) for c in seq.rig.names)

        wait_for(received, 30.0, "the static transforms in the node's TF buffer")

    def publish_step(self, step: int, with_tf: bool = True, stamp_offset_ns: int = 0) -> int:
        from iggt_ros.ros.convert import to_rclpy

        seq = sequence()
        views = seq.steps[step]
        stamp = int(views[0].stamp_ns) + stamp_offset_ns
        if with_tf and "/tf" in self._pubs:
            self._pubs["/tf"].publish(to_rclpy(L.tf_message(
                [L.TransformData("odom", "base_link", stamp, seq.world_from_base[step])])))
        for view in views:
            header = Header(stamp, optical_frame(view.camera))
            self._pubs[f"{view.camera}/camera_info"].publish(
                to_rclpy(L.camera_info(header, view.intrinsics, WIDTH, HEIGHT)))
            if view.camera in self.compressed:
                self._pubs[f"{view.camera}/image_raw"].publish(to_rclpy(png_image(header, view.rgb)))
            else:
                self._pubs[f"{view.camera}/image_raw"].publish(to_rclpy(L.rgb_image(header, view.rgb)))
        return stamp

    def play(self, step: int, with_tf: bool = True, stamp_offset_ns: int = 0) -> int:
        """Publish one step and wait until the node has taken it as a frame set: steps are ordered by
        the node's own progress, not by sleeping."""
        before = self.node.stats.frame_sets
        stamp = self.publish_step(step, with_tf, stamp_offset_ns)
        wait_for(lambda: self.node.stats.frame_sets > before, 30.0, f"the frame set of step {step}")
        return stamp

    def publish_raw(self, topic: str, msg: Any) -> None:
        self._pubs[topic].publish(msg)

    def close(self) -> None:
        if self.engine is not None and isinstance(self.engine, HeldEngine):
            self.engine.gate.set()
        for client in self._clients.values():
            self.io.destroy_client(client)
        self._clients = {}
        with contextlib.suppress(Exception):
            self.node.trigger_shutdown()
        self.executor.shutdown(timeout_sec=5.0)
        self._thread.join(5.0)
        self.node.destroy_node()
        self.io.destroy_node()


@pytest.fixture
def harness_factory(rclpy_context):
    made: list[Harness] = []

    def make(params: dict[str, Any], engine: Engine | None = None, **kwargs: Any) -> Harness:
        h = Harness(rclpy_context, params, engine, **kwargs)
        made.append(h)
        return h

    yield make
    for h in made:
        h.close()


STANDARD_PACKAGES = ("message_filters", "cv_bridge", "tf2_ros")


@pytest.fixture(params=["fallback", "standard"])
def input_path(request, monkeypatch) -> str:
    """The node's input path: the package's own (standard packages hidden) or message_filters & co.

    The standard path needs the ROS packages PyPI lacks, so it skips here and runs in the ROS
    workflow. Behaviour tests take this fixture so they hold on both paths.
    """
    if request.param == "fallback":
        for name in STANDARD_PACKAGES:
            monkeypatch.setitem(sys.modules, name, None)  # import raises ImportError
    else:
        pytest.importorskip("message_filters")
    return request.param


def expected_sync(path: str) -> str:
    return "message_filters" if path == "standard" else "ApproximateTimeSynchronizer (fallback)"


def oracle() -> OracleEngine:
    return OracleEngine.from_sequence(sequence(), input_size=(HEIGHT, WIDTH), seed=1)


def truth_by_key() -> dict[tuple[str, int], Any]:
    return {(v.camera, int(v.stamp_ns)): v for v in sequence().views()}


def read_image(msg) -> np.ndarray:
    dtype = {"16UC1": "<u2", "32FC1": "<f4", "rgb8": "u1"}[msg.encoding]
    arr = np.frombuffer(bytes(msg.data), dtype=dtype)
    return arr.reshape(msg.height, msg.width, -1).squeeze(-1) if msg.encoding != "rgb8" else \
        arr.reshape(msg.height, msg.width, 3)


# ====================================================================================================
def test_end_to_end_outputs_match_ground_truth(harness_factory):
    from lifecycle_msgs.msg import Transition

    seq = sequence()
    engine = HeldEngine(oracle())
    h = harness_factory(base_params(), engine)
    assert h.state() == "unconfigured"
    assert h.change_state(Transition.TRANSITION_CONFIGURE)
    assert h.state() == "inactive"
    assert h.change_state(Transition.TRANSITION_ACTIVATE)
    assert h.state() == "active"
    node = h.node
    assert node.stats.info["sync"] and node.stats.info["images"] and node.stats.info["tf"]

    h.publish_static_tf()
    for step in range(seq.num_steps):
        h.play(step)
    # 14 keyframes, window 4 stride 2: windows end at steps 4, 6, ..., 14 -> 6 windows
    wait_for(lambda: node.worker.processed >= 6, 90.0, "six processed windows")
    assert node.queue.stats().dropped == 0 and len(node.queue) == 0 and not node.worker.busy
    # every window is published before it counts as processed; wait for DDS to deliver them all
    for topic in ("/iggt/instances", "/iggt/points", "/iggt/markers"):
        wait_for(lambda t=topic: len(h.messages(t)) >= 6, 10.0, f"six messages on {topic}")

    # ------------------------------------------------------------------ world outputs
    arrays = h.messages("/iggt/instances")
    clouds = h.messages("/iggt/points")
    markers = h.messages("/iggt/markers")
    assert len(clouds) == len(arrays) == len(markers) == 6
    last = arrays[-1]
    assert last.header.frame_id == "odom", "with TF the outputs are in input.world_frame"
    stamps = [stamp_ns(a.header.stamp) for a in arrays]
    assert stamps == [int(seq.steps[s][0].stamp_ns) for s in (3, 5, 7, 9, 11, 13)]
    ids = {int(i.id) for i in last.instances}
    assert ids and 0 not in ids
    for cloud, arr in zip(clouds, arrays, strict=True):
        assert cloud.header.frame_id == "odom" and cloud.header.stamp == arr.header.stamp
        pts = L.read_points(cloud)
        labels = set(np.unique(pts["label"]).tolist()) - {0}
        assert labels <= {int(i.id) for i in arr.instances}, "cloud labels must be InstanceArray IDs"
    pts = L.read_points(clouds[-1])
    assert len(pts) > 100 and np.isfinite(pts["x"]).all()
    room = seq.scene.room_size
    inside = (np.abs(pts["x"]) <= room[0] / 2 + 0.1) & (np.abs(pts["y"]) <= room[1] / 2 + 0.1)
    assert inside.mean() > 0.98, "metric points in odom lie inside the room"

    # ------------------------------------------------------------------ per-view images vs ground truth
    truth = truth_by_key()
    pred_to_gt: dict[int, set[int]] = defaultdict(set)
    image_count = 0
    for cam in seq.rig.names:
        id_msgs = h.messages(f"/iggt/instance_image/{cam}")
        depth_msgs = h.messages(f"/iggt/depth/{cam}")
        colour_msgs = h.messages(f"/iggt/instance_image/{cam}/colorized")
        assert len(id_msgs) == len(depth_msgs) == len(colour_msgs) > 0
        seen_stamps = [stamp_ns(m.header.stamp) for m in id_msgs]
        assert len(set(seen_stamps)) == len(seen_stamps), "each view is published once"
        for idm, dm, cm in zip(id_msgs, depth_msgs, colour_msgs, strict=True):
            assert idm.header.frame_id == optical_frame(cam) and idm.encoding == "16UC1"
            assert dm.header == idm.header and cm.header == idm.header
            assert (idm.width, idm.height) == (WIDTH, HEIGHT) and dm.encoding == "32FC1" and cm.encoding == "rgb8"
            view = truth[(cam, stamp_ns(idm.header.stamp))]
            pred = read_image(idm)
            depth = read_image(dm)
            ok = np.isfinite(depth)
            assert ok.mean() > 0.9
            rel = np.abs(depth[ok] - view.depth[ok]) / view.depth[ok]
            assert np.median(rel) < 0.03, "depth is metric (TF scale) and matches the truth"
            assert set(np.unique(pred).tolist()) - {0} <= {int(i.id) for a in arrays for i in a.instances}
            for pid in np.unique(pred):
                if pid == 0:
                    continue
                mask = pred == pid
                if mask.sum() < 50:
                    continue
                gt_ids, counts = np.unique(view.instance_ids[mask], return_counts=True)
                best = int(gt_ids[np.argmax(counts)])
                assert counts.max() / mask.sum() > 0.8, f"instance {pid} mixes ground-truth objects"
                pred_to_gt[int(pid)].add(best)
            image_count += 1
    assert image_count >= 12
    assert pred_to_gt, "no instance segmented"
    for pid, gts in pred_to_gt.items():
        assert len(gts) == 1, f"instance {pid} is mapped to several objects over time: {gts}"
    objects = [g for s in pred_to_gt.values() for g in s if g != 0]
    assert len(objects) == len(set(objects)), "one object keeps one ID across cameras and windows"

    # instance centroids near the ground-truth object centres
    for inst in last.instances:
        gts = pred_to_gt.get(int(inst.id), set()) - {0}
        if not gts or inst.point_count < 50:
            continue
        gt = seq.scene.object(next(iter(gts)))
        c = np.array([inst.centroid.x, inst.centroid.y, inst.centroid.z])
        assert np.linalg.norm(c[:2] - gt.center[:2]) < 0.5 * max(gt.extent) + 0.1

    # markers mirror the instances
    marker_ids = {m.id for m in markers[-1].markers if m.ns == L.BOX_NAMESPACE and m.action == L.MARKER_ADD}
    visible = {int(i.id) for i in last.instances if i.state != L.STATE_LOST}
    assert marker_ids == visible
    assert all(m.header.frame_id == "odom" for m in markers[-1].markers)

    # detections mirror the instances that are not lost, where vision_msgs exists (README)
    try:
        import vision_msgs  # noqa: F401
    except ImportError:
        assert "iggt/detections" not in node._publishers_by_topic
    else:
        detections = h.messages("/iggt/detections")
        assert len(detections) == 6 and detections[-1].header == last.header
        assert {int(d.id) for d in detections[-1].detections} == visible

    # diagnostics
    diag = wait_for(lambda: [d for d in h.messages("/diagnostics")
                             if d.status and int(dict((kv.key, kv.value) for kv in d.status[0].values)
                                                 .get("windows_processed", "0")) >= 6], 5.0, "diagnostics")
    values = {kv.key: kv.value for kv in diag[-1].status[0].values}
    assert values["engine"] == "oracle" and values["windows_dropped"] == "0"
    for stage in ("inference", "clustering", "tracking", "publish", "total"):
        assert float(values[f"latency_{stage}_ms"]) > 0, stage
    assert {"sync", "images", "tf", "window_rate_hz", "queue_capacity"} <= set(values)
    assert float(values["configure_to_first_window_s"]) > 0, "the cold start is reported from the first window on"

    # ------------------------------------------------------------------ run-time parameters
    from rclpy.parameter import Parameter

    ok = node.set_parameters([Parameter("tracking.lost_windows", value=6)])[0]
    assert ok.successful and node.config.tracking.lost_windows == 6
    assert node.pipeline.tracker.config.lost_windows == 6, "the live tracker sees the change"
    refused = node.set_parameters([Parameter("input.cameras", value=["a"])])[0]
    assert not refused.successful and "input.cameras" in refused.reason
    bad = node.set_parameters([Parameter("tracking.min_match_score", value=3.0)])[0]
    assert not bad.successful and "[0, 1]" in bad.reason

    # ------------------------------------------------------------------ deactivate and clean up over services
    assert h.change_state(Transition.TRANSITION_DEACTIVATE)
    assert h.state() == "inactive" and not node.worker.running
    n_arrays = len(h.messages("/iggt/instances"))
    # an inactive node does not listen: once no one subscribes, what is published cannot reach it
    wait_for(lambda: all(h._pubs[f"{cam}/image_raw"].get_subscription_count() == 0 for cam in seq.rig.names),
             10.0, "the node to unsubscribe its cameras")
    h.publish_step(0, stamp_offset_ns=10**10)
    assert node.stats.frame_sets == 14 and len(h.messages("/iggt/instances")) == n_arrays
    assert h.change_state(Transition.TRANSITION_CLEANUP)
    assert h.state() == "unconfigured" and node.engine is None and node.has_parameter("window.size")


def test_services_answer_during_inference_and_overload_drops_oldest_windows(harness_factory, input_path):
    from sensor_msgs.msg import Image
    from std_srvs.srv import Trigger

    from iggt_ros.srv import Query

    seq = sequence()
    engine = HeldEngine(oracle())
    engine.gate.clear()  # inference holds until released
    params = base_params(**{"window.size": 2, "window.stride": 1, "window.max_queue": 2, "input.use_tf": False})
    h = harness_factory(params, engine)
    node = h.node
    from rclpy.lifecycle import TransitionCallbackReturn

    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    assert node.stats.info["sync"] == expected_sync(input_path)
    query = h.service(Query, "/iggt/query")
    reset = h.service(Trigger, "/iggt/reset")

    for step in range(seq.num_steps):
        h.play(step, with_tf=False)
    wait_for(engine.entered.is_set, 20.0, "inference to start")
    # 14 keyframes, window 2 stride 1: 13 windows; one is held in inference, at most 2 wait
    wait_for(lambda: node.stats.frame_sets >= seq.num_steps, 20.0, "all frame sets")
    stats = node.queue.stats()
    assert stats.enqueued == 13 and stats.max_depth <= 2 and len(node.queue) <= 2
    assert stats.dropped == 13 - 1 - len(node.queue) and stats.dropped >= 10
    assert node.worker.busy and not engine.gate.is_set()

    # Unsupported encoding on one camera: skipped with a warning, the node goes on. It arrives in a
    # set with the other camera's image, as a misconfigured camera's images do, because message_filters
    # hands images over for decoding only once a synchronised set forms (the fallback decodes each);
    # the other camera's image is used alone, so its time step completes one more window.
    from iggt_ros.ros.convert import to_rclpy

    bad_cam, good_cam = seq.rig.names[0], seq.rig.names[1]
    stamp = int(seq.steps[-1][0].stamp_ns) + 10**8
    bad = Image(encoding="32FC1", height=2, width=2, step=8, data=bytes(16))
    bad.header.stamp.sec, bad.header.stamp.nanosec = divmod(stamp, 10**9)
    bad.header.frame_id = optical_frame(bad_cam)
    good_view = next(v for v in seq.steps[-1] if v.camera == good_cam)
    h.publish_raw(f"{good_cam}/image_raw", to_rclpy(L.rgb_image(Header(stamp, optical_frame(good_cam)),
                                                                good_view.rgb)))
    h.publish_raw(f"{bad_cam}/image_raw", bad)
    wait_for(lambda: node.inputs.skipped >= 1, 20.0, "the bad image to be skipped")
    assert node.inputs.skipped == 1, "one bad image is reported once"
    wait_for(lambda: node.queue.stats().enqueued == 14, 20.0, "the window of the good camera's image")
    stats = node.queue.stats()
    assert stats.dropped == 14 - 1 - len(node.queue)

    # both services answer while the engine is held (it is released only further down)
    answer = h.call(query, Query.Request(text="the red cube"), 30.0)
    assert not answer.success and "disabled" in answer.message
    assert node.worker.busy and not engine.gate.is_set(), "the query was answered during inference"
    done = h.call(reset, Trigger.Request(), 30.0)
    assert done.success and "discarded" in done.message
    assert node.worker.busy and not engine.gate.is_set(), "the reset was answered during inference"
    assert len(node.queue) == 0

    def dropped_reported(d) -> bool:  # diagnostics are periodic: wait for one sent after the last drop
        return bool(d.status) and {kv.key: kv.value for kv in d.status[0].values}.get("windows_dropped") == str(
            stats.dropped)

    diag = wait_for(lambda: [d for d in h.messages("/diagnostics") if dropped_reported(d)], 10.0,
                    "diagnostics reporting every drop")
    status = diag[0].status[0]  # the period in which the last drop happened
    assert status.level == status.WARN and "dropped" in status.message, (status.level, status.message)

    engine.gate.set()
    wait_for(lambda: node.worker.discarded == 1 and not node.worker.busy, 30.0, "the held window to be discarded")
    assert node.worker.processed == 0, "the window in flight during the reset is not published"
    assert h.messages("/iggt/instances") == []
    assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS


def test_query_service_ranks_instances_of_the_map(harness_factory):
    from std_srvs.srv import Trigger
    from test_vlm_lmm import RuleHandler, Server

    from iggt_ros.srv import Query

    lmm = Server(RuleHandler)  # a local chat-completions server that judges the highlighted colour
    seq = sequence()
    engine = HeldEngine(oracle())
    params = base_params(**{"query.text_encoder": "embedded", "query.region_encoder": "embedded",
                            "query.embed_min_area_px": 20, "query.lmm_endpoint": lmm.url,
                            "query.lmm_timeout_s": 5.0})
    h = harness_factory(params, engine)
    node = h.node
    from rclpy.lifecycle import TransitionCallbackReturn

    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    query = h.service(Query, "/iggt/query")
    early = h.call(query, Query.Request(text="a cube"), 5.0)
    assert not early.success and ("loading" in early.message or "no instances" in early.message)
    assert node.query_side.wait_ready(120.0)
    h.publish_static_tf()
    for step in range(8):
        h.play(step)
    wait_for(lambda: node.worker.processed >= 3, 90.0, "three processed windows")
    assert node.query_side.wait_idle(60.0)
    obj = seq.scene.objects[0]
    answer = h.call(query, Query.Request(text=f"the {obj.color_name} {obj.shape}", max_results=3), 10.0)
    assert answer.success, answer.message
    assert "LMM grounding" in answer.message and lmm.requests, "the configured LMM must be asked"
    lmm.close()
    assert 1 <= len(answer.instances) <= 3 and len(answer.scores) == len(answer.instances)
    # Grounding may reorder the best candidates; scores stay the embedding scores.
    assert all(0.0 <= s <= 1.0 for s in answer.scores)
    snapshot = {i.id: i for i in node.pipeline.snapshot().instances}
    for inst in answer.instances:
        assert inst.id in snapshot and inst.header.frame_id == "odom"
        assert abs(inst.centroid.x - float(snapshot[inst.id].centroid[0])) < 1e-5
    empty = h.call(query, Query.Request(text="   "), 5.0)
    assert not empty.success and "empty" in empty.message

    reset = h.service(Trigger, "/iggt/reset")
    assert h.call(reset, Trigger.Request(), 5.0).success
    after = h.call(query, Query.Request(text=f"the {obj.color_name} {obj.shape}"), 5.0)
    assert not after.success and "no instances" in after.message


def test_configure_fails_cleanly_on_bad_parameters_and_missing_weights(harness_factory):
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter

    bad = harness_factory(base_params(**{"window.size": 20}), HeldEngine(oracle()))
    assert bad.node.trigger_configure() == TransitionCallbackReturn.FAILURE
    assert bad.state() == "unconfigured" and bad.node.engine is None
    assert bad.node.get_parameter("window.size").value == 20, "the bad value stays, to be corrected"
    assert bad.node.set_parameters([Parameter("window.size", value=4)])[0].successful
    assert bad.node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert bad.node.config.window.size == 4
    assert bad.node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS  # the next node has the same name

    missing = harness_factory(base_params(**{"engine.backend": "onnxruntime",
                                             "engine.engine_path": "/nonexistent/iggt.onnx"}),
                              use_default_factory=True)
    assert missing.node.trigger_configure() == TransitionCallbackReturn.FAILURE
    assert missing.state() == "unconfigured" and missing.node.engine is None
    # the failure is repeatable, not a crash
    assert missing.node.trigger_configure() == TransitionCallbackReturn.FAILURE


def test_without_tf_outputs_use_the_fallback_frame_and_compressed_images_work(harness_factory):
    seq = sequence()
    engine = HeldEngine(oracle())
    compressed = seq.rig.names[1]
    h = harness_factory(base_params(**{"input.tf_timeout_s": 0.0, "input.compressed_cameras": [compressed]}),
                        engine)
    node = h.node
    from rclpy.lifecycle import TransitionCallbackReturn

    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    for step in range(4):
        h.play(step, with_tf=False)
    wait_for(lambda: h.messages("/iggt/instances"), 60.0, "an InstanceArray")
    arr = h.messages("/iggt/instances")[0]
    assert arr.header.frame_id == "iggt_map"
    assert h.messages("/iggt/points")[0].header.frame_id == "iggt_map"
    assert stamp_ns(arr.header.stamp) == int(seq.steps[3][0].stamp_ns)
    ids = wait_for(lambda: h.messages(f"/iggt/instance_image/{compressed}"), 5.0, "instance images")
    assert ids[0].header.frame_id == optical_frame(compressed) and (ids[0].width, ids[0].height) == (WIDTH, HEIGHT)
    assert node.inputs.skipped == 0, "png frames decode"
    assert read_image(ids[0]).any(), "the compressed camera's view is segmented"


def test_fixed_parameters_are_set_between_cleanup_and_configure(harness_factory, tmp_path):
    """The refusal says to clean up, set and configure: that sequence works over the parameter service."""
    from lifecycle_msgs.msg import Transition

    from iggt_ros.config import IggtConfig, save_config

    first = tmp_path / "first.yaml"
    save_config(IggtConfig().replace(**{"mapping.voxel_size_m": 0.05, "tracking.confirm_windows": 3}), first)
    h = harness_factory(base_params(config_file=str(first)), HeldEngine(oracle()))
    node = h.node
    assert h.change_state(Transition.TRANSITION_CONFIGURE)
    assert node.config.mapping.voxel_size_m == 0.05 and node.config.window.size == 4

    refused = h.set_remote_parameters({"window.size": 2})[0]
    assert not refused.successful and "clean up" in refused.reason and "then configure" in refused.reason

    assert h.change_state(Transition.TRANSITION_CLEANUP)
    assert node.has_parameter("window.size"), "cleanup keeps the parameters so they can be set"
    done = h.set_remote_parameters({"window.size": 2, "window.stride": 1, "mapping.voxel_size_m": 0.03})
    assert all(r.successful for r in done), [r.reason for r in done]
    assert h.change_state(Transition.TRANSITION_CONFIGURE)
    assert node.config.window.size == 2 and node.config.window.stride == 1
    assert node.pipeline.window_buffer.config.size == 2, "the pipeline is built with the value set"
    assert node.config.mapping.voxel_size_m == 0.03, "the parameter file is not reloaded over a value set"
    assert node.config.tracking.confirm_windows == 3, "values nobody set still come from the file"

    # A value that cannot configure fails the transition with the reason and can be corrected.
    assert h.change_state(Transition.TRANSITION_CLEANUP)
    assert all(r.successful for r in h.set_remote_parameters({"window.size": 20}))
    assert not h.change_state(Transition.TRANSITION_CONFIGURE)
    assert h.state() == "unconfigured" and node.get_parameter("window.size").value == 20
    assert all(r.successful for r in h.set_remote_parameters({"window.size": 3}))
    assert h.change_state(Transition.TRANSITION_CONFIGURE)
    assert node.config.window.size == 3

    # Another parameter file replaces the values that came from the previous one, not those set by hand.
    second = tmp_path / "second.yaml"
    save_config(IggtConfig().replace(**{"mapping.voxel_size_m": 0.08, "tracking.confirm_windows": 5}), second)
    assert h.change_state(Transition.TRANSITION_CLEANUP)
    assert all(r.successful for r in h.set_remote_parameters({"config_file": str(second)}))
    assert h.change_state(Transition.TRANSITION_CONFIGURE)
    assert node.config.tracking.confirm_windows == 5
    assert node.config.mapping.voxel_size_m == 0.03 and node.config.window.size == 3


def test_every_received_image_is_counted_on_both_input_paths(harness_factory, input_path):
    """frames_received counts images as they arrive, whether or not they end in a synchronised set."""
    from rclpy.lifecycle import TransitionCallbackReturn

    seq = sequence()
    h = harness_factory(base_params(**{"input.use_tf": False}), HeldEngine(oracle()))
    node = h.node
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    assert node.stats.info["sync"] == expected_sync(input_path)
    from iggt_ros.ros.convert import to_rclpy

    lone = seq.rig.names[0]  # only one of the two cameras: no set can form
    for step in range(3):
        view = next(v for v in seq.steps[step] if v.camera == lone)
        h.publish_raw(f"{lone}/image_raw", to_rclpy(L.rgb_image(Header(int(view.stamp_ns), optical_frame(lone)),
                                                                view.rgb)))
    wait_for(lambda: node.stats.frames >= 3, 10.0, "three images counted")
    h.publish_step(3, with_tf=False)  # a full set: two more images, one set
    wait_for(lambda: node.stats.frame_sets >= 1, 10.0, "a synchronised set")
    assert node.stats.frames == 5 and node.stats.frame_sets == 1

    def reported(d) -> bool:
        values = {kv.key: kv.value for kv in d.status[0].values} if d.status else {}
        return values.get("frames_received") == "5" and values.get("frame_sets") == "1"

    wait_for(lambda: [d for d in h.messages("/diagnostics") if reported(d)], 10.0, "diagnostics with every image")


def test_tf_lookup_failures_and_tf_lag_are_reported_on_diagnostics(harness_factory, input_path):
    """Without TF the node falls back to its own frame, and /diagnostics says so, with counts and lag."""
    from rclpy.lifecycle import TransitionCallbackReturn

    from iggt_ros.ros.convert import to_rclpy

    h = harness_factory(base_params(**{"input.tf_timeout_s": 0.0}), HeldEngine(oracle()))
    node = h.node
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    for step in range(2):  # two sets, no transform for any camera: four failed pose lookups
        h.publish_step(step, with_tf=False)

    def tf_status(d):
        return next((s for s in d.status if s.name.endswith(": TF")), None)

    def failures_reported(d) -> bool:
        s = tf_status(d)
        return s is not None and {kv.key: kv.value for kv in s.values}.get("tf_lookup_failures") == "4"

    diag = wait_for(lambda: [d for d in h.messages("/diagnostics") if failures_reported(d)], 15.0,
                    "a TF status with four failed lookups")
    status = next(tf_status(d) for d in diag if tf_status(d).level == tf_status(d).WARN)
    assert "camera pose lookups failed" in status.message and "'iggt_map'" in status.message
    values = {kv.key: kv.value for kv in status.values}
    assert float(values["tf_lookup_failure_rate"]) > 0

    # /tf stamped 2 s before it is sent (a congested transport): the lag is reported
    now_ns = node.get_clock().now().nanoseconds
    late = L.tf_message([L.TransformData("odom", "base_link", now_ns - 2 * 10**9, np.eye(4))])
    h.publish_raw("/tf", to_rclpy(late))

    def lag_reported(d) -> bool:
        s = tf_status(d)
        lag = {kv.key: kv.value for kv in s.values}.get("tf_lag_max_ms") if s is not None else None
        return lag is not None and float(lag) >= 2000.0 and s.level == s.WARN and "/tf arrives" in s.message

    wait_for(lambda: [d for d in h.messages("/diagnostics") if lag_reported(d)], 15.0, "a TF status with the lag")


def test_instances_are_labelled_from_their_region_embeddings(harness_factory):
    """/iggt/instances label and score come from the region embeddings against the label vocabulary;
    an instance without a label says why, also when it will not be embedded."""
    from lifecycle_msgs.msg import Transition

    from iggt_ros.srv import Query
    from iggt_ros.vlm.labels import attribute_vocabulary

    seq = sequence()
    params = base_params(**{"query.text_encoder": "embedded", "query.region_encoder": "embedded",
                            "query.embed_min_area_px": 150})
    h = harness_factory(params, HeldEngine(oracle()))
    node = h.node

    def run() -> Any:
        """Configure, activate, play the sequence; the last InstanceArray, published after embedding."""
        before = len(h.messages("/iggt/instances"))
        assert h.change_state(Transition.TRANSITION_CONFIGURE) and h.change_state(Transition.TRANSITION_ACTIVATE)
        assert node.query_side.wait_ready(120.0)
        h.publish_static_tf()
        for step in range(seq.num_steps - 2):
            h.play(step)
        wait_for(lambda: node.worker.processed >= 5, 90.0, "five processed windows")
        assert node.query_side.wait_idle(60.0)
        for step in range(seq.num_steps - 2, seq.num_steps):  # one more window, after the embeddings exist
            h.play(step)
        wait_for(lambda: len(h.messages("/iggt/instances")) >= before + 6, 60.0, "the sixth InstanceArray")
        return h.messages("/iggt/instances")[-1]

    def reason(inst) -> str:
        return {kv.key: kv.value for kv in inst.attributes}.get("label_reason", "")

    last = run()
    vocabulary = set(attribute_vocabulary())
    labelled = [i for i in last.instances if i.label]
    assert labelled, "instances seen in large masks are labelled"
    for inst in last.instances:
        if inst.label:
            assert inst.label in vocabulary and 0.0 < inst.score <= 1.0 and not reason(inst)
            c = np.array([inst.centroid.x, inst.centroid.y])
            gt = min(seq.scene.objects, key=lambda o: np.linalg.norm(c - o.center[:2]))
            if np.linalg.norm(c - gt.center[:2]) < 0.5 * max(gt.extent) + 0.1:
                assert inst.label.split()[0] == gt.color_name, (inst.label, gt.color_name, gt.shape)
        else:
            assert reason(inst) == "not embedded yet", "first seen in the newest window: will be embedded"
    snapshot = {i.id: i for i in node.pipeline.snapshot().instances}
    assert all(snapshot[i.id].label == i.label for i in labelled), "the labels are the object map's"

    # Masks that are all below query.embed_min_area_px are never embedded: the reason says so.
    assert h.change_state(Transition.TRANSITION_DEACTIVATE) and h.change_state(Transition.TRANSITION_CLEANUP)
    assert all(r.successful for r in h.set_remote_parameters({"query.embed_min_area_px": 100000}))
    last = run()
    assert last.instances and not [i for i in last.instances if i.label]
    small = [i for i in last.instances if "smaller than query.embed_min_area_px (100000 px" in reason(i)]
    assert small, [reason(i) for i in last.instances]
    assert all(reason(i) for i in last.instances)
    answer = h.call(h.service(Query, "/iggt/query"), Query.Request(text="a green box"), 10.0)
    assert not answer.success and "query.embed_min_area_px" in answer.message, answer.message
