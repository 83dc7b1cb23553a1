"""BagReader: decoded camera frames, TF poses and ground truth in time order; bad bags reported, not fatal."""

from __future__ import annotations

import io
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from iggt_ros.bag.reader import (
    BagError,
    BagReader,
    CameraImage,
    GroundTruthImage,
    GroundTruthObjects,
    StaticTransforms,
    TimeJump,
)
from iggt_ros.bag.sample import SampleBagSpec, write_sample_bag
from iggt_ros.bag.writer import BagWriter
from iggt_ros.messages import convention as C
from iggt_ros.messages import layouts as L
from iggt_ros.messages.message import Header, MessageData
from iggt_ros.perception.frames import CameraFrame
from iggt_ros.synthetic.sequence import iter_steps, plan_sequence

S = 1_000_000_000
K = np.array([[50.0, 0, 15.5], [0, 50.0, 11.5], [0, 0, 1]])
SPEC = SampleBagSpec(seed=2, cameras=2, frames=5, width=84, height=56)


@pytest.fixture(scope="module")
def sample_bags(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("reader")
    out = {}
    for storage in ("mcap", "sqlite3"):
        out[storage] = root / storage
        write_sample_bag(out[storage], SampleBagSpec(**{**SPEC.__dict__, "storage": storage}))
    return out


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_sample_bag_reads_as_decoded_events_with_poses(sample_bags, storage):
    plan = plan_sequence(SPEC.seed, num_steps=SPEC.frames, cameras=SPEC.cameras, width=SPEC.width,
                         height=SPEC.height)
    rendered = {(v.camera, v.stamp_ns): v for step in iter_steps(plan) for v in step}
    with BagReader(sample_bags[storage]) as reader:
        assert reader.cameras == ["front_left", "front_right"]
        assert reader.has_ground_truth
        events = list(reader)
    images = [e for e in events if isinstance(e, CameraImage)]
    assert len(images) == SPEC.frames * SPEC.cameras
    assert [e.stamp_ns for e in images] == sorted(e.stamp_ns for e in images)
    for img in images:
        view = rendered[(img.camera, img.stamp_ns)]
        np.testing.assert_array_equal(img.rgb, view.rgb)
        np.testing.assert_array_equal(img.intrinsics, view.intrinsics)
        np.testing.assert_allclose(img.world_from_camera, view.world_from_camera, atol=1e-9)
        assert img.frame_id == f"{img.camera}_optical_frame" and img.topic == f"/{img.camera}/image_raw"
        frame = img.to_frame()
        assert isinstance(frame, CameraFrame) and frame.image is img.rgb and frame.stamp_ns == img.stamp_ns
    gt = [e for e in events if isinstance(e, GroundTruthImage)]
    assert len(gt) == 2 * len(images)
    for g in gt:
        view = rendered[(g.camera, g.stamp_ns)]
        np.testing.assert_array_equal(g.array, view.instance_ids if g.kind == "instances" else view.depth)
    objects = [e for e in events if isinstance(e, GroundTruthObjects)]
    assert len(objects) == SPEC.frames
    assert {i.id for i in objects[-1].instances} == {o.id for o in plan.scene.objects}
    # within one time step, the images come before that step's ground truth objects
    assert events.index(objects[0]) > events.index(images[1])
    assert reader.report.warnings == [] and not reader.report.truncated and reader.report.skipped == {}
    assert reader.report.images_without_pose == 0
    # the camera mounts come once, as the bag has them (a replay copies them to its output)
    (static,) = [e for e in events if isinstance(e, StaticTransforms)]
    assert {(parent, child) for parent, child, _, _ in static.transforms} == {
        ("base_link", "front_left_optical_frame"), ("base_link", "front_right_optical_frame")}


def test_the_data_file_path_opens_its_bag_and_cameras_can_be_chosen(sample_bags):
    (data_file,) = sample_bags["mcap"].glob("*.mcap")
    with BagReader(data_file, cameras=["front_right"], read_ground_truth=False) as reader:
        events = list(reader)
    events = [e for e in events if not isinstance(e, StaticTransforms)]
    assert {type(e) for e in events} == {CameraImage}
    assert {e.camera for e in events} == {"front_right"} and len(events) == SPEC.frames


def test_errors_for_missing_bags_and_cameras(sample_bags, tmp_path):
    with pytest.raises(BagError, match="does not exist"):
        BagReader(tmp_path / "nope")
    with pytest.raises(BagError, match=r"no topic /rear/image_raw or /rear/image_raw/compressed.*"
                                       r"/front_left/image_raw, /front_right/image_raw"):
        BagReader(sample_bags["mcap"], cameras=["rear"])


def test_bag_without_camera_topics_is_refused_with_its_topic_list(tmp_path):
    with new_bag(tmp_path / "tf_only") as bag:
        bag.add_topic(C.TF_TOPIC, C.TF_TYPE)
        bag.add_topic("/gt/cam/image_raw", C.IMAGE_TYPE)  # ground truth is not a camera
        bag.write(C.TF_TOPIC, S, L.tf_message([L.TransformData("odom", "base_link", S, np.eye(4))]))
    with pytest.raises(BagError, match=r"no camera topics.*\n  /gt/cam/image_raw \(sensor_msgs/msg/Image\)\n"
                                       r"  /tf \(tf2_msgs/msg/TFMessage\)"):
        BagReader(tmp_path / "tf_only")


def new_bag(path: Path, storage: str = "mcap") -> BagWriter:
    return BagWriter(path, storage)


def write_camera_bag(path: Path, images: list[tuple[int, MessageData | None, bool]], compressed: bool = False,
                     tf: bool = True, info_size: tuple[int, int] = (32, 24), info_k: np.ndarray = K) -> None:
    """A one-camera bag 'cam': per entry (record time, image message or None, camera_info sent?)."""
    topic = C.compressed_topic("cam") if compressed else C.image_topic("cam")
    with new_bag(path) as bag:
        bag.add_topic(topic, C.COMPRESSED_TYPE if compressed else C.IMAGE_TYPE)
        bag.add_topic(C.camera_info_topic("cam"), C.CAMERA_INFO_TYPE)
        if tf:
            bag.add_topic(C.TF_TOPIC, C.TF_TYPE)
            bag.add_topic(C.TF_STATIC_TOPIC, C.TF_TYPE, latched=True)
            bag.write(C.TF_STATIC_TOPIC, images[0][0], L.tf_message(
                [L.TransformData("base_link", "cam_optical_frame", 0, np.eye(4))]))
        for record_ns, image, with_info in images:
            stamp = image.fields["header"]["stamp"] if image else None
            stamp_ns = stamp["sec"] * S + stamp["nanosec"] if stamp else record_ns
            if tf:
                pose = np.eye(4)
                pose[0, 3] = stamp_ns / S
                bag.write(C.TF_TOPIC, record_ns, L.tf_message([L.TransformData("odom", "base_link", stamp_ns, pose)]))
            if with_info:
                bag.write(C.camera_info_topic("cam"), record_ns,
                          L.camera_info(Header(stamp_ns, "cam_optical_frame"), info_k, *info_size))
            if image is not None:
                bag.write(topic, record_ns, image)


def rgb(stamp_ns: int, value: int = 0) -> MessageData:
    pixels = np.full((24, 32, 3), value, np.uint8)
    pixels[..., 1] = 7
    pixels[16:, 20:] = 200  # some structure: a flat image is dropped (no geometry)
    return L.rgb_image(Header(stamp_ns, "cam_optical_frame"), pixels)


def with_encoding(data: MessageData, encoding: str) -> MessageData:
    return MessageData(data.typename, {**data.fields, "encoding": encoding})


def test_unknown_encoding_warns_once_naming_topic_and_skips(tmp_path, caplog):
    frames = [((i + 1) * S, rgb((i + 1) * S, i), True) for i in range(5)]  # stamp 0 would be dropped
    for i in (2, 3):
        frames[i] = ((i + 1) * S, with_encoding(rgb((i + 1) * S), "64FC1"), True)
    write_camera_bag(tmp_path / "b", frames)
    with caplog.at_level(logging.WARNING, logger="iggt_ros.bag.reader"), BagReader(tmp_path / "b") as reader:
        images = [e for e in reader if isinstance(e, CameraImage)]
    assert [img.rgb[0, 0, 0] for img in images] == [0, 1, 4]
    assert reader.report.skipped == {"unsupported encoding": 2}
    warnings = [r.getMessage() for r in caplog.records if "64FC1" in r.getMessage()]
    assert len(warnings) == 1 and "'/cam/image_raw'" in warnings[0]
    # poses come from TF: odom -> base_link moves 1 m along x per second
    assert [img.world_from_camera[0, 3] for img in images] == [1.0, 2.0, 5.0]


def test_frames_before_the_first_camera_info_come_without_intrinsics_and_one_warning(tmp_path):
    # the node's rule: no image is lost while calibration is late, the engine's intrinsics place it
    write_camera_bag(tmp_path / "b", [((i + 1) * S, rgb((i + 1) * S, i), i >= 2) for i in range(5)])
    with BagReader(tmp_path / "b") as reader:
        images = [e for e in reader if isinstance(e, CameraImage)]
    assert [img.stamp_ns for img in images] == [(i + 1) * S for i in range(5)]
    assert [img.intrinsics is None for img in images] == [True, True, False, False, False]
    np.testing.assert_allclose(images[2].intrinsics, K)
    assert reader.report.skipped == {} and reader.report.images_without_camera_info == 2
    assert sum("no camera_info received yet for camera 'cam'" in w for w in reader.report.warnings) == 1


def test_looped_time_is_reported_and_poses_follow_the_new_loop(tmp_path):
    # the bag plays stamps 1..3 s twice, recorded one after the other; the first image after the loop is held
    # until the next one shows the sequence really started over (a single stamp out of sequence is dropped)
    frames = [((loop * 3 + i + 1) * S, rgb((i + 1) * S, 10 * loop + i), True) for loop in range(2) for i in range(3)]
    write_camera_bag(tmp_path / "b", frames)
    with BagReader(tmp_path / "b") as reader:
        events = [e for e in reader if not isinstance(e, StaticTransforms)]
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["CameraImage"] * 3 + ["TimeJump"] + ["CameraImage"] * 3
    jump = events[3]
    assert isinstance(jump, TimeJump) and (jump.topic, jump.from_ns, jump.to_ns) == ("/cam/image_raw", 3 * S, S)
    assert reader.report.time_jumps == [jump]
    assert [e.world_from_camera[0, 3] for e in events if isinstance(e, CameraImage)] == [1, 2, 3, 1, 2, 3]
    assert [e.rgb[0, 0, 0] for e in events if isinstance(e, CameraImage)] == [0, 1, 2, 10, 11, 12]
    assert reader.report.images_without_pose == 0


def test_compressed_camera_topics_are_decoded(tmp_path):
    def png(stamp_ns: int, value: int) -> MessageData:
        buf = io.BytesIO()
        pixels = np.full((24, 32, 3), value, np.uint8)
        pixels[16:, 20:] = 200  # some structure: a flat image is dropped (no geometry)
        Image.fromarray(pixels).save(buf, format="PNG")
        return MessageData(C.COMPRESSED_TYPE, {"header": Header(stamp_ns, "cam_optical_frame").to_plain(),
                                               "format": "png", "data": np.frombuffer(buf.getvalue(), np.uint8)})

    write_camera_bag(tmp_path / "b", [((i + 1) * S, png((i + 1) * S, 40 + i), True) for i in range(3)],
                     compressed=True)
    with BagReader(tmp_path / "b") as reader:
        assert reader.cameras == ["cam"]
        images = [e for e in reader if isinstance(e, CameraImage)]
    assert [img.rgb[5, 5].tolist() for img in images] == [[40] * 3, [41] * 3, [42] * 3]


def test_camera_info_for_another_size_is_scaled_to_the_image(tmp_path):
    write_camera_bag(tmp_path / "b", [((i + 1) * S, rgb((i + 1) * S), True) for i in range(2)], info_size=(64, 48),
                     info_k=K * [[2], [2], [1]], tf=False)
    with BagReader(tmp_path / "b") as reader:
        images = list(reader)
    np.testing.assert_allclose(images[0].intrinsics, K)
    assert sum("K scaled to the image" in w and "64x48" in w for w in reader.report.warnings) == 1
    # without TF the frames still come, without a pose, and the bag says so once
    assert images[0].world_from_camera is None and reader.report.images_without_pose == 2
    assert sum("no /tf or /tf_static" in w for w in reader.report.warnings) == 1


def big_sample(root: Path) -> Path:
    path = root / "big"
    write_sample_bag(path, SampleBagSpec(seed=1, cameras=1, frames=10, width=280, height=168))
    return path


def test_truncated_mcap_gives_the_intact_frames_and_stops_cleanly(tmp_path):
    path = big_sample(tmp_path)
    (data_file,) = path.glob("*.mcap")
    data = data_file.read_bytes()
    data_file.write_bytes(data[: int(len(data) * 0.6)])
    with BagReader(path) as reader:
        images = [e for e in reader if isinstance(e, CameraImage)]
    assert 1 <= len(images) < 10, len(images)
    print(f"{len(images)} of 10 frames intact")
    assert [e.stamp_ns for e in images] == sorted(e.stamp_ns for e in images)
    assert all(e.world_from_camera is not None for e in images)
    assert reader.report.truncated
    assert any("damaged" in w and "intact messages" in w for w in reader.report.warnings)


def test_unclosed_recording_without_metadata_is_read_from_the_mcap_file(tmp_path):
    path = big_sample(tmp_path)
    (path / "metadata.yaml").unlink()
    with BagReader(path) as reader:
        assert reader.cameras == ["front"]
        images = [e for e in reader if isinstance(e, CameraImage)]
    assert len(images) == 10 and not reader.report.truncated
    assert any("no metadata.yaml" in w for w in reader.report.warnings)


def test_damaged_sqlite3_bag_is_a_clear_error(tmp_path):
    path = tmp_path / "s"
    write_sample_bag(path, SampleBagSpec(seed=1, cameras=1, frames=3, width=84, height=56, storage="sqlite3"))
    (db,) = path.glob("*.db3")
    db.write_bytes(db.read_bytes()[: db.stat().st_size // 2])
    with pytest.raises(BagError, match=r"bag .*/s cannot be read: .*malformed"):
        BagReader(path)
    shutil.rmtree(path)
    with pytest.raises(BagError, match="does not exist"):
        BagReader(path)
