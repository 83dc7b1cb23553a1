"""Clustering, tracking, world alignment and the object map on hand-made inputs."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from iggt_ros.config import ClusteringConfig, InputConfig, MappingConfig, TrackingConfig
from iggt_ros.engine.base import ViewKey, WindowPrediction
from iggt_ros.perception.clustering import InstanceClusterer, run_hdbscan
from iggt_ros.perception.frames import CameraFrame
from iggt_ros.perception.mapping import Similarity, WorldAligner
from iggt_ros.perception.object_map import ObjectMap, gravity_aligned_box
from iggt_ros.perception.records import TrackState
from iggt_ros.perception.reframe import ReexpressibleObjectMap
from iggt_ros.perception.scaling import view_scale
from iggt_ros.perception.tracking import CONFIRMED, LOST, TENTATIVE, Detection, InstanceTracker

V, H, W = 4, 112, 168


def separated_vectors(n: int, dim: int = 8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out: list[np.ndarray] = []
    while len(out) < n:
        v = rng.normal(size=dim)
        v /= np.linalg.norm(v)
        if all(float(v @ u) < 0.5 for u in out):
            out.append(v)
    return np.stack(out)


def scene_labels(seed: int = 0) -> np.ndarray:
    """Background 0 plus boxes 1..5 in every view (object 5 is small), shifting a little per view."""
    labels = np.zeros((V, H, W), np.int64)
    for v in range(V):
        labels[v, 10 + v:40 + v, 10:50] = 1
        labels[v, 60:100, 20 + 2 * v:60 + 2 * v] = 2
        labels[v, 20:50, 80:120] = 3
        labels[v, 70:105, 110:160] = 4
        labels[v, 5:17, 140:152] = 5
    return labels


def features_for(labels: np.ndarray, noise: float = 0.05, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    vec = separated_vectors(int(labels.max()) + 1, seed=seed)
    gain = rng.uniform(0.5, 2.0, size=labels.shape + (1,))
    return ((vec[labels] + rng.normal(scale=noise, size=labels.shape + (8,))) * gain).astype(np.float32)


def points_for(labels: np.ndarray) -> np.ndarray:
    """Background spread over a wide area, objects compact: what tells structure from objects."""
    v, h, w = labels.shape
    yy, xx = np.meshgrid(np.linspace(-3, 3, h), np.linspace(-4, 4, w), indexing="ij")
    pts = np.stack([xx, yy, np.full_like(xx, 5.0)], -1)[None].repeat(v, 0)
    for k in range(1, int(labels.max()) + 1):
        pts[labels == k] = [k * 0.5, 0.0, 3.0] + 0.05 * pts[labels == k]
    return pts.astype(np.float32)


def purity_and_recall(pred: np.ndarray, gt: np.ndarray) -> dict[int, tuple[int, float]]:
    """Per true object: (majority predicted label, fraction of its pixels carrying it)."""
    out = {}
    for k in range(1, int(gt.max()) + 1):
        labs, counts = np.unique(pred[gt == k], return_counts=True)
        best = int(np.argmax(counts))
        out[k] = (int(labs[best]), float(counts[best] / counts.sum()))
    return out


# ---------------------------------------------------------------------- clustering
@pytest.mark.parametrize("backend", ["hdbscan", "fast_hdbscan"])
def test_clustering_recovers_objects_consistently_across_views(backend):
    gt = scene_labels()
    cl = InstanceClusterer(ClusteringConfig(backend=backend, min_instance_area_px=20))
    res = cl.cluster(features_for(gt), points=points_for(gt))
    found = purity_and_recall(res.labels, gt)
    labels = [lab for lab, _ in found.values()]
    assert all(lab > 0 for lab in labels) and len(set(labels)) == 5, found  # one label per object, incl. small 5
    assert all(frac > 0.97 for _, frac in found.values()), found
    for v in range(V):  # the same label in every view: 3D-consistent masks
        assert purity_and_recall(res.labels[v:v + 1], gt[v:v + 1]) == {
            k: (lab, pytest.approx(frac, abs=0.05)) for k, (lab, frac) in found.items()}
    assert (res.labels[gt == 0] == 0).mean() > 0.99  # the background is structure: label 0
    assert res.background_labels, "the background cluster must be reported as structure"


def test_clustering_all_noise_features_gives_no_instances(caplog):
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(V, H, W, 8)).astype(np.float32)
    with caplog.at_level(logging.WARNING):
        res = InstanceClusterer(ClusteringConfig()).cluster(feats)
    assert res.num_instances == 0 and not res.labels.any()
    assert "look like noise" in caplog.text and res.warnings


def test_clustering_nan_features_stay_unlabelled():
    gt = scene_labels()
    feats = features_for(gt)
    feats[0, 10:40, 10:50] = np.nan  # object 1 in view 0
    res = InstanceClusterer(ClusteringConfig(min_instance_area_px=20)).cluster(feats, points=points_for(gt))
    assert not res.labels[0, 10:40, 10:50].any()
    assert res.labels[1][gt[1] == 1].mean() > 0  # still found in the other views


def test_clustering_no_valid_pixel(caplog):
    gt = scene_labels()
    with caplog.at_level(logging.WARNING):
        res = InstanceClusterer(ClusteringConfig()).cluster(features_for(gt), valid=np.zeros(gt.shape, bool))
    assert res.num_instances == 0 and "no valid pixels" in caplog.text


def test_min_instance_area_drops_small_masks():
    gt = scene_labels()
    res = InstanceClusterer(ClusteringConfig(min_instance_area_px=200)).cluster(features_for(gt),
                                                                                points=points_for(gt))
    assert not res.labels[gt == 5].any()  # 144 px per view, 576 in the window: below 4x the minimum
    assert res.labels[gt == 1].all() or (res.labels[gt == 1] > 0).mean() > 0.97


@pytest.mark.parametrize(("height", "width", "stride", "read"),
                         [(336, 504, 4, 2), (168, 252, 2, 1), (112, 168, 1, 1), (84, 140, 1, 1)])
def test_patch_grid_follows_the_image_size(height, width, stride, read):
    scale = view_scale(ClusteringConfig(), height, width)
    assert (scale.stride_px, scale.read_px) == (stride, read)
    assert scale.patches_per_view >= 10000 and scale.min_cluster_size == 10  # same samples per object
    assert scale.min_instance_area_px == pytest.approx(0.0009 * height * width)
    assert view_scale(ClusteringConfig(min_instance_area_px=40), height, width).min_instance_area_px == 40


def test_views_too_small_for_the_patch_count_lower_min_cluster_size():
    scale = view_scale(ClusteringConfig(), 56, 84)
    assert scale.stride_px == 1 and scale.patch_density < 0.5
    assert scale.min_cluster_size == round(10 * scale.patch_density)
    assert view_scale(ClusteringConfig(patches_per_view=100000), 56, 84).min_cluster_size == 3


def small_view_scene(views: int = 8, height: int = 84, width: int = 140) -> np.ndarray:
    """One structure everywhere, a 5x5-px object in every view and a 4x4-px one in a single view."""
    labels = np.zeros((views, height, width), np.int64)
    for v in range(views):
        labels[v, 30:35, 20 + 3 * v:25 + 3 * v] = 1
    labels[5, 60:64, 100:104] = 2
    return labels


def test_small_objects_are_found_at_a_small_model_input_size():
    """At 140x84 a 5x5-px object gives as many samples as a 15x15-px one at 504x336."""
    gt = small_view_scene()
    res = InstanceClusterer(ClusteringConfig()).cluster(features_for(gt))
    found = purity_and_recall(res.labels, gt)
    assert found[1][0] > 0 and found[1][1] > 0.9, found
    assert found[2][0] > 0 and found[2][0] != found[1][0] and found[2][1] > 0.9, found


def test_one_structure_and_a_tiny_object_is_not_all_noise():
    """HDBSCAN sees one dense cluster and a group below min_cluster_size and calls it all noise; the
    structure is then taken as one cluster and the tiny object is found among what it does not explain."""
    def lattice(n: int, axis: int, dims: tuple[int, int]) -> np.ndarray:  # evenly spread: no sub-clusters
        side = int(np.ceil(np.sqrt(n)))
        out = np.zeros((n, 8))
        out[:, axis] = 1.0
        out[:, list(dims)] = 0.002 * np.stack(np.meshgrid(np.arange(side), np.arange(side)), -1).reshape(-1, 2)[:n]
        return out

    x = np.concatenate([lattice(1482, 0, (2, 3)), lattice(9, 1, (4, 5))])
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    assert (run_hdbscan(x, "hdbscan", 10, 5) < 0).all()  # the situation: all noise
    protos, _, noise = InstanceClusterer(ClusteringConfig(max_samples=2000))._cluster_candidates(
        x, np.ones(len(x)), 8, 10)
    assert noise == 1.0 and len(protos) == 2
    assert sorted(int(np.argmax(p)) for p in protos) == [0, 1]


# ---------------------------------------------------------------------- tracking
def det(label: int, centroid, proto, pixels: int = 1000, extent=(0.3, 0.3, 0.3)) -> Detection:
    return Detection(label, np.asarray(proto, float), np.asarray(centroid, float), np.asarray(extent, float),
                     pixel_count=pixels, views=2)


def keys(*stamps: int) -> list[ViewKey]:
    return [ViewKey("cam", s) for s in stamps]


def two_object_labels(swap: bool = False) -> np.ndarray:
    lab = np.zeros((2, 20, 40), np.int32)
    a, b = (2, 1) if swap else (1, 2)
    lab[:, 5:15, 2:12] = a
    lab[:, 5:15, 25:35] = b
    return lab


def test_tracker_keeps_ids_of_identical_duplicates_side_by_side():
    """Same features, side by side: position and shared-view IoU keep the IDs apart whatever the labels."""
    tr = InstanceTracker(TrackingConfig())
    proto = np.eye(8)[0]
    first = tr.update([det(1, [0, 0, 0], proto), det(2, [0.5, 0, 0], proto)], two_object_labels(), keys(1, 2), 2)
    ids = {1: int(first.label_to_id[1]), 2: int(first.label_to_id[2])}
    # next window: labels swapped, views 2 (shared) and 3 (new), centroids jittered
    second = tr.update([det(2, [0.02, 0.01, 0], proto), det(1, [0.49, 0, 0], proto)], two_object_labels(swap=True),
                       keys(2, 3), 3)
    assert int(second.label_to_id[2]) == ids[1] and int(second.label_to_id[1]) == ids[2]
    # a window without shared views: position alone decides
    third = tr.update([det(1, [0.51, 0, 0], proto), det(2, [-0.01, 0, 0], proto)], two_object_labels(),
                      keys(10, 11), 11)
    assert int(third.label_to_id[1]) == ids[2] and int(third.label_to_id[2]) == ids[1]
    assert all(t.state == CONFIRMED for t in tr.tracks.values())


@pytest.mark.parametrize("pass_table", [True, False])
def test_tracker_merge_carries_the_dropped_ids_pixels_to_the_next_window(pass_table):
    """After merging track b into a, the next window sees b's pixels of the shared view as a's: a detection on them,
    placed far off (only the strong overlap can match it), continues a."""
    tr = InstanceTracker(TrackingConfig())
    proto = np.eye(8)[0]
    first = tr.update([det(1, [0, 0, 0], proto), det(2, [0.5, 0, 0], proto)], two_object_labels(), keys(1, 2), 2)
    a, b = int(first.label_to_id[1]), int(first.label_to_id[2])
    tr.merge(a, b, first.label_to_id if pass_table else None)
    assert b not in tr.tracks
    lab = two_object_labels()
    lab[lab == 1] = 0  # only b's pixels, now labelled 1
    lab[lab == 2] = 1
    second = tr.update([det(1, [5.0, 5.0, 0], proto)], lab, keys(2, 3), 3)
    assert int(second.label_to_id[1]) == a


def test_tracker_states_and_reidentification():
    cfg = TrackingConfig(confirm_windows=2, lost_windows=2, forget_windows=3)
    tr = InstanceTracker(cfg)
    proto = np.eye(8)[1]
    empty = np.zeros((1, 4, 4), np.int32)
    lab = np.ones((1, 4, 4), np.int32)
    tid = int(tr.update([det(1, [1, 1, 0], proto)], lab, keys(1), 1).label_to_id[1])
    assert tr.tracks[tid].state == TENTATIVE
    tr.update([det(1, [1, 1, 0], proto)], lab, keys(2), 2)
    assert tr.tracks[tid].state == CONFIRMED
    tr.update([], empty, keys(3), 3)
    tr.update([], empty, keys(4), 4)
    assert tr.tracks[tid].state == LOST
    back = tr.update([det(1, [1.05, 1, 0], proto)], lab, keys(5), 5)
    assert int(back.label_to_id[1]) == tid and back.reidentified == [tid]
    assert tr.tracks[tid].state == CONFIRMED and tr.reidentifications == 1
    other = tr.update([det(1, [5, 5, 0], proto)], lab, keys(6), 6)  # far away: a new object
    assert int(other.label_to_id[1]) != tid
    for s in range(7, 7 + cfg.lost_windows + cfg.forget_windows):
        tr.update([], empty, keys(s), s)
    assert tid not in tr.tracks  # forgotten: bounded memory


def quarter_turn(scale: float = 2.0) -> Similarity:
    """new = scale * Rz(90 deg) @ old + (1, 2, 3)."""
    return Similarity(scale, np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]), np.array([1.0, 2.0, 3.0]))


def test_tracker_reexpress_moves_tracks_into_the_new_frame():
    """After re-expression the tracks are where the new frame sees the objects, and keep their IDs there."""
    tr = InstanceTracker(TrackingConfig(confirm_windows=1))
    proto = np.eye(8)[1]
    lab = two_object_labels()
    first = tr.update([det(1, [1, 0, 0], proto, extent=(0.4, 0.2, 0.1)), det(2, [3, 0, 0], proto)], lab, keys(1), 1)
    sim = quarter_turn()
    tr.reexpress(sim)
    tid = int(first.label_to_id[1])
    assert np.allclose(tr.tracks[tid].centroid, [1.0, 4.0, 3.0])
    assert np.allclose(tr.tracks[tid].extent, [0.4, 0.8, 0.2])  # x and y swap, everything doubles
    # the same objects seen in the new frame (labels swapped, no shared view) keep their IDs
    again = tr.update([det(1, sim.apply([3, 0, 0]), proto), det(2, sim.apply([1, 0, 0]), proto)],
                      two_object_labels(swap=True), keys(2), 2, metric=True)
    assert int(again.label_to_id[2]) == tid and not again.created


# ---------------------------------------------------------------------- mapping
def random_rotation(rng) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q @ np.diag(np.sign(np.diag(r)))
    return q if np.linalg.det(q) > 0 else -q


def synthetic_prediction(cam_poses: list[np.ndarray], s: float, r: np.ndarray, t: np.ndarray, h=28, w=28):
    """A prediction whose model frame is world -> model by model = s R world + t."""
    v = len(cam_poses)
    k = np.array([[20.0, 0, w / 2], [0, 20.0, h / 2], [0, 0, 1]])
    u, vv = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    ext = np.zeros((v, 3, 4), np.float32)
    pts = np.zeros((v, h, w, 3), np.float32)
    depth = np.zeros((v, h, w), np.float32)
    for i, wc in enumerate(cam_poses):
        d = 2.0 + 0.3 * np.sin(u / 5.0) + 0.2 * np.cos(vv / 7.0)
        cam = np.stack([(u - k[0, 2]) / k[0, 0] * d, (vv - k[1, 2]) / k[1, 1] * d, d], -1)
        world = cam @ wc[:3, :3].T + wc[:3, 3]
        pts[i] = s * world @ r.T + t
        depth[i] = s * d
        model_from_cam_r = r @ wc[:3, :3]
        model_from_cam_t = s * r @ wc[:3, 3] + t
        ext[i, :, :3] = model_from_cam_r.T
        ext[i, :, 3] = -model_from_cam_r.T @ model_from_cam_t
    ones = np.ones((v, h, w), np.float32)
    return WindowPrediction(ext, np.repeat(k[None], v, 0).astype(np.float32), depth, ones * 2, pts, ones * 2,
                            np.zeros((v, h, w, 8), np.float32), np.zeros((v, h, w, 3), np.uint8))


def cam_pose(x: float, yaw: float) -> np.ndarray:
    out = np.eye(4)
    c, s_ = np.cos(yaw), np.sin(yaw)
    out[:3, :3] = np.array([[c, 0, s_], [0, 1, 0], [-s_, 0, c]])
    out[:3, 3] = [x, 0.1 * x, 0.0]
    return out


def test_chained_windows_recover_the_unknown_similarity():
    rng = np.random.default_rng(3)
    aligner = WorldAligner(MappingConfig(), InputConfig(use_tf=False))
    poses = [cam_pose(0.2 * i, 0.05 * i) for i in range(6)]
    frames = [CameraFrame("cam", i, np.zeros((28, 28, 3), np.uint8)) for i in range(6)]
    first = synthetic_prediction(poses[0:4], 1.0, np.eye(3), np.zeros(3))
    a0 = aligner.align(first, keys(0, 1, 2, 3), frames[0:4], np.ones((4, 28, 28), bool))
    assert a0.mode == "first" and a0.frame_id == "iggt_map" and not a0.metric
    s, r, t = 2.7, random_rotation(rng), rng.normal(size=3)
    second = synthetic_prediction(poses[2:6], s, r, t)
    a1 = aligner.align(second, keys(2, 3, 4, 5), frames[2:6], np.ones((4, 28, 28), bool))
    assert a1.mode == "chain" and a1.num_correspondences >= 90  # 2 shared views x 7 x 7 grid points
    # the same world point through both windows lands at the same place
    w0 = a0.apply(first.world_points[2])
    w1 = a1.apply(second.world_points[0])
    assert np.abs(w0 - w1).max() < 1e-3
    assert a1.scale_ratio == pytest.approx(1 / s, rel=1e-3)


SCENE_K = np.array([[60.0, 0.0, 41.5], [0.0, 60.0, 27.5], [0.0, 0.0, 1.0]])
"""Intrinsics of the textured scene's 84x56 views (pixel centres at integer coordinates, as camera_info)."""


