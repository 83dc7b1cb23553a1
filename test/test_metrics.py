"""Evaluation metrics on hand-computed cases."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from iggt_ros.eval.metrics import (
    DepthAccumulator,
    TemporalInstanceAccumulator,
    camera_positions,
    depth_metrics,
    pose_ate,
    temporal_instance_metrics,
)
from iggt_ros.spatial import umeyama_sim3


def two_object_view(left_id: int, right_id: int, shape: tuple[int, int] = (4, 8)) -> np.ndarray:
    """Left half filled with one ID, right half with another (0 = nothing)."""
    img = np.zeros(shape, dtype=np.uint16)
    img[:, : shape[1] // 2] = left_id
    img[:, shape[1] // 2 :] = right_id
    return img


# ------------------------------------------------------------------ temporal instance metrics


def test_perfect_prediction_scores_one() -> None:
    gt = [two_object_view(1, 2) for _ in range(5)]
    pred = [two_object_view(7, 9) for _ in range(5)]
    m = temporal_instance_metrics(pred, gt)
    assert m.t_miou == pytest.approx(1.0)
    assert m.t_sr == pytest.approx(1.0)
    assert m.matching == {1: 7, 2: 9}
    assert m.num_objects == 2 and m.num_views == 5


def test_id_swap_in_the_middle_lowers_t_miou_but_not_t_sr() -> None:
    # Five views; from view 3 on the tracker swaps the two IDs and keeps them swapped.
    gt = [two_object_view(1, 2) for _ in range(5)]
    pred = [two_object_view(10, 20)] * 3 + [two_object_view(20, 10)] * 2
    m = temporal_instance_metrics(pred, gt)
    # Summed IoU: (10,1) = 3, (20,1) = 2 -> 10 matches object 1 and 20 object 2, each right in 3 of 5 views.
    assert m.matching == {1: 10, 2: 20}
    assert m.per_object_miou == {1: pytest.approx(0.6), 2: pytest.approx(0.6)}
    assert m.t_miou == pytest.approx(0.6)
    # Both IDs stay non-empty in every view: success is unaffected by the swap.
    assert m.t_sr == pytest.approx(1.0)


def test_partial_overlap_iou_hand_computed() -> None:
    gt = np.zeros((4, 4), dtype=np.uint16)
    gt[0, :4] = 3  # 4 pixels
    pred = np.zeros((4, 4), dtype=np.uint16)
    pred[0, :2] = 5  # 2 of them
    pred[1, 0] = 5  # plus 1 outside -> IoU = 2 / (4 + 3 - 2) = 0.4
    gt2 = gt.copy()
    pred2 = gt.astype(np.uint16) * 0
    pred2[gt2 == 3] = 5  # perfect second view
    m = temporal_instance_metrics([pred, pred2], [gt, gt2])
    assert m.objects[0].t_miou == pytest.approx((0.4 + 1.0) / 2)
    assert m.t_sr == 1.0


def test_object_missing_in_one_view_fails_t_sr() -> None:
    gt = [two_object_view(1, 2) for _ in range(4)]
    pred = [two_object_view(10, 20) for _ in range(4)]
    pred[2] = two_object_view(10, 0)  # object 2 not predicted in view 2
    m = temporal_instance_metrics(pred, gt)
    scores = {o.gt_id: o for o in m.objects}
    assert scores[1].t_sr == 1.0
    assert scores[2].t_sr == 0.0
    assert scores[2].views_visible == 4 and scores[2].views_detected == 3
    assert scores[2].t_miou == pytest.approx(0.75)
    assert m.t_sr == pytest.approx(0.5)
    assert m.t_miou == pytest.approx((1.0 + 0.75) / 2)


def test_object_visible_only_sometimes_is_scored_on_its_visible_views() -> None:
    gt = [two_object_view(1, 2), two_object_view(1, 0), two_object_view(1, 0)]
    pred = [two_object_view(10, 20), two_object_view(10, 0), two_object_view(10, 0)]
    m = temporal_instance_metrics(pred, gt)
    obj2 = next(o for o in m.objects if o.gt_id == 2)
    assert obj2.views_visible == 1
    assert obj2.t_miou == pytest.approx(1.0) and obj2.t_sr == 1.0


def test_extra_unmatched_predicted_ids_do_not_change_matched_scores() -> None:
    gt = [two_object_view(1, 2, shape=(6, 8)) for _ in range(3)]
    base = [two_object_view(10, 20, shape=(6, 8)) for _ in range(3)]
    base[1] = two_object_view(20, 10, shape=(6, 8))
    ref = temporal_instance_metrics(base, gt)
    # Extra predicted IDs placed on background pixels (none in GT here, so add a background row).
    gt_bg = [np.vstack([g, np.zeros((2, 8), np.uint16)]) for g in gt]
    pred_extra = [np.vstack([p, np.full((2, 8), 30 + i, np.uint16)]) for i, p in enumerate(base)]
    pred_plain = [np.vstack([p, np.zeros((2, 8), np.uint16)]) for p in base]
    with_extra = temporal_instance_metrics(pred_extra, gt_bg)
    without = temporal_instance_metrics(pred_plain, gt_bg)
    assert with_extra.num_pred_ids == 5 and without.num_pred_ids == 2
    assert with_extra.matching == without.matching == ref.matching
    assert with_extra.per_object_miou == pytest.approx(without.per_object_miou)
    assert with_extra.per_object_miou == pytest.approx(ref.per_object_miou)
    assert with_extra.per_object_sr == without.per_object_sr


def test_unmatched_object_scores_zero_and_counts_in_mean() -> None:
    gt = [two_object_view(1, 2) for _ in range(2)]
    pred = [two_object_view(10, 0) for _ in range(2)]
    m = temporal_instance_metrics(pred, gt)
    obj2 = next(o for o in m.objects if o.gt_id == 2)
    assert obj2.pred_id is None and obj2.t_miou == 0.0 and obj2.t_sr == 0.0
    assert m.t_miou == pytest.approx(0.5) and m.t_sr == pytest.approx(0.5)
    assert m.matching == {1: 10}


def test_zero_overlap_is_not_a_match() -> None:
    # A predicted ID that never overlaps the object must not give it a success.
    gt = [two_object_view(1, 0)]
    pred = [two_object_view(0, 10)]
    m = temporal_instance_metrics(pred, gt)
    assert m.objects[0].pred_id is None and m.t_sr == 0.0


def test_one_prediction_covering_two_objects_matches_only_one() -> None:
    gt = [two_object_view(1, 2) for _ in range(2)]
    pred = [np.full((4, 8), 5, np.uint16) for _ in range(2)]
    m = temporal_instance_metrics(pred, gt)
    assert len(m.matching) == 1
    # IoU of the merged mask with either half is 0.5.
    assert m.t_miou == pytest.approx((0.5 + 0.0) / 2)


def test_ignored_gt_ids_and_negative_predictions() -> None:
    gt = np.array([[0, 255, 1, 1]], dtype=np.int32)
    pred = np.array([[-1, 4, 4, 4]], dtype=np.int32)
    m = temporal_instance_metrics([pred], [gt], ignore_gt_ids=(0, 255))
    assert [o.gt_id for o in m.objects] == [1]
    # Predicted 4 covers the ignored pixel too: IoU = 2 / 3.
    assert m.t_miou == pytest.approx(2 / 3)


def test_accumulator_matches_function_and_result_is_json() -> None:
    rng = np.random.default_rng(0)
    gt = [rng.integers(0, 6, size=(12, 16)).astype(np.uint16) for _ in range(7)]
    pred = [np.where(rng.random((12, 16)) < 0.8, g * 11, rng.integers(0, 90, (12, 16))) for g in gt]
    acc = TemporalInstanceAccumulator()
    for p, g in zip(pred, gt, strict=True):
        acc.add_view(p, g)
    a = acc.result()
    b = temporal_instance_metrics(pred, gt)
    assert a.to_dict() == b.to_dict()
    assert a.matching == {k: 11 * k for k in range(1, 6)}
    d = json.loads(json.dumps(a.to_dict()))
    assert set(d) >= {"t_miou", "t_sr", "num_objects", "num_views", "objects", "matching"}
    assert d["matching"]["3"] == 33


def test_large_sparse_ids_use_same_results() -> None:
    gt = [two_object_view(1, 2) for _ in range(3)]
    pred = [np.where(two_object_view(1, 2) == 1, 2_000_000_000, 7).astype(np.int64) for _ in range(3)]
    m = temporal_instance_metrics(pred, gt)
    assert m.matching == {1: 2_000_000_000, 2: 7}
    assert m.t_miou == pytest.approx(1.0)


def test_no_objects_gives_nan_and_json_null() -> None:
    m = temporal_instance_metrics([np.zeros((2, 2), np.uint16)], [np.zeros((2, 2), np.uint16)])
    assert m.num_objects == 0 and math.isnan(m.t_miou)
    assert json.loads(json.dumps(m.to_dict()))["t_miou"] is None


def test_bad_inputs_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="shape"):
        temporal_instance_metrics([np.zeros((2, 2), np.uint16)], [np.zeros((2, 3), np.uint16)])
    with pytest.raises(ValueError, match="views"):
        temporal_instance_metrics([np.zeros((2, 2), np.uint16)], [])
    with pytest.raises(ValueError, match="integer"):
        temporal_instance_metrics([np.zeros((2, 2), np.float32)], [np.zeros((2, 2), np.uint16)])


# ------------------------------------------------------------------ depth


def test_depth_scaled_by_constant_is_perfect() -> None:
    rng = np.random.default_rng(1)
    gt = rng.uniform(0.5, 8.0, size=(3, 10, 12))
    for alignment in ("per_view", "sequence"):
        m = depth_metrics(gt * 0.37, gt, alignment=alignment)
        assert m.abs_rel == pytest.approx(0.0, abs=1e-12)
        assert m.inlier_ratio == 1.0
        assert m.scale == pytest.approx(1 / 0.37)
        assert m.num_pixels == gt.size


def test_depth_per_view_versus_sequence_alignment() -> None:
    gt = np.ones((2, 2, 2))
    pred = np.stack([np.full((2, 2), 2.0), np.full((2, 2), 4.0)])
    per_view = depth_metrics(pred, gt, alignment="per_view")
    assert per_view.abs_rel == pytest.approx(0.0) and per_view.num_views == 2
    seq = depth_metrics(pred, gt, alignment="sequence")
    # One scale s = median(gt) / median(pred) = 1 / 3: errors |2/3 - 1| and |4/3 - 1| -> mean 1/3.
    assert seq.scale == pytest.approx(1 / 3)
    assert seq.abs_rel == pytest.approx(1 / 3)
    assert seq.inlier_ratio == 0.0


def test_depth_ratio_says_how_far_depth_as_given_is_from_the_truth() -> None:
    """The median of median(pred) / median(gt) over views, whatever the alignment scored."""
    gt = np.ones((3, 2, 2))
    pred = np.stack([np.full((2, 2), 0.5), np.full((2, 2), 2.0), np.full((2, 2), 3.0)])
    for alignment in ("per_view", "sequence", "none"):
        assert depth_metrics(pred, gt, alignment=alignment).ratio == pytest.approx(2.0)
    published = depth_metrics(pred, gt, alignment="none")
    assert published.abs_rel == pytest.approx((0.5 + 1.0 + 2.0) / 3) and published.scale == 1.0
    assert depth_metrics(gt, gt, alignment="none").ratio == pytest.approx(1.0)


def test_depth_hand_case_invalid_pixels_and_threshold() -> None:
    gt = np.array([[1.0, 2.0, 4.0, 0.0, 5.0]])
    pred = np.array([[1.0, 2.1, 4.0, 3.0, np.nan]])  # last two are invalid (gt 0, pred NaN)
    m = depth_metrics(pred, gt, alignment="none")
    assert m.num_pixels == 3
    assert m.abs_rel == pytest.approx((0 + 0.05 + 0) / 3)
    assert m.inlier_ratio == pytest.approx(2 / 3)  # 2.1 / 2 = 1.05 is an outlier
    masked = depth_metrics(pred, gt, valid=np.array([[True, False, True, True, True]]), alignment="none")
    assert masked.num_pixels == 2 and masked.abs_rel == 0.0


def test_depth_accumulator_equals_function_and_rejects_sequence() -> None:
    rng = np.random.default_rng(2)
    gt = rng.uniform(1, 3, size=(4, 5, 6))
    pred = gt * rng.uniform(0.9, 1.1, size=gt.shape) * 2.5
    acc = DepthAccumulator()
    for p, g in zip(pred, gt, strict=True):
        acc.add_view(p, g)
    assert acc.result() == depth_metrics(pred, gt)
    with pytest.raises(ValueError, match="per_view"):
        DepthAccumulator("sequence")


# ------------------------------------------------------------------ poses


def test_umeyama_recovers_known_similarity() -> None:
    rng = np.random.default_rng(3)
    src = rng.normal(size=(20, 3))
    rot = Rotation.from_euler("xyz", [30, -50, 120], degrees=True).as_matrix()
    s, t = 2.5, np.array([1.0, -2.0, 0.5])
    dst = s * src @ rot.T + t
    s_est, r_est, t_est = umeyama_sim3(src, dst)
    assert s_est == pytest.approx(s)
    np.testing.assert_allclose(r_est, rot, atol=1e-10)
    np.testing.assert_allclose(t_est, t, atol=1e-10)
    s_rigid, r_rigid, _ = umeyama_sim3(src, dst / s, with_scale=False)
    assert s_rigid == 1.0
    np.testing.assert_allclose(r_rigid, rot, atol=1e-10)


def test_umeyama_weights_ignore_outliers() -> None:
    rng = np.random.default_rng(4)
    src = rng.normal(size=(10, 3))
    dst = src + np.array([0.0, 0.0, 1.0])
    dst[0] += 100.0
    w = np.ones(10)
    w[0] = 0.0
    s, rot, t = umeyama_sim3(src, dst, weights=w)
    assert s == pytest.approx(1.0)
    np.testing.assert_allclose(rot, np.eye(3), atol=1e-10)
    np.testing.assert_allclose(t, [0, 0, 1], atol=1e-10)


def test_umeyama_degenerate_inputs() -> None:
    # No points, one point, coincident points: s = 1, R = I, centroid translation; never NaN.
    s, rot, t = umeyama_sim3(np.zeros((0, 3)), np.zeros((0, 3)))
    assert s == 1.0 and np.array_equal(rot, np.eye(3)) and np.array_equal(t, np.zeros(3))
    s, rot, t = umeyama_sim3(np.array([[1.0, 2, 3]]), np.array([[2.0, 2, 2]]))
    assert s == 1.0 and np.allclose(rot, np.eye(3)) and np.allclose(t, [1, 0, -1])
    s, rot, t = umeyama_sim3(np.ones((5, 3)), np.arange(15.0).reshape(5, 3))
    assert s == 1.0 and np.allclose(t, np.arange(15.0).reshape(5, 3).mean(0) - 1)
    # Collinear points: the line is aligned, R stays a proper rotation.
    src = np.outer(np.arange(5.0), [1.0, 0, 0])
    dst = np.outer(np.arange(5.0), [0, 2.0, 0]) + 1.0
    s, rot, t = umeyama_sim3(src, dst)
    assert s == pytest.approx(2.0) and np.linalg.det(rot) == pytest.approx(1.0)
    np.testing.assert_allclose(s * src @ rot.T + t, dst, atol=1e-10)
    # Non-finite rows are dropped.
    src = np.vstack([np.eye(3), [[np.nan, 0, 0]]])
    s, rot, t = umeyama_sim3(src, np.vstack([np.eye(3) * 3, [[0, 0, 0]]]))
    assert s == pytest.approx(3.0) and np.all(np.isfinite(rot))
    with pytest.raises(ValueError):
        umeyama_sim3(np.zeros((3, 3)), np.zeros((4, 3)))


def test_umeyama_never_returns_a_reflection() -> None:
    src = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])
    dst = src * np.array([1.0, 1.0, -1.0])  # a mirror image
    _, rot, _ = umeyama_sim3(src, dst)
    assert np.linalg.det(rot) == pytest.approx(1.0)


def test_ate_zero_for_similarity_transformed_trajectory() -> None:
    t = np.linspace(0, 2 * np.pi, 30)
    gt = np.stack([np.cos(t), np.sin(t), 0.1 * t], axis=1)
    rot = Rotation.from_rotvec([0.3, -0.2, 1.0]).as_matrix()
    pred = 0.4 * gt @ rot.T + np.array([5.0, 0, -1])
    m = pose_ate(pred, gt)
    assert m.ate_rmse == pytest.approx(0.0, abs=1e-9)
    assert m.scale == pytest.approx(1 / 0.4)
    assert m.num_poses == 30


def test_ate_hand_made_perturbation() -> None:
    # Square in the plane z = 0; two opposite corners pushed outwards by d along their diagonal.
    # The centroid stays and the cross-covariance stays symmetric positive semi-definite, so the
    # best rigid fit is the identity and the errors are d, 0, d, 0.
    gt = np.array([[1.0, 1, 0], [-1, 1, 0], [-1, -1, 0], [1, -1, 0]])
    pred = gt.copy()
    d = 0.1
    pred[0] += d * np.array([1.0, 1, 0]) / math.sqrt(2)
    pred[2] -= d * np.array([1.0, 1, 0]) / math.sqrt(2)
    m = pose_ate(pred, gt, with_scale=False)
    assert m.ate_rmse == pytest.approx(math.sqrt((2 * d**2) / 4))
    assert m.ate_max == pytest.approx(d)
    assert m.ate_mean == pytest.approx(d / 2)


def test_ate_from_poses_in_both_conventions() -> None:
    rng = np.random.default_rng(5)
    n = 6
    world_from_cam = np.tile(np.eye(4), (n, 1, 1))
    world_from_cam[:, :3, :3] = Rotation.from_rotvec(rng.normal(size=(n, 3))).as_matrix()
    world_from_cam[:, :3, 3] = rng.normal(size=(n, 3))
    cam_from_world = np.linalg.inv(world_from_cam)
    np.testing.assert_allclose(camera_positions(cam_from_world, camera_from_world=True), world_from_cam[:, :3, 3])
    m = pose_ate(cam_from_world[:, :3, :], world_from_cam, camera_from_world=False)
    assert m.ate_rmse > 0.1  # mixing conventions is detected as error
    m = pose_ate(world_from_cam, world_from_cam[:, :3, 3])
    assert m.ate_rmse == pytest.approx(0.0, abs=1e-9)
    assert json.loads(json.dumps(m.to_dict()))["num_poses"] == n


def test_drop_small_instances_removes_only_masks_below_the_area():
    import numpy as np

    from iggt_ros.eval.metrics import drop_small_instances

    ids = np.zeros((4, 5), np.uint16)
    ids[0, :3] = 7  # 3 px
    ids[1:, :] = 2  # 15 px
    ids[0, 4] = 9  # 1 px
    out = drop_small_instances(ids, 3)
    assert out.dtype == ids.dtype and out.shape == ids.shape
    assert (out[0, :3] == 7).all() and (out[1:] == 2).all() and out[0, 4] == 0
    assert set(np.unique(drop_small_instances(ids, 4))) == {0, 2}
