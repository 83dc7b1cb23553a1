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
    # after the restart the markers still shown for the first loop's instances are deleted; those of instances
    # lost during the first loop went when they were lost
    first_loop_ids = {i.id for _, m in bag["/iggt/instances"][: single.windows] for i in m.instances}
    markers = bag["/iggt/markers"]
    shown = {m.id for m in markers[single.windows - 1][1].markers if m.action == L.MARKER_ADD}
    deleted_before = {m.id for _, msg in markers[: single.windows] for m in msg.markers if m.action == L.MARKER_DELETE}
    deleted = {m.id for m in markers[single.windows][1].markers if m.action == L.MARKER_DELETE}
    kept = {i.id for i in bag["/iggt/instances"][single.windows][1].instances}
    assert shown - kept and shown - kept <= deleted
    assert first_loop_ids - shown - kept <= deleted_before
    assert "Time jumped back" in s.report.summary_md.read_text()


# ---------------------------------------------------------------------------------------------- catalogue
# Each bad message of the core's rules (`iggt_ros.perception.input_checks`) costs only itself, is named with
# its topic and stamp, and is counted by reason; a real loop still restarts the pipeline (above).


@pytest.fixture(scope="module")
def base_run(base_bag, tmp_path_factory):
    return replay_bag(base_bag, tmp_path_factory.mktemp("base_run") / "out", config())


BAG_START_S = 1_700_000_000
"""Sample bags start at this stamp; time steps are 0.1 s apart."""


def image_index(msg: Plain) -> int:
    """Which time step of the sample bag a message is."""
    stamp = msg["header"]["stamp"]
    return round((stamp["sec"] - BAG_START_S + stamp["nanosec"] * 1e-9) * 10)


def at(step: int) -> str:
    """How a message names the stamp of a time step."""
    return f"at {BAG_START_S + step / 10:.3f} s"


