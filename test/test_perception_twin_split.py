"""Instances whose points fall apart in 3D become one instance per part (perception.twin_split).

Unit cases on hand-made windows (two identical objects side by side under one label; one object seen with
noisy or inconsistent depth), and the whole pipeline on a scene with identical duplicates under an engine
whose instance head gives both objects of a pair the same features, as appearance-driven heads do.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from iggt_ros.config import IggtConfig
from iggt_ros.engine.preprocess import resize_nearest
from iggt_ros.eval.metrics import drop_small_instances
from iggt_ros.eval.record import RunRecord
from iggt_ros.perception.clustering import ClusterResult
from iggt_ros.perception.frames import CameraFrame, FrameSet
from iggt_ros.perception.pipeline import Pipeline
from iggt_ros.perception.twin_split import split_parts
from iggt_ros.synthetic.spec import SceneSpec
from iggt_ros.train.evaluate import duplicate_pairs_kept, oracle_engine_factory

GAP_M = IggtConfig().clustering.split_gap_m
H, W = 40, 60
PX_M = 0.01
"""Size of a pixel on the objects' front faces (a plane 2 m in front of the camera)."""


def plane_points(views: int, depth_m: float = 2.0) -> np.ndarray:
    """[V,H,W,3] points of a fronto-parallel plane seen the same way by every view: pixel (y, x) at (x, y, z) cm."""
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    one = np.stack([xs * PX_M, ys * PX_M, np.full((H, W), depth_m, np.float32)], axis=-1)
    return np.repeat(one[None], views, axis=0)


def cluster_of(labels: np.ndarray) -> ClusterResult:
    k = int(labels.max())
    v = labels.shape[0]
    counts = np.stack([np.bincount(labels[i].ravel(), minlength=k + 1) for i in range(v)]).astype(np.int64)
    protos = np.eye(k, 8, dtype=np.float32)
    return ClusterResult(labels.astype(np.int32), protos, counts)


def at(points: np.ndarray, step: int):
    """The points of pixels, from [V,h,w,3] points of every `step`-th pixel (what the pipeline's alignment gives)."""
    return lambda v, y, x: points[v, y // step, x // step]


def naive_parts(pts: np.ndarray, link: float) -> np.ndarray:
    """Sizes of the parts a plain single-linkage at `link` finds (what a rule without guards would split)."""
    pairs = cKDTree(pts).query_pairs(link, output_type="ndarray")
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(len(pts), len(pts)))
    return np.bincount(connected_components(graph, directed=False)[1])


def test_two_identical_objects_side_by_side_become_two_instances_in_every_view():
    # label 1 (one feature direction) covers two 15-px-wide objects 9 cm apart; label 2 is a third object
    v = 3
    labels = np.zeros((v, H, W), np.int32)
    labels[:, 10:30, 5:20] = 1
    labels[:, 10:30, 29:44] = 1
    labels[:, 5:15, 48:58] = 2
    points = plane_points(v)
    points[:, :, 48:58, 2] -= 0.3  # the third object stands in front
    out = split_parts(cluster_of(labels), at(points, 1), 1, GAP_M)

    assert out.num_instances == 3
    left, right = out.labels[0, 20, 10], out.labels[0, 20, 35]
    assert {int(left), int(right)} == {1, 3}  # the larger part keeps the label, the other is new
    for i in range(v):  # the same split in every view: the parts are found over the window's views jointly
        assert (out.labels[i, 10:30, 5:20] == left).all() and (out.labels[i, 10:30, 29:44] == right).all()
        assert (out.labels[i, 5:15, 48:58] == 2).all()
        assert (out.labels[i][labels[i] == 0] == 0).all()
    np.testing.assert_array_equal(out.prototypes[2], out.prototypes[0])  # the new instance has its source's feature
    assert out.pixel_counts.shape == (v, 4)
    assert out.pixel_counts[:, 1].tolist() == [300] * v and out.pixel_counts[:, 3].tolist() == [300] * v


def test_objects_touching_in_the_image_but_apart_in_depth_are_split():
    # one object right behind the other: one connected piece in the image, two places 40 cm apart in depth
    labels = np.zeros((2, H, W), np.int32)
    labels[:, 10:30, 10:25] = 1
    labels[:, 10:30, 25:40] = 1
    points = plane_points(2)
    points[:, :, 25:40, 2] += 0.4
    out = split_parts(cluster_of(labels), at(points, 1), 1, GAP_M)
    assert out.num_instances == 2
    assert len(np.unique(out.labels[:, 10:30, 10:25])) == 1 and len(np.unique(out.labels[:, 10:30, 25:40])) == 1
    assert out.labels[0, 20, 12] != out.labels[0, 20, 30]


