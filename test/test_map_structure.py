"""Lifelong map quality: scene structure stays out of the map, and objects that come back get their ID back."""

from __future__ import annotations

import numpy as np
import pytest

from iggt_ros.config import IggtConfig, MappingConfig, TrackingConfig
from iggt_ros.engine.base import ViewKey
from iggt_ros.engine.oracle import OracleEngine
from iggt_ros.perception import reidentify, structure
from iggt_ros.perception.frames import CameraFrame, FrameSet
from iggt_ros.perception.object_map import ObjectMap
from iggt_ros.perception.pipeline import Pipeline
from iggt_ros.perception.records import TrackState
from iggt_ros.perception.tracking import Detection, InstanceTracker, Track
from iggt_ros.synthetic.sequence import make_sequence

W, H = 168, 112
NO_COLOUR = np.zeros((1, 3), np.uint8)


def surface(rng, size, centre, n=600) -> np.ndarray:
    """Points on the faces of a box of `size` around `centre` (what a camera sees of an object)."""
    pts = rng.uniform(-0.5, 0.5, size=(n, 3))
    axis = rng.integers(0, 3, size=n)
    pts[np.arange(n), axis] = np.sign(pts[np.arange(n), axis]) * 0.5
    return (pts * np.asarray(size) + np.asarray(centre)).astype(np.float32)


def add(omap: ObjectMap, tracker: InstanceTracker, tid: int, pts: np.ndarray, stamp: int, window: int,
        state=TrackState.CONFIRMED, misses: int = 0) -> None:
    omap.update(tid, pts, np.repeat(NO_COLOUR, len(pts), 0), 1, stamp, window, state)
    centre, size = omap.extent(tid)
    tracker.tracks[tid] = Track(tid, state, np.eye(8)[tid % 8], centre, size, misses=misses, first_seen_ns=stamp,
                                last_seen_ns=stamp)


# ---------------------------------------------------------------------------------------------------- structure
def test_the_size_rule_and_what_is_published():
    assert structure.too_large(np.array([0.4, 2.6, 1.0]), 2.5)
    assert not structure.too_large(np.array([0.4, 2.4, 1.0]), 2.5)
    assert not structure.too_large(np.array([40.0, 1.0, 1.0]), 0.0), "0 turns the rule off"
    tracker = InstanceTracker(TrackingConfig())
    for tid in (3, 5):
        tracker.tracks[tid] = Track(tid, TrackState.CONFIRMED, np.ones(8), np.zeros(3), np.ones(3))
    tracker.tracks[5].structure = True
    lut = np.array([0, 3, 5, 3], np.uint16)
    assert structure.published(lut, tracker).tolist() == [0, 3, 0, 3]
    assert lut.tolist() == [0, 3, 5, 3], "the tracker's own table keeps the ID (it matches the next window with it)"


def test_an_instance_whose_mapped_box_outgrows_the_limit_becomes_structure():
    rng = np.random.default_rng(0)
    omap, tracker = ObjectMap(MappingConfig()), InstanceTracker(TrackingConfig())
    add(omap, tracker, 1, surface(rng, [0.5, 0.4, 0.6], [0, 0, 0.3]), 1, 1)
    wall = np.stack([np.linspace(2, 3.5, 400), np.full(400, 1.0), rng.uniform(0, 1, 400)], 1).astype(np.float32)
    add(omap, tracker, 2, wall, 1, 1)  # 1.5 m seen so far: an object, for now
    assert structure.check_map(omap, tracker, [1, 2], 2.5) == []
    omap.update(2, wall + [1.5, 0, 0], np.repeat(NO_COLOUR, 400, 0), 1, 2, 2)  # more of the wall: 3 m
    assert structure.check_map(omap, tracker, [1, 2], 2.5) == [2]
    assert 2 not in omap and tracker.tracks[2].structure and not tracker.tracks[1].structure


def sequence():
    return make_sequence(3, num_steps=16, cameras=1, trajectory="walk", width=W, height=H, num_objects=6)


def run(seq, **overrides):
    flat = {"input.cameras": seq.rig.names, "input.image_width": W, "input.image_height": H,
            "window.size": 4, "window.stride": 2, "window.min_translation_m": 0.0, "window.min_rotation_deg": 0.0,
            "window.min_image_change": 0.0, "clustering.min_instance_area_px": 20, "mapping.max_cloud_points": 5000}
    flat.update(overrides)
    truth = {ViewKey(v.camera, int(v.stamp_ns)): v for v in seq.views()}
    pipe = Pipeline(IggtConfig().replace(**flat), OracleEngine(truth, input_size=(H, W), seed=2))
    results = []
    for step in seq.steps:
        res = pipe.push(FrameSet(step[0].stamp_ns, {v.camera: CameraFrame(v.camera, v.stamp_ns, v.rgb, v.intrinsics,
                                                                           f"{v.camera}_optical", v.world_from_camera)
                                                    for v in step}))
        if res is not None:
            results.append(res)
    return pipe, results


@pytest.fixture(scope="module")
def seq():
    return sequence()