def scene_colour(points: np.ndarray) -> np.ndarray:
    """A texture painted on the scene's surfaces: colour is a function of the world point."""
    x, y, z = points[..., 0], points[..., 1], points[..., 2]
    chans = [127 + 100 * np.sin(7.0 * x + 3.1 * y + 2.3 * z + phase) * np.cos(4.3 * y - 2.9 * x + 1.7 * z + phase)
             for phase in (0.0, 2.1, 4.2)]
    return np.clip(np.stack(chans, -1), 0, 255).astype(np.uint8)


def textured_scene(cam_poses: list[np.ndarray], s: float, r: np.ndarray, t: np.ndarray,
                   centre_noise: float = 0.0, seed: int = 0, h: int = 56, w: int = 84):
    """A wall (world z = 3) and a floor (world y = 1), textured, seen by pinhole cameras; model = s R world + t.

    Depth, images and the point map are exact up to the similarity; `centre_noise` (world metres, before
    scaling) moves each predicted camera centre at random, as a model with a poor camera head does.
    Returns the prediction and the true world points of every pixel.
    """
    rng = np.random.default_rng(seed)
    v = len(cam_poses)
    u, vv = np.meshgrid(np.arange(w, dtype=float), np.arange(h, dtype=float))
    rays = np.stack([(u - SCENE_K[0, 2]) / SCENE_K[0, 0], (vv - SCENE_K[1, 2]) / SCENE_K[1, 1], np.ones_like(u)], -1)
    ext = np.zeros((v, 3, 4), np.float32)
    pts = np.zeros((v, h, w, 3), np.float32)
    world = np.zeros((v, h, w, 3))
    depth = np.zeros((v, h, w), np.float32)
    images = np.zeros((v, h, w, 3), np.uint8)
    for i, wc in enumerate(cam_poses):
        dirs = rays @ wc[:3, :3].T  # world direction per unit of depth
        c = wc[:3, 3]
        with np.errstate(divide="ignore", invalid="ignore"):
            t_wall = (3.0 - c[2]) / dirs[..., 2]
            t_floor = (1.0 - c[1]) / dirs[..., 1]
        d = np.where((t_floor > 0) & (t_floor < t_wall), t_floor, t_wall)
        world[i] = c + d[..., None] * dirs
        images[i] = scene_colour(world[i])
        pts[i] = s * world[i] @ r.T + t
        depth[i] = s * d
        centre = c + rng.normal(scale=centre_noise, size=3) if centre_noise else c
        model_from_cam_r = r @ wc[:3, :3]
        model_from_cam_t = s * r @ centre + t
        ext[i, :, :3] = model_from_cam_r.T
        ext[i, :, 3] = -model_from_cam_r.T @ model_from_cam_t
    ones = np.ones((v, h, w), np.float32)
    k = np.repeat(SCENE_K[None], v, 0).astype(np.float32)
    k[:, :2, 2] += 0.5  # the model's own intrinsics put pixel centres at half-integers
    pred = WindowPrediction(ext, k, depth, ones * 2, pts, ones * 2, np.zeros((v, h, w, 8), np.float32), images)
    return pred, world


