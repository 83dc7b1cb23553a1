"""The replay evaluates what the node does: the same frames through the rclpy node and through the replay.

One list of camera, camera_info and TF messages is written into a bag and published to the lifecycle
node over DDS, with the same deterministic engine (the ground-truth oracle, whose every output
derives from its seed and the window's views) behind both. Every output message must then agree:
instance images pixel for pixel, instance IDs and states, the frame and stamp of every header, and
the point clouds. The cases cover one and two cameras, a camera without any camera_info (the model's
intrinsics place it) and a camera_info for another image size (K scaled to the image).

Inputs reach the node in a fixed order without sleeping: each step's camera_info is published and
awaited in the node's camera state before its images, and each step's images are awaited as a frame
set before the next step, so the node receives exactly the sequence the bag holds.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rosbags.rosbag2 import Reader
from test_node import Harness, harness_factory, input_path, read_image, wait_for  # noqa: F401 (fixtures)

from iggt_ros.bag.typestore import typestore
from iggt_ros.bag.writer import BagWriter
from iggt_ros.config import IggtConfig
from iggt_ros.engine.oracle import OracleEngine
from iggt_ros.messages import convention as C
from iggt_ros.messages import layouts as L
from iggt_ros.messages.message import Header, MessageData, stamp_ns
from iggt_ros.synthetic.sequence import make_sequence

WIDTH, HEIGHT = 168, 112
STEPS = 8


def params(cameras: list[str]) -> dict[str, Any]:
    """Node parameters; the replay gets the same values as its configuration."""
    return {
        "input.cameras": cameras,
        "input.image_width": WIDTH,
        "input.image_height": HEIGHT,
        "input.qos": "reliable",
        "input.tf_timeout_s": 10.0,  # a pose lookup waits for the step's TF (published before the images)
        "window.size": 4,
        "window.stride": 2,
        "window.min_translation_m": 0.0,
        "window.min_rotation_deg": 0.0,
        "window.min_image_change": 0.0,
        "window.max_queue": 16,  # nothing is dropped: every window is compared
        "mapping.max_cloud_points": 4000,
        "clustering.min_instance_area_px": 20,
        "query.text_encoder": "none",
        "query.region_encoder": "none",
    }


Step = list[tuple[str, MessageData]]
"""(topic, message) of one time step, in publishing order: TF, camera_info, images."""


def inputs(seq, info: dict[str, str]) -> tuple[MessageData, list[tuple[int, Step]]]:
    """The static TF and per step the messages of the sequence; `info[cam]`: 'ok', 'none' or 'double'
    (camera_info for images twice the size, K doubled: the images are a resized stream)."""
    static = L.tf_message([L.TransformData("base_link", C.optical_frame(cam), 0, seq.rig.base_from_camera[i])
                           for i, cam in enumerate(seq.rig.names)])
    steps = []
    for s in range(STEPS):
        views = seq.steps[s]
        stamp = int(views[0].stamp_ns)
        msgs: Step = [(C.TF_TOPIC, L.tf_message([L.TransformData("odom", "base_link", stamp,
                                                                  seq.world_from_base[s])]))]
        for view in views:
            header = Header(stamp, C.optical_frame(view.camera))
            kind = info[view.camera]
            if kind == "ok":
                msgs.append((C.camera_info_topic(view.camera), L.camera_info(header, view.intrinsics, WIDTH, HEIGHT)))
            elif kind == "double":
                k = np.asarray(view.intrinsics, float) * np.array([[2.0], [2.0], [1.0]])
                msgs.append((C.camera_info_topic(view.camera), L.camera_info(header, k, 2 * WIDTH, 2 * HEIGHT)))
        for view in views:
            msgs.append((C.image_topic(view.camera), L.rgb_image(Header(stamp, C.optical_frame(view.camera)),
                                                                 view.rgb)))
        steps.append((stamp, msgs))
    return static, steps


def write_bag(path: Path, static: MessageData, steps: list[tuple[int, Step]]) -> None:
    with BagWriter(path, "mcap") as bag:
        declared: set[str] = set()
        bag.add_topic(C.TF_STATIC_TOPIC, static.typename, latched=True)
        bag.write(C.TF_STATIC_TOPIC, steps[0][0], static)
        for stamp, msgs in steps:
            for topic, data in msgs:
                if topic not in declared:
                    bag.add_topic(topic, data.typename)
                    declared.add(topic)
                bag.write(topic, stamp, data)


def read_outputs(path: Path) -> dict[str, list]:
    store = typestore()
    out: dict[str, list] = defaultdict(list)
    with Reader(path) as reader:
        for conn, _t, raw in reader.messages():
            if conn.topic.startswith("/iggt/"):
                out[conn.topic].append(store.deserialize_cdr(raw, conn.msgtype))
    return out


def feed_node(h: Harness, static: MessageData, steps: list[tuple[int, Step]]) -> None:
    """Publish the steps in bag order, each gated on the node having taken the previous input."""
    from iggt_ros.ros.convert import to_rclpy

    node = h.node
    h.publish_raw("/tf_static", to_rclpy(static))
    for n, (_stamp, msgs) in enumerate(steps, start=1):
        for topic, data in msgs:
            if topic == C.TF_TOPIC:
                h.publish_raw("/tf", to_rclpy(data))
            elif topic.endswith("/camera_info"):
                cam = topic.strip("/").split("/")[0]
                h.publish_raw(f"{cam}/camera_info", to_rclpy(data))
                wait_for(lambda c=cam, d=data: (i := node.inputs.camera_info(c)) is not None
                         and i.width == int(d.fields["width"]) and _same_k(i.intrinsics, d), 30.0,
                         f"camera_info of '{cam}' at step {n}")
            else:
                cam = topic.strip("/").split("/")[0]
                h.publish_raw(f"{cam}/image_raw", to_rclpy(data))
        wait_for(lambda k=n: node.stats.frame_sets >= k, 60.0, f"frame set {n}")


def _same_k(k: np.ndarray, info: MessageData) -> bool:
    return bool(np.allclose(np.asarray(k).ravel(), np.asarray(info.fields["k"], float).ravel()))


def run_both(h: Harness, tmp_path: Path, seq, info: dict[str, str]) -> tuple[dict, dict, Any]:
    from rclpy.lifecycle import TransitionCallbackReturn

    from iggt_ros.apps.replay import replay_bag

    static, steps = inputs(seq, info)
    write_bag(tmp_path / "in", static, steps)
    config = IggtConfig().replace(**params(list(seq.rig.names)))
    summary = replay_bag(tmp_path / "in", tmp_path / "out", config, oracle(seq), report_dir=None,
                         save_query_state=False, embed=False)
    assert summary.windows >= 2 and not summary.stopped and summary.framesets == STEPS

    node = h.node
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    feed_node(h, static, steps)
    wait_for(lambda: node.worker.processed >= summary.windows, 120.0, f"{summary.windows} processed windows")
    topics = [t for t in read_outputs(tmp_path / "out") if t != "/iggt/detections"]

    def all_received() -> bool:
        replayed = read_outputs(tmp_path / "out")
        return all(len(h.messages(t)) >= len(replayed[t]) for t in topics)

    wait_for(all_received, 30.0, "every output message of the node")
    assert node.worker.processed == summary.windows and node.queue.stats().dropped == 0
    live = {t: h.messages(t) for t in topics}
    return live, read_outputs(tmp_path / "out"), summary


def oracle(seq) -> OracleEngine:
    return OracleEngine.from_sequence(seq, input_size=(HEIGHT, WIDTH), seed=3)


def header_of(msg) -> Any:
    """Frame and stamp of a message; a MarkerArray has none of its own, so those of its markers with their IDs."""
    if hasattr(msg, "markers"):
        return [(str(m.header.frame_id), stamp_ns(m.header.stamp), str(m.ns), int(m.id), int(m.action))
                for m in msg.markers]
    return str(msg.header.frame_id), stamp_ns(msg.header.stamp)


def assert_same_outputs(live: dict, replayed: dict, cameras: list[str]) -> None:
    assert set(replayed) >= {"/iggt/instances", "/iggt/points", "/iggt/markers"}
    for cam in cameras:
        assert f"/iggt/instance_image/{cam}" in replayed and f"/iggt/depth/{cam}" in replayed
    for topic, ours in replayed.items():
        if topic == "/iggt/detections":
            continue
        theirs = live[topic]
        assert len(theirs) == len(ours) > 0, topic
        for a, b in zip(theirs, ours, strict=True):
            assert header_of(a) == header_of(b), topic
    for cam in cameras:
        for a, b in zip(live[f"/iggt/instance_image/{cam}"], replayed[f"/iggt/instance_image/{cam}"], strict=True):
            np.testing.assert_array_equal(read_image(a), np.asarray(b.data).view("<u2").reshape(b.height, b.width))
        for a, b in zip(live[f"/iggt/depth/{cam}"], replayed[f"/iggt/depth/{cam}"], strict=True):
            np.testing.assert_allclose(read_image(a), np.asarray(b.data).view("<f4").reshape(b.height, b.width),
                                       rtol=1e-6, equal_nan=True)
    some_ids = False
    for a, b in zip(live["/iggt/instances"], replayed["/iggt/instances"], strict=True):
        rows_a = [(int(i.id), int(i.state), int(i.point_count), int(i.views_seen)) for i in a.instances]
        rows_b = [(int(i.id), int(i.state), int(i.point_count), int(i.views_seen)) for i in b.instances]
        assert rows_a == rows_b
        some_ids |= bool(rows_a)
        for ia, ib in zip(a.instances, b.instances, strict=True):
            np.testing.assert_allclose([ia.centroid.x, ia.centroid.y, ia.centroid.z],
                                       [ib.centroid.x, ib.centroid.y, ib.centroid.z], atol=1e-5)
    assert some_ids, "the windows produced instances to compare"
    for a, b in zip(live["/iggt/points"], replayed["/iggt/points"], strict=True):
        pa, pb = L.read_points(a), L.read_points(b)
        np.testing.assert_array_equal(pa["label"], pb["label"])
        np.testing.assert_allclose(np.stack([pa["x"], pa["y"], pa["z"]]), np.stack([pb["x"], pb["y"], pb["z"]]),
                                   atol=1e-5)


CASES = {
    "one camera": (1, ("ok",)),
    "two cameras": (2, ("ok", "ok")),
    "two cameras, no camera_info and another size": (2, ("none", "double")),
}


@pytest.mark.parametrize("case", list(CASES))
def test_node_and_replay_publish_the_same_outputs(harness_factory, input_path, tmp_path, case):  # noqa: F811
    cameras, kinds = CASES[case]
    seq = make_sequence(seed=6, num_steps=STEPS, cameras=cameras, trajectory="orbit", width=WIDTH, height=HEIGHT,
                        coverage=0.25, num_objects=4)
    names = list(seq.rig.names)
    info = dict(zip(names, kinds, strict=True))
    h = harness_factory(params(names), oracle(seq))
    live, replayed, summary = run_both(h, tmp_path, seq, info)
    assert_same_outputs(live, replayed, names)
    if "none" in kinds:
        assert any("intrinsics the model predicts" in w for w in summary.warnings)
    if "double" in kinds:
        assert any("K scaled to the image" in w for w in summary.warnings)