def test_one_object_with_noisy_depth_stays_one_instance():
    # a 30x40-px object at 4 cm a pixel whose depth is off by a different amount on every 10x10-px block (a
    # coarse depth head: sigma 8 cm), differently in each view
    rng = np.random.default_rng(3)
    labels = np.zeros((2, H, W), np.int32)
    labels[:, 5:35, 10:50] = 1
    points = plane_points(2)
    points[..., :2] *= 4.0
    points[..., 2] += np.kron(rng.normal(scale=0.08, size=(2, H // 10, W // 10)), np.ones((10, 10)))
    pts = points[labels > 0]
    assert (naive_parts(pts, GAP_M) >= 0.05 * len(pts)).sum() >= 2  # a plain 5-cm linkage cuts it apart
    out = split_parts(cluster_of(labels), at(points, 1), 1, GAP_M)
    assert out.num_instances == 1
    np.testing.assert_array_equal(out.labels, labels)


def test_one_object_whose_views_disagree_about_its_depth_stays_one_instance():
    # the second view's depth is 10 % too long: its points of the object lie 20 cm behind the first view's
    labels = np.zeros((2, H, W), np.int32)
    labels[:, 5:35, 10:50] = 1
    points = plane_points(2)
    points[1, ..., 2] *= 1.1
    pts = points[labels > 0]
    assert (naive_parts(pts, GAP_M) >= 0.3 * len(pts)).sum() == 2
    out = split_parts(cluster_of(labels), at(points, 1), 1, GAP_M)
    assert out.num_instances == 1


def test_flying_pixels_at_a_depth_edge_do_not_split_an_object():
    # a column of edge pixels carries the wall's depth, 1 m behind the object
    labels = np.zeros((2, H, W), np.int32)
    labels[:, 5:35, 10:40] = 1
    points = plane_points(2)
    points[:, 5:35, 39, 2] += 1.0
    out = split_parts(cluster_of(labels), at(points, 1), 1, GAP_M)
    assert out.num_instances == 1


def test_points_at_a_coarser_stride_split_every_pixel():
    labels = np.zeros((2, H, W), np.int32)
    labels[:, 10:30, 5:20] = 1
    labels[:, 10:30, 29:44] = 1
    step = 2
    points = plane_points(2)[:, ::step, ::step]
    points[..., 0] *= step  # the points of every second pixel: x = column * 1 cm
    points[..., 1] *= step
    out = split_parts(cluster_of(labels), at(points, step), step, GAP_M)
    assert out.num_instances == 2
    assert len(np.unique(out.labels[:, 10:30, 5:20])) == 1 and len(np.unique(out.labels[:, 10:30, 29:44])) == 1
    assert out.labels[0, 20, 10] != out.labels[0, 20, 35]


# ---------------------------------------------------------------------------------------------- pipeline

def run_twins(split_gap_m: float):
    sequence = SceneSpec(seed=931_007, cameras=1, frames=24, trajectory="orbit", num_objects=8, room="room",
                         coverage=0.5, duplicate_pairs=3).make()
    hw, min_px = (84, 140), 20
    cfg = IggtConfig().replace(**{
        "input.cameras": sequence.rig.names, "input.image_height": hw[0], "input.image_width": hw[1],
        "window.size": 8, "window.stride": 4, "window.min_translation_m": 0.0, "window.min_rotation_deg": 0.0,
        "window.min_image_change": 0.0, "clustering.min_instance_area_px": min_px,
        "clustering.split_gap_m": split_gap_m})
    pipe = Pipeline(cfg, oracle_engine_factory(hw, twin_blind=True)(sequence))
    truth = {(v.camera, v.stamp_ns): v for v in sequence.views()}
    record = RunRecord("oracle")
    for step in sequence.steps:
        frames = {v.camera: CameraFrame(v.camera, v.stamp_ns, v.rgb, v.intrinsics, f"{v.camera}_optical",
                                        v.world_from_camera) for v in step}
        result = pipe.push(FrameSet(step[0].stamp_ns, frames))
        for i, view in enumerate(result.views if result is not None else []):
            if view.new:
                gt = drop_small_instances(resize_nearest(truth[(view.camera, view.stamp_ns)].instance_ids, hw), min_px)
                record.add_view(result.instance_images[i], gt)
    return sequence, record.instances.result()


@pytest.fixture(scope="module")
def twins_split():
    return run_twins(GAP_M)


def test_identical_duplicates_with_the_same_features_keep_their_own_ids(twins_split):
    sequence, metrics = twins_split
    pairs, kept = duplicate_pairs_kept(sequence, metrics)
    assert pairs >= 2 and kept == 1.0, (pairs, kept)
    for o in sequence.scene.objects:  # each twin its own ID over the whole sequence: the tracker follows the parts
        if o.duplicate_of and o.id in metrics.matching and o.duplicate_of in metrics.matching:
            assert metrics.matching[o.id] != metrics.matching[o.duplicate_of]
    assert metrics.num_pred_ids <= len(sequence.scene.objects)


def test_without_the_split_identical_duplicates_are_one_instance():
    sequence, metrics = run_twins(0.0)
    pairs, kept = duplicate_pairs_kept(sequence, metrics)
    assert pairs >= 2 and kept == 0.0, (pairs, kept)


def test_points_on_top_of_each_other_at_the_models_scale_leave_the_instance_whole():
    # every pixel at one point and no metric gap: the link distance is 0, and nothing can be told apart
    labels = np.zeros((2, H, W), np.int32)
    labels[:, 10:30, 5:20] = 1
    labels[:, 10:30, 29:44] = 1
    cluster = cluster_of(labels)
    assert split_parts(cluster, at(np.zeros((2, H, W, 3), np.float32), 1), 1, 0.0) is cluster