def scene_frames(poses: list[np.ndarray], stamps: list[int], with_tf: bool = True) -> list[CameraFrame]:
    return [CameraFrame("cam", st, np.zeros((56, 84, 3), np.uint8), SCENE_K, "cam_optical", p if with_tf else None)
            for st, p in zip(stamps, poses, strict=True)]


def test_tf_alignment_is_metric_and_in_the_world_frame():
    """Scale from depth and images with the TF poses: right even when the model's camera centres are noise."""
    rng = np.random.default_rng(4)
    aligner = WorldAligner(MappingConfig(), InputConfig(world_frame="odom"))
    poses = [cam_pose(0.3 * i, 0.1 * i) for i in range(4)]
    pred, world = textured_scene(poses, 0.37, random_rotation(rng), rng.normal(size=3), centre_noise=0.5)
    a = aligner.align(pred, keys(0, 1, 2, 3), scene_frames(poses, [0, 1, 2, 3]), np.ones((4, 56, 84), bool))
    assert a.mode == "tf" and a.metric and a.frame_id == "odom" and a.scale_source == "tf"
    assert a.scale == pytest.approx(1 / 0.37, rel=0.03)
    assert np.allclose(a.camera_poses(pred.extrinsics), np.stack(poses))  # views placed by TF
    err = np.linalg.norm(a.view_points(pred) - world, axis=-1) / (pred.depth / 0.37)
    assert np.median(err) < 0.03  # the geometry is the metric depth where TF puts the cameras


