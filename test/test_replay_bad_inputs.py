"""Bad input bags: each gives a clear message, and the replay goes on or stops cleanly with what it has."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import Reader

from iggt_ros import cli
from iggt_ros.apps.replay import ReplayError, replay_bag
from iggt_ros.bag.convert import to_plain
from iggt_ros.bag.sample import SampleBagSpec, write_sample_bag
from iggt_ros.bag.typestore import typestore
from iggt_ros.bag.writer import BagWriter
from iggt_ros.config import IggtConfig
from iggt_ros.messages import convention as C
from iggt_ros.messages import layouts as L
from iggt_ros.messages.message import MessageData

W, H = 168, 112
FRAMES = 12

Plain = dict
Edit = Callable[[str, str, int, Plain], list[tuple[str, int, Plain]] | None]


def config() -> IggtConfig:
    return IggtConfig().replace(**{
        "engine.backend": "oracle", "input.image_width": W, "input.image_height": H, "window.size": 4,
        "window.stride": 2, "clustering.min_instance_area_px": 20, "query.region_encoder": "none"})


def plain(msg) -> Plain:
    """Plain fields of a deserialised message, without the constants rosbags keeps as fields."""
    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if not k.isupper()}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(to_plain(msg))


def rewrite(src: Path, dst: Path, edit: Edit) -> None:
    """Copy a bag message by message; `edit` returns the messages to write instead (None drops it)."""
    store = typestore()
    with Reader(src) as reader, BagWriter(dst, "mcap") as out:
        types = {c.topic: c.msgtype for c in reader.connections}
        declared: set[str] = set()
        for conn, t, raw in reader.messages():
            original = plain(store.deserialize_cdr(raw, conn.msgtype))
            for topic, time_ns, fields in edit(conn.topic, conn.msgtype, t, original) or []:
                if topic not in declared:
                    out.add_topic(topic, types[topic], latched=topic == C.TF_STATIC_TOPIC)
                    declared.add(topic)
                out.write(topic, time_ns, MessageData(types[topic], fields))


def read_back(path: Path) -> dict[str, list]:
    store = typestore()
    out: dict[str, list] = {}
    with Reader(path) as reader:
        for conn, t, raw in reader.messages():
            out.setdefault(conn.topic, []).append((t, store.deserialize_cdr(raw, conn.msgtype)))
    return out


@pytest.fixture(scope="module")
def base_bag(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bad") / "base"
    write_sample_bag(path, SampleBagSpec(seed=0, frames=FRAMES, width=W, height=H))
    return path


def test_bag_without_camera_topics_is_refused_before_writing(tmp_path, capsys):
    bag = tmp_path / "no_cams"
    with BagWriter(bag) as w:
        w.add_topic(C.TF_TOPIC, C.TF_TYPE)
        w.write(C.TF_TOPIC, 1, L.tf_message([L.TransformData("odom", "base_link", 1, np.eye(4))]))
    with pytest.raises(ReplayError, match="no camera topics.*\n.*/tf"):
        replay_bag(bag, tmp_path / "out", config())
    assert not (tmp_path / "out").exists()
    assert cli.main(["replay", str(bag), "-o", str(tmp_path / "out"), "--engine", "oracle", "--no-progress"]) == 2
    assert "no camera topics" in capsys.readouterr().err


def test_unknown_encoding_is_skipped_with_a_warning_naming_it(base_bag, tmp_path):
    def edit(topic, _type, t, msg):
        if topic == "/front/image_raw" and (msg["header"]["stamp"]["nanosec"] // 100_000_000) % 2:
            msg["encoding"] = "bayer_rggb16"
        return [(topic, t, msg)]

    rewrite(base_bag, tmp_path / "in", edit)
    s = replay_bag(tmp_path / "in", tmp_path / "out", config())
    assert s.skipped == {"unsupported encoding": FRAMES // 2}
    assert any("bayer_rggb16" in w and "/front/image_raw" in w for w in s.warnings)
    assert s.images_read == FRAMES // 2 and s.windows >= 2 and not s.stopped
    assert len(read_back(tmp_path / "out")["/front/image_raw"]) == FRAMES // 2
    assert s.report is not None and s.report.metrics["num_views"] == s.views


def test_cameras_of_different_sizes_keep_their_own_output_size(tmp_path):
    write_sample_bag(tmp_path / "two", SampleBagSpec(seed=0, cameras=2, frames=8, width=W, height=H))

    def edit(topic, msgtype, t, msg):
        if topic.startswith(("/front_right/", "/gt/front_right/")):
            if msgtype == C.CAMERA_INFO_TYPE:
                msg["k"] = msg["k"] / 2
                msg["k"][8] = 1.0
                msg["width"], msg["height"] = W // 2, H // 2
            else:
                step = msg["step"] // W
                arr = np.asarray(msg["data"]).reshape(H, W, step)[::2, ::2]
                msg.update(width=W // 2, height=H // 2, step=step * W // 2, data=arr.reshape(-1))
        return [(topic, t, msg)]

    rewrite(tmp_path / "two", tmp_path / "in", edit)
    s = replay_bag(tmp_path / "in", tmp_path / "out", config())
    assert any("different image sizes" in w and "84x56" in w for w in s.warnings)
    assert s.windows >= 2 and not s.stopped
    bag = read_back(tmp_path / "out")
    assert {(m.height, m.width) for _, m in bag["/iggt/instance_image/front_right"]} == {(H // 2, W // 2)}
    assert {(m.height, m.width) for _, m in bag["/iggt/depth/front_left"]} == {(H, W)}
    assert s.report.metrics["num_views_with_instance_gt"] == s.views == 2 * 8


def test_missing_camera_info(base_bag, tmp_path):
    # none at all: the frames are used as the node uses them, with the intrinsics the model predicts
    # (the oracle engine answers only views with camera_info, so those windows carry no geometry)
    rewrite(base_bag, tmp_path / "in_none", lambda topic, _m, t, msg: None if topic == "/front/camera_info"
            else [(topic, t, msg)])
    s = replay_bag(tmp_path / "in_none", tmp_path / "out_none", config())
    assert s.images_read == FRAMES and s.skipped == {} and s.windows >= 2 and not s.stopped
    assert any("/front/camera_info" in w and "intrinsics the model predicts" in w for w in s.warnings)
    bag = read_back(tmp_path / "out_none")
    assert "/front/camera_info" not in bag and len(bag["/front/image_raw"]) == FRAMES
    # late: the first frames are used without it, then with it; nothing is skipped
    infos = iter(range(100))
    rewrite(base_bag, tmp_path / "in_late", lambda topic, _m, t, msg: None if topic == "/front/camera_info"
            and next(infos) < 4 else [(topic, t, msg)])
    s = replay_bag(tmp_path / "in_late", tmp_path / "out_late", config())
    assert s.skipped == {} and s.images_read == FRAMES and s.windows >= 2
    assert sum("no camera_info received yet for camera 'front'" in w for w in s.warnings) == 1
    assert len(read_back(tmp_path / "out_late")["/front/camera_info"]) == FRAMES - 4


def test_truncated_bag_replays_its_intact_part(base_bag, tmp_path):
    import shutil

    shutil.copytree(base_bag, tmp_path / "in")
    (mcap,) = (tmp_path / "in").glob("*.mcap")
    data = mcap.read_bytes()
    mcap.write_bytes(data[: int(len(data) * 0.7)])
    s = replay_bag(tmp_path / "in", tmp_path / "out", config())
    assert s.truncated and not s.stopped
    assert 0 < s.images_read < FRAMES and s.windows >= 1
    assert any("damaged" in w for w in s.warnings)
    assert len(read_back(tmp_path / "out")["/front/image_raw"]) == s.images_read
    assert "cut short" in s.report.summary_md.read_text()


def test_looped_bag_restarts_the_pipeline(base_bag, tmp_path):
    span = (FRAMES + 1) * 100_000_000
    with Reader(base_bag) as reader:
        store = typestore()
        msgs = [(c.topic, c.msgtype, t, store.deserialize_cdr(raw, c.msgtype)) for c, t, raw in reader.messages()]
        types = {c.topic: c.msgtype for c in reader.connections}
    with BagWriter(tmp_path / "in") as out:
        for topic, msgtype in types.items():
            out.add_topic(topic, msgtype, latched=topic == C.TF_STATIC_TOPIC)
        for loop in range(2):  # recorded twice in a row: record time goes on, header stamps start over
            for topic, msgtype, t, msg in msgs:
                if topic == C.TF_STATIC_TOPIC and loop:
                    continue
                out.write(topic, t + loop * span, MessageData(msgtype, plain(msg)))
    s = replay_bag(tmp_path / "in", tmp_path / "out", config())
    single = replay_bag(base_bag, tmp_path / "out_single", config())
    assert s.time_jumps == 1 and not s.stopped
    assert any("time went backwards" in w for w in s.warnings)
    assert s.windows == 2 * single.windows and s.views == 2 * single.views
    bag = read_back(tmp_path / "out")
    times = [t for msgs in bag.values() for t, _ in msgs]
    assert len(times) == sum(s.output_counts.values())
    # after the restart the markers of the first loop's instances are deleted
    first_loop_ids = {i.id for _, m in bag["/iggt/instances"][: single.windows] for i in m.instances}
    restart = bag["/iggt/markers"][single.windows][1].markers
    deleted = {m.id for m in restart if m.action == L.MARKER_DELETE}
    kept = {i.id for i in bag["/iggt/instances"][single.windows][1].instances}
    assert (first_loop_ids - kept) <= deleted
    assert "Time jumped back" in s.report.summary_md.read_text()