def stamp_fields(ns: int) -> dict:
    return {"sec": ns // 1_000_000_000, "nanosec": ns % 1_000_000_000}


def edited_run(base_bag: Path, tmp_path: Path, edit: Edit):
    rewrite(base_bag, tmp_path / "in", edit)
    return replay_bag(tmp_path / "in", tmp_path / "out", config())


def one_image(step: int, change: Callable[[Plain], None]) -> Edit:
    """An edit that changes the /front/image_raw message of one time step."""
    def edit(topic, _type, t, msg):
        if topic == "/front/image_raw" and image_index(msg) == step:
            change(msg)
        return [(topic, t, msg)]
    return edit


def warned(s, *words: str) -> list[str]:
    return [w for w in s.warnings if all(word in w for word in words)]


def test_one_tf_with_a_nan_translation_is_dropped_alone(base_bag, base_run, tmp_path):
    import copy

    def edit(topic, _type, t, msg):
        out = [(topic, t, msg)]
        if topic == C.TF_TOPIC and image_index(msg["transforms"][0]) == 4:  # a glitched sample between two images
            bad = copy.deepcopy(msg)
            bad["transforms"][0]["header"]["stamp"]["nanosec"] += 50_000_000
            bad["transforms"][0]["transform"]["translation"]["x"] = float("nan")
            out.append((topic, t + 50_000_000, bad))
        return out

    s = edited_run(base_bag, tmp_path, edit)
    assert s.skipped == {"bad transform": 1} and not s.stopped and s.time_jumps == 0
    (text,) = warned(s, "/tf at", "non-finite")
    assert f"{BAG_START_S + 0.45:.3f} s" in text and "Check the node publishing" in text
    # only that sample is lost: every image has its pose, the windows and views are those of the clean bag
    assert s.images_read == FRAMES and s.windows == base_run.windows and s.views == base_run.views
    assert len(read_back(tmp_path / "out")[C.TF_TOPIC]) == FRAMES
    assert s.metrics["instances"]["t_miou"] == pytest.approx(base_run.metrics["instances"]["t_miou"])


def test_every_tf_nan_is_named_and_the_frames_are_used_without_poses(base_bag, tmp_path):
    def edit(topic, _type, t, msg):
        if topic == C.TF_TOPIC:
            msg["transforms"][0]["transform"]["rotation"]["w"] = float("nan")
        return [(topic, t, msg)]

    s = edited_run(base_bag, tmp_path, edit)
    assert s.skipped == {"bad transform": FRAMES} and not s.stopped
    assert warned(s, "/tf at", "non-finite") and warned(s, "no pose for frame")
    assert s.images_read == FRAMES and s.windows >= 2  # keyframes by image change, in the node's own frame
    assert C.TF_TOPIC not in read_back(tmp_path / "out")


def test_tf_static_with_infinity_is_named(base_bag, tmp_path):
    def edit(topic, _type, t, msg):
        if topic == C.TF_STATIC_TOPIC:
            msg["transforms"][0]["transform"]["translation"]["z"] = float("inf")
        return [(topic, t, msg)]

    s = edited_run(base_bag, tmp_path, edit)
    assert s.skipped == {"bad transform": 1} and not s.stopped
    assert warned(s, "/tf_static at", "non-finite")
    assert s.images_read == FRAMES and s.windows >= 2


def test_camera_info_with_nan_keeps_the_previous_calibration(base_bag, base_run, tmp_path):
    def edit(topic, _type, t, msg):
        if topic == "/front/camera_info" and image_index(msg) == 5:
            msg["k"] = np.array(msg["k"], dtype=np.float64)
            msg["k"][2] = float("nan")
        return [(topic, t, msg)]

    s = edited_run(base_bag, tmp_path, edit)
    assert s.skipped == {"bad camera_info": 1} and not s.stopped
    (text,) = warned(s, f"/front/camera_info {at(5)}", "non-finite")
    assert "previous calibration" in text
    assert s.images_read == FRAMES and s.windows == base_run.windows


@pytest.mark.parametrize("change, why", [
    (lambda m: m.update(width=0, height=0, step=0, data=np.zeros(0, np.uint8)), "no pixels"),
    (lambda m: m.update(data=np.asarray(m["data"])[: len(m["data"]) // 2]), "cut short"),
    (lambda m: m.update(width=m["width"] + 8), "one row of rgb8 needs"),
])
def test_empty_truncated_or_missized_image_costs_only_itself(base_bag, base_run, tmp_path, change, why):
    s = edited_run(base_bag, tmp_path, one_image(6, change))
    assert s.skipped == {"malformed image": 1} and not s.stopped
    (text,) = warned(s, f"/front/image_raw {at(6)}", why)
    assert s.images_read == FRAMES - 1 and s.windows >= base_run.windows - 1 and s.windows >= 2
    assert len(read_back(tmp_path / "out")["/front/image_raw"]) == FRAMES - 1


@pytest.mark.parametrize("value, kind", [(0, "black image"), (255, "saturated image"), (128, "constant image")])
def test_flat_images_are_flagged_and_give_no_geometry(base_bag, tmp_path, value, kind):
    s = edited_run(base_bag, tmp_path, one_image(3, lambda m: m.update(
        data=np.full(len(m["data"]), value, np.uint8))))
    assert s.skipped == {kind: 1} and not s.stopped
    (text,) = warned(s, f"/front/image_raw {at(3)}", "carries no geometry")
    assert "lens cap" in text
    out = read_back(tmp_path / "out")
    assert len(out["/front/image_raw"]) == FRAMES - 1
    published = {m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for _, m in out["/iggt/depth/front"]}
    assert (BAG_START_S * 10**9 + 300_000_000) not in published and published


def test_all_black_images_publish_nothing_and_say_why(base_bag, tmp_path):
    def edit(topic, _type, t, msg):
        if topic == "/front/image_raw":
            msg["data"] = np.zeros(len(msg["data"]), np.uint8)
        return [(topic, t, msg)]

    s = edited_run(base_bag, tmp_path, edit)
    assert s.skipped == {"black image": FRAMES} and s.windows == 0 and not s.stopped
    assert warned(s, "the image is black") and warned(s, "no camera image")
    assert "/iggt/points" not in read_back(tmp_path / "out")


def test_one_image_stamped_zero_is_dropped_without_a_reset(base_bag, base_run, tmp_path):
    def edit(topic, _type, t, msg):
        if topic.endswith(("/front/image_raw",)) and image_index(msg) == 6:
            msg["header"]["stamp"] = stamp_fields(0)
        return [(topic, t, msg)]

    s = edited_run(base_bag, tmp_path, edit)
    assert s.skipped == {"zero stamp": 1} and s.time_jumps == 0 and not s.stopped
    (text,) = warned(s, "/front/image_raw at 0.000 s", "stamp is 0")
    assert "time source" in text
    t_miou = s.metrics["instances"]["t_miou"]
    assert t_miou >= base_run.metrics["instances"]["t_miou"] - 0.05
    assert s.metrics["instances"]["num_pred_ids"] <= base_run.metrics["instances"]["num_pred_ids"] + 1


def test_every_stamp_zero_is_named(base_bag, tmp_path):
    def edit(topic, _type, t, msg):
        if topic == "/front/image_raw":
            msg["header"]["stamp"] = stamp_fields(0)
        return [(topic, t, msg)]

    s = edited_run(base_bag, tmp_path, edit)
    assert s.skipped == {"zero stamp": FRAMES} and s.windows == 0
    assert warned(s, "stamp is 0") and warned(s, "no camera image", "zero stamp")


@pytest.mark.parametrize("offset_s", [-0.35, +1000.0, -1000.0])
def test_one_far_or_backward_stamp_is_a_glitch_not_a_loop(base_bag, base_run, tmp_path, offset_s):
    def edit(topic, _type, t, msg):
        if topic == "/front/image_raw" and image_index(msg) == 7:
            stamp = msg["header"]["stamp"]
            ns = stamp["sec"] * 10**9 + stamp["nanosec"] + int(offset_s * 1e9)
            msg["header"]["stamp"] = stamp_fields(max(ns, 1))
        return [(topic, t, msg)]

    s = edited_run(base_bag, tmp_path, edit)
    assert s.skipped == {"stamp jump": 1} and s.time_jumps == 0 and not s.stopped
    (text,) = warned(s, "/front/image_raw at", "glitch, not a loop")
    assert "nothing was reset" in text
    assert s.images_read == FRAMES - 1
    assert s.metrics["instances"]["t_miou"] >= base_run.metrics["instances"]["t_miou"] - 0.05


def test_duplicate_stamp_drops_the_repeat(base_bag, base_run, tmp_path):
    def edit(topic, _type, t, msg):
        out = [(topic, t, msg)]
        if topic == "/front/image_raw" and image_index(msg) == 4:
            out.append((topic, t + 1, msg))
        return out

    s = edited_run(base_bag, tmp_path, edit)
    assert s.skipped == {"duplicate stamp": 1} and s.time_jumps == 0
    assert warned(s, f"/front/image_raw {at(4)}", "same header stamp")
    assert s.images_read == FRAMES and s.windows == base_run.windows


def test_image_far_larger_than_the_model_input_is_used_and_said(tmp_path):
    big_w, big_h = W * 5, H * 5
    write_sample_bag(tmp_path / "big", SampleBagSpec(seed=0, frames=6, width=big_w, height=big_h))
    cfg = config().replace(**{"input.image_width": 56, "input.image_height": 28})
    s = replay_bag(tmp_path / "big", tmp_path / "out", cfg)
    assert s.flagged == {"large image": 6} and s.skipped == {} and s.images_read == 6
    (text,) = warned(s, "/front/image_raw at", f"{big_w}x{big_h}", "model input 56x28")
    assert "image_proc" in text and s.windows >= 1


def test_output_bag_is_self_contained_and_every_message_decodes_with_the_mcap_readers(base_run):
    """A viewer reads the output with the mcap + mcap-ros2 libraries alone and can place every output frame."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    (path,) = base_run.output_bag.glob("*.mcap")
    counts: dict[str, int] = {}
    static, depth_frames = [], set()
    with path.open("rb") as f:
        for _schema, channel, _message, decoded in make_reader(
                f, decoder_factories=[DecoderFactory()]).iter_decoded_messages():
            counts[channel.topic] = counts.get(channel.topic, 0) + 1
            if channel.topic == C.TF_STATIC_TOPIC:
                static.append(decoded)
            elif channel.topic == "/iggt/depth/front":
                depth_frames.add(decoded.header.frame_id)
    assert counts == base_run.output_counts and counts[C.TF_STATIC_TOPIC] == 1
    mounts = {(t.header.frame_id, t.child_frame_id) for m in static for t in m.transforms}
    assert mounts == {("base_link", "front_optical_frame")}
    assert depth_frames == {"front_optical_frame"}


# ---------------------------------------------------------------------------------------------- several cameras
# With several cameras a time step needs every camera's image to form: a bad image leaves its place, so the step
# forms with the other cameras and only the bad image is lost, never the good images taken with it.


@pytest.fixture(scope="module")
def two_camera_bag(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("two_cams") / "base"
    write_sample_bag(path, SampleBagSpec(seed=0, cameras=2, frames=FRAMES, width=W, height=H))
    return path


@pytest.fixture(scope="module")
def two_camera_run(two_camera_bag, tmp_path_factory):
    return replay_bag(two_camera_bag, tmp_path_factory.mktemp("two_cams_run") / "out", config())


def shifted(seconds_: float) -> Callable[[Plain], None]:
    def change(msg: Plain) -> None:
        stamp = msg["header"]["stamp"]
        msg["header"]["stamp"] = stamp_fields(stamp["sec"] * 10**9 + stamp["nanosec"] + int(seconds_ * 1e9))
    return change


@pytest.mark.parametrize("kind, change", [
    ("black image", lambda m: m.update(data=np.zeros(len(m["data"]), np.uint8))),
    ("malformed image", lambda m: m.update(width=0, height=0, step=0, data=np.zeros(0, np.uint8))),
    ("malformed image", lambda m: m.update(data=np.asarray(m["data"])[: len(m["data"]) // 2])),
    ("zero stamp", lambda m: m["header"].update(stamp=stamp_fields(0))),
    ("stamp jump", shifted(-1000.0)),
    ("stamp jump", shifted(+1000.0)),
], ids=["black", "0x0", "truncated", "zero-stamp", "glitch-back", "glitch-forward"])
@pytest.mark.parametrize("bad_camera", ["front_left", "front_right"])
def test_a_bad_image_of_one_camera_costs_only_itself(two_camera_bag, two_camera_run, tmp_path, kind, change,
                                                     bad_camera):
    good_camera = ({"front_left", "front_right"} - {bad_camera}).pop()
    bad_step = 6

    def edit(topic, _type, t, msg):
        if topic == f"/{bad_camera}/image_raw" and image_index(msg) == bad_step:
            change(msg)
        return [(topic, t, msg)]

    s = edited_run(two_camera_bag, tmp_path, edit)
    assert s.skipped == {kind: 1} and s.time_jumps == 0 and not s.stopped
    (text,) = warned(s, f"/{bad_camera}/image_raw at")  # said once, naming the topic, the stamp and what to do
    assert "check" in text.lower()
    # the good camera's image of that step formed a time step of its own and reached the outputs
    assert s.framesets == FRAMES and s.images_read == 2 * FRAMES - 1
    assert two_camera_run.views == 2 * FRAMES and s.views == 2 * FRAMES - 1  # the README's 23 of 24
    assert s.windows == two_camera_run.windows
    out = read_back(tmp_path / "out")
    bad_stamp = (BAG_START_S * 10**9) + bad_step * 100_000_000

    def published(camera: str) -> set[int]:
        return {m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for _, m in out[f"/iggt/depth/{camera}"]}

    assert bad_stamp in published(good_camera) and bad_stamp not in published(bad_camera)
    assert len(published(good_camera)) == FRAMES and len(published(bad_camera)) == FRAMES - 1