def test_tf_scale_of_cameras_that_only_turn_is_unobservable(caplog):
    """No translation: no metric scale from TF; the window stays in the fallback frame, not metric."""
    aligner = WorldAligner(MappingConfig(), InputConfig(world_frame="odom"))
    poses = [cam_pose(0.0, 0.1 * i) for i in range(4)]
    pred, _ = textured_scene(poses, 0.37, np.eye(3), np.zeros(3))
    with caplog.at_level(logging.WARNING):
        a = aligner.align(pred, keys(0, 1, 2, 3), scene_frames(poses, [0, 1, 2, 3]), np.ones((4, 56, 84), bool))
    assert a.mode == "first" and a.frame_id == "iggt_map" and not a.metric
    assert any("metric scale is unobservable" in w for w in a.warnings)
    assert "metric scale is unobservable" in caplog.text


def test_tf_scale_of_cameras_that_mostly_turn_needs_a_sharp_fit():
    """A 4 cm step per view against a scene 1-3 m away (a pan): the fit's minimum is shallow (contrast about 1.7)
    and not trusted; twice the step gives a sharp one, which is; a walking baseline needs no more than the
    usual contrast."""
    from iggt_ros.perception.metric_scale import LOW_PARALLAX_CONTRAST, MIN_PARALLAX, fit_metric_scale

    k = np.repeat(SCENE_K[None], 4, 0)
    fits = {}
    for step in (0.04, 0.08, 0.3):
        poses = [cam_pose(step * i, 0.1 * i) for i in range(4)]
        pred, _ = textured_scene(poses, 0.37, np.eye(3), np.zeros(3))
        fits[step] = fit_metric_scale(pred.depth, np.ones((4, 56, 84), bool), pred.images, k, np.stack(poses))
    weak = fits[0.04]
    assert weak.scale is None and weak.parallax < MIN_PARALLAX and weak.contrast < LOW_PARALLAX_CONTRAST
    assert "mostly turn" in weak.reason
    for step in (0.08, 0.3):
        assert fits[step].scale == pytest.approx(1 / 0.37, rel=0.02), step
    assert fits[0.08].parallax < MIN_PARALLAX <= fits[0.3].parallax