def test_pipeline_keeps_structure_out_of_the_map_images_and_cloud(seq):
    pipe, results = run(seq)
    assert results[-1].metric and pipe.snapshot().instances
    assert all(max(i.box_size) <= 2.5 for i in pipe.snapshot().instances)
    # every object is "structure" under a 1 cm limit: tracked, but nothing is published or mapped
    pipe, results = run(seq, **{"mapping.max_object_size_m": 0.01})
    assert results[-1].metric and pipe.tracker.tracks
    assert all(t.structure for t in pipe.tracker.tracks.values())
    assert not pipe.snapshot().instances and pipe.map_size().instances == 0
    for res in results:
        assert not res.instance_images.any() and not res.instances
        assert len(res.cloud) and not res.cloud["label"].any(), "the points stay in the cloud, unlabelled"


def test_a_window_at_the_models_own_scale_marks_nothing(seq):
    pipe, results = run(seq, **{"mapping.max_object_size_m": 0.01, "input.use_tf": False})
    assert not results[-1].metric
    assert pipe.snapshot().instances and not any(t.structure for t in pipe.tracker.tracks.values())


# ---------------------------------------------------------------------------------------------------- re-identification
def test_two_sides_of_one_object_are_folded_into_the_older_id():
    rng = np.random.default_rng(1)
    cfg = MappingConfig(voxel_size_m=0.02)
    omap, tracker = ObjectMap(cfg), InstanceTracker(TrackingConfig())
    box = surface(rng, [0.4, 0.3, 0.5], [1.0, 1.0, 0.25], n=3000)
    add(omap, tracker, 4, box[:1800], stamp=10, window=1, state=TrackState.LOST, misses=5)  # seen earlier
    # seen again 2 cm off (depth noise, another viewpoint): few voxels coincide, most are adjacent
    add(omap, tracker, 9, box[1200:] + [0.021, 0.0, 0.0], stamp=50, window=7)
    assert omap.overlap(4, 9) < 0.5 <= omap.near_fraction(4, 9, 2 * cfg.voxel_size_m)
    lut = np.array([0, 9], np.uint16)
    assert reidentify.fold(tracker, omap, [9], cfg.voxel_size_m, lut) == [(4, 9)]
    assert lut.tolist() == [0, 4], "this window's images already carry the kept ID"
    assert 9 not in omap and 9 not in tracker.tracks
    assert tracker.tracks[4].state == TrackState.CONFIRMED and tracker.tracks[4].reidentified == 1


def test_objects_seen_apart_or_far_apart_are_not_folded():
    rng = np.random.default_rng(2)
    cfg = MappingConfig(voxel_size_m=0.02)
    omap, tracker = ObjectMap(cfg), InstanceTracker(TrackingConfig())
    box = surface(rng, [0.3, 0.3, 0.3], [0.0, 0.0, 0.15], n=2000)
    add(omap, tracker, 1, box, 10, 1, state=TrackState.LOST, misses=4)
    add(omap, tracker, 2, box + [0.005, 0, 0], 20, 2)  # the same place, but the two were detected apart once
    tracker.tracks[1].co_visible.add(2)
    tracker.tracks[2].co_visible.add(1)
    add(omap, tracker, 3, box + [0.36, 0, 0], 20, 2)  # an identical object 6 cm beside it: touching, not the same
    assert reidentify.fold(tracker, omap, [2, 3], cfg.voxel_size_m) == []
    assert {1, 2, 3} <= set(tracker.tracks)


def test_a_track_that_becomes_lost_is_compared_as_the_whole_mapped_object():
    rng = np.random.default_rng(3)
    omap, tracker = ObjectMap(MappingConfig()), InstanceTracker(TrackingConfig(lost_windows=3))
    full = surface(rng, [0.6, 0.6, 0.6], [2.0, 0.0, 0.3], n=3000)
    add(omap, tracker, 1, full, 10, 1, state=TrackState.LOST, misses=3)
    track = tracker.tracks[1]
    track.centroid, track.extent = np.array([1.75, 0.0, 0.3]), np.array([0.1, 0.6, 0.6])  # the last side seen
    assert reidentify.refresh_lost(tracker, omap) == [1]
    assert np.allclose(track.centroid, [2.0, 0.0, 0.3], atol=0.1) and np.allclose(track.extent, 0.6, atol=0.08)
    track.misses = 4  # refreshed once, when it became lost
    track.centroid = np.zeros(3)
    assert reidentify.refresh_lost(tracker, omap) == [] and not track.centroid.any()


def detection(label, centroid, extent, proto):
    return Detection(label, np.asarray(proto, float), np.asarray(centroid, float), np.asarray(extent, float), 100, 1)


@pytest.mark.parametrize("state, matched", [(TrackState.CONFIRMED, False), (TrackState.LOST, True)])
def test_the_position_kernel_of_a_lost_track_spans_its_other_side(state, matched):
    tracker = InstanceTracker(TrackingConfig(lost_windows=3))
    extent = np.array([0.4, 0.4, 0.4])
    sigma = 0.5 * float(np.linalg.norm(extent))
    labels = np.ones((1, 8, 8), np.int32)
    tracker.update([detection(1, [0, 0, 0], extent, np.eye(8)[0])], labels, [ViewKey("cam", 1)], 1)
    track = tracker.tracks[1]
    track.state, track.misses = state, 3 if state == TrackState.LOST else 1
    # the other side of the object: 2 kernel widths away (1 once widened), an embedding of another window
    result = tracker.update([detection(1, [2 * sigma, 0, 0], extent, np.eye(8)[1])], labels, [ViewKey("cam", 2)], 2)
    assert (result.label_to_id[1] == 1) == matched
    assert (result.created == []) == matched