def test_tf_scale_is_carried_through_shared_views():
    """A window that only turns keeps the metric scale through the views it shares with the previous one."""
    aligner = WorldAligner(MappingConfig(), InputConfig(world_frame="odom"))
    poses = [cam_pose(-0.6, 0.0), cam_pose(-0.3, 0.0), cam_pose(0.0, 0.0), cam_pose(0.0, 0.05),
             cam_pose(0.0, 0.1), cam_pose(0.0, 0.15)]
    valid = np.ones((4, 56, 84), bool)
    first, _ = textured_scene(poses[:4], 0.37, np.eye(3), np.zeros(3))
    a0 = aligner.align(first, keys(0, 1, 2, 3), scene_frames(poses[:4], [0, 1, 2, 3]), valid)
    assert a0.mode == "tf" and a0.scale == pytest.approx(1 / 0.37, rel=0.03)
    second, world = textured_scene(poses[2:], 2.2, np.eye(3), np.zeros(3))
    a1 = aligner.align(second, keys(2, 3, 4, 5), scene_frames(poses[2:], [2, 3, 4, 5]), valid)
    assert a1.mode == "tf" and a1.scale_source == "carried" and a1.metric
    assert a1.scale * 2.2 == pytest.approx(a0.scale * 0.37, rel=1e-3)  # the same metric depth as before
    assert np.median(np.abs(second.depth * a1.scale - second.depth / 2.2)) < 0.03


def test_late_tf_moves_the_whole_output_to_the_world_frame_once_and_a_dropout_keeps_it(caplog):
    """No TF, then TF for tf_settle_windows windows: the output moves to odom with the similarity that maps
    what was published in iggt_map onto the world; then TF drops out for a window: it stays in odom."""
    rng = np.random.default_rng(7)
    aligner = WorldAligner(MappingConfig(tf_settle_windows=2), InputConfig(world_frame="odom"))
    poses = [cam_pose(0.3 * i, 0.05 * i) for i in range(12)]
    valid = np.ones((4, 56, 84), bool)
    results = []
    for n, with_tf in enumerate((False, True, True, False, True)):
        stamps = list(range(2 * n, 2 * n + 4))
        pred, world = textured_scene([poses[i] for i in stamps], float(np.exp(rng.uniform(-1, 1))),
                                     random_rotation(rng), rng.normal(size=3))
        with caplog.at_level(logging.WARNING):
            a = aligner.align(pred, keys(*stamps), scene_frames([poses[i] for i in stamps], stamps, with_tf), valid)
        results.append((a, pred, world))
    frames = [a.frame_id for a, _, _ in results]
    assert frames == ["iggt_map", "iggt_map", "odom", "odom", "odom"]
    assert [a.mode for a, _, _ in results] == ["first", "chain", "tf", "chain", "tf"]
    assert [a.reexpress is not None for a, _, _ in results] == [False, False, True, False, False]
    # the similarity takes what window 1 published in iggt_map to where it is in the world
    sim = results[2][0].reexpress
    assert (sim.source, sim.target) == ("iggt_map", "odom")
    a1, pred1, world1 = results[1]
    moved = sim.apply(a1.view_points(pred1))
    assert np.median(np.linalg.norm(moved - world1, axis=-1)) < 0.03
    # the dropout: chained in odom at the metric scale, flagged, counted, warned about
    a3, pred3, world3 = results[3]
    assert a3.tf_dropout and a3.metric and a3.scale_source == "carried"
    assert np.median(np.linalg.norm(a3.view_points(pred3) - world3, axis=-1)) < 0.03
    assert aligner.tf_dropout_windows == 1 and "TF late or dropped out" in caplog.text
    assert not any(a.tf_dropout for i, (a, _, _) in enumerate(results) if i != 3)


def test_tf_from_the_first_window_needs_no_settling():
    aligner = WorldAligner(MappingConfig(tf_settle_windows=3), InputConfig(world_frame="odom"))
    poses = [cam_pose(0.3 * i, 0.1 * i) for i in range(4)]
    pred, _ = textured_scene(poses, 0.5, np.eye(3), np.zeros(3))
    a = aligner.align(pred, keys(0, 1, 2, 3), scene_frames(poses, [0, 1, 2, 3]), np.ones((4, 56, 84), bool))
    assert a.frame_id == "odom" and a.mode == "tf" and a.reexpress is None


def test_rig_baseline_gives_metric_scale_without_tf():
    aligner = WorldAligner(MappingConfig(rig_baseline_m=0.12), InputConfig(use_tf=False))
    left, right = cam_pose(0.0, 0.0), cam_pose(0.12, 0.0)
    right[:3, 3] = [0.12, 0.0, 0.0]
    pred = synthetic_prediction([left, right], 5.0, np.eye(3), np.zeros(3))
    frames = [CameraFrame("left", 0, np.zeros((28, 28, 3), np.uint8)),
              CameraFrame("right", 0, np.zeros((28, 28, 3), np.uint8))]
    a = aligner.align(pred, [ViewKey("left", 0), ViewKey("right", 0)], frames, np.ones((2, 28, 28), bool))
    assert a.metric and a.scale == pytest.approx(0.2, rel=1e-4)


# ---------------------------------------------------------------------- object map
def test_object_map_bounds_points_and_fits_a_gravity_aligned_box():
    cfg = MappingConfig(voxel_size_m=0.01, max_points_per_object=500)
    omap = ObjectMap(cfg)
    rng = np.random.default_rng(0)
    yaw = np.radians(30)
    local = rng.uniform([-0.4, -0.1, 0.0], [0.4, 0.1, 0.3], size=(5000, 3))
    rot = np.array([[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]])
    pts = local @ rot.T + [1.0, 2.0, 0.0]
    for w in range(3):
        omap.update(7, pts[w::3], np.zeros((len(pts[w::3]), 3), np.uint8), 2, 100 + w, w, TrackState.CONFIRMED)
    inst = omap.instance(7)
    assert inst.num_points <= 500 and inst.views_seen == 6 and inst.windows_seen == 3
    assert (inst.first_seen_ns, inst.last_seen_ns) == (100, 102)
    assert abs(np.degrees(inst.box_yaw) - 30) < 3
    assert np.allclose(inst.box_size, [0.8, 0.2, 0.3], atol=0.05)
    assert np.allclose(inst.box_center, [1.0, 2.0, 0.15], atol=0.03)


def test_object_map_merge_keeps_history():
    omap = ObjectMap(MappingConfig(voxel_size_m=0.05))
    pts = np.random.default_rng(1).uniform(0, 0.3, size=(300, 3))
    omap.update(1, pts, np.zeros((300, 3), np.uint8), 3, 10, 0)
    omap.update(2, pts + 0.001, np.zeros((300, 3), np.uint8), 1, 50, 5)
    assert omap.overlap(1, 2) > 0.5
    omap.set_label(2, "red cube", 0.8)
    omap.merge(1, 2)
    assert 2 not in omap and omap.merges == 1
    inst = omap.instance(1)
    assert (inst.first_seen_ns, inst.last_seen_ns, inst.views_seen) == (10, 50, 4)
    assert (inst.label, inst.score) == ("red cube", 0.8), "the kept instance had no label: it takes the merged one's"


def test_object_map_reexpress_moves_every_instance():
    cfg = MappingConfig(voxel_size_m=0.02, max_points_per_object=5000)
    omap = ReexpressibleObjectMap(cfg)
    rng = np.random.default_rng(2)
    a = rng.uniform([0, 0, 0], [0.4, 0.2, 0.1], size=(2000, 3))
    omap.update(1, a, np.full((2000, 3), 7, np.uint8), 2, 10, 0)
    omap.update(2, a + 2.0, np.zeros((2000, 3), np.uint8), 1, 20, 1)
    before = {i.id: i for i in omap.instances()}
    sim = quarter_turn(scale=3.0)  # e.g. the model's unit to metres
    omap.reexpress(sim)
    after = {i.id: i for i in omap.instances()}
    for iid in (1, 2):
        assert np.allclose(after[iid].centroid, sim.apply(before[iid].centroid), atol=0.02)
        assert after[iid].views_seen == before[iid].views_seen
    assert np.allclose(np.sort(after[1].box_size[:2]), [0.6, 1.2], atol=0.08)  # 3x the 0.2 x 0.4 footprint
    assert after[1].num_points == before[1].num_points  # spread out: nothing lost
    points, colours = omap.points(1)
    assert (colours == 7).all() and points.min(0)[1] >= 2.0 - 1e-4
    omap.reexpress(Similarity(0.1, np.eye(3), np.zeros(3)))  # shrunk: voxelised again at 2 cm, points merge
    assert omap.instance(1).num_points < before[1].num_points / 10


def test_box_of_no_points_is_empty():
    center, size, yaw = gravity_aligned_box(np.zeros((0, 3)))
    assert not center.any() and not size.any() and yaw == 0.0


def test_points_of_chosen_pixels_are_those_of_the_whole_view_grid():
    """The twin split places only the pixels it looks at (`pixel_points`); they must be the points `view_points`
    gives for the same pixels, in both alignment modes."""
    rng = np.random.default_rng(6)
    poses = [cam_pose(0.3 * i, 0.1 * i) for i in range(4)]
    pred, _ = textured_scene(poses, 0.37, random_rotation(rng), rng.normal(size=3))
    valid = np.ones((4, 56, 84), bool)
    v, y, x = rng.integers(0, 4, 200), rng.integers(0, 56, 200), rng.integers(0, 84, 200)
    for with_tf in (True, False):
        aligner = WorldAligner(MappingConfig(), InputConfig(world_frame="odom"))
        a = aligner.align(pred, keys(0, 1, 2, 3), scene_frames(poses, [0, 1, 2, 3], with_tf), valid)
        assert a.mode == ("tf" if with_tf else "first")
        np.testing.assert_allclose(a.pixel_points(pred, v, y, x), a.view_points(pred)[v, y, x], rtol=1e-5, atol=1e-5)
