"""The training losses: contrastive instance loss, camera loss, confidence-weighted depth/point losses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from iggt_ros.model.geometry import extri_intri_to_pose_encoding
from iggt_ros.train.losses import (
    camera_loss,
    contrastive_pair_loss,
    depth_loss,
    instance_loss,
    normalize_truth,
    point_loss,
    sample_pixels,
)


def _separated(ids: torch.Tensor, dim: int = 8) -> torch.Tensor:
    """One orthogonal unit direction per instance (pairwise distance sqrt(2) > margin), scaled per pixel."""
    feats = torch.zeros(len(ids), dim)
    feats[torch.arange(len(ids)), ids] = 1.0
    return feats * torch.linspace(0.5, 3.0, len(ids))[:, None]  # the loss normalises, so scale is free


def test_contrastive_zero_for_separated_features():
    ids = torch.tensor([0, 0, 1, 1, 2, 2, 2, 3])
    assert contrastive_pair_loss(_separated(ids), ids).item() == pytest.approx(0.0, abs=1e-5)


def test_contrastive_positive_for_swapped_features():
    ids = torch.tensor([0, 0, 1, 1, 2, 2])
    feats = _separated(ids)
    swapped = feats[[0, 2, 1, 3, 4, 5]]  # one pixel of instance 0 and one of instance 1 trade features
    loss = contrastive_pair_loss(swapped, ids).item()
    # 2 of the 4 same-instance pairs are sqrt(2) apart and 2 different-instance pairs have distance 0
    assert loss > 0.5


def test_contrastive_push_term_respects_the_margin():
    ids = torch.tensor([0, 1])
    angle = torch.tensor(1.2)  # chord 2*sin(0.6) = 1.13 > margin
    far = torch.stack([torch.tensor([1.0, 0.0]), torch.stack([angle.cos(), angle.sin()])])
    assert contrastive_pair_loss(far, ids).item() == pytest.approx(0.0, abs=1e-6)
    near = torch.tensor([[1.0, 0.0], [1.0, 0.1]])
    assert contrastive_pair_loss(near, ids).item() == pytest.approx(1.0 - 0.1 / np.sqrt(1.01), rel=1e-3, abs=2e-3)


def test_contrastive_gradient_step_pulls_same_instance_together_and_lowers_the_loss():
    torch.manual_seed(0)
    ids = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2])
    feats = torch.randn(len(ids), 8, requires_grad=True)
    loss0 = contrastive_pair_loss(feats, ids)
    loss0.backward()

    def spread(f: torch.Tensor) -> float:
        f = torch.nn.functional.normalize(f, dim=-1)
        return float(sum(torch.cdist(f[ids == k], f[ids == k]).mean() for k in range(3)))

    def closest_other(f: torch.Tensor) -> float:
        d = torch.cdist(torch.nn.functional.normalize(f, dim=-1), torch.nn.functional.normalize(f, dim=-1))
        return float(d[ids[:, None] != ids[None, :]].min())

    with torch.no_grad():
        stepped = feats - 0.05 * feats.grad
    assert contrastive_pair_loss(stepped, ids).item() < loss0.item()
    assert spread(stepped) < spread(feats.detach())
    assert closest_other(stepped) >= closest_other(feats.detach()) - 1e-6


def test_instance_loss_samples_all_views_jointly():
    # The same object in two views: identical features in both views -> zero loss; a different
    # feature per view (window-local identity) -> positive loss, which only a cross-view loss sees.
    ids = torch.zeros(1, 2, 4, 4, dtype=torch.long)
    ids[:, :, :, 2:] = 1
    feats = torch.zeros(1, 2, 8, 4, 4)
    feats[:, :, 0][ids == 0] = 1.0
    feats[:, :, 1][ids == 1] = 1.0
    gen = torch.Generator().manual_seed(0)
    assert instance_loss(feats, ids, samples=64, generator=gen).item() == pytest.approx(0.0, abs=1e-5)
    local = feats.clone()
    local[:, 1] = feats[:, 1].roll(2, dims=1)  # view 1 uses other channels for the same objects
    assert instance_loss(local, ids, samples=64, generator=gen).item() > 0.5


def test_pixel_sampling_balances_instances():
    # uniform sampling would give the small instance about 9% of the samples
    ids = torch.cat([torch.zeros(10_000, dtype=torch.long), torch.ones(1_000, dtype=torch.long)])
    idx = sample_pixels(ids, 400, torch.Generator().manual_seed(1))
    assert len(set(idx.tolist())) == 400  # distinct pixels while there are enough
    share = float((ids[idx] == 1).float().mean())
    assert 0.35 < share < 0.65


def _window(num_views: int = 3, h: int = 12, w: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    poses = []
    for i in range(num_views):
        a = 0.2 * i
        rot = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
        pose = np.eye(4)
        pose[:3, :3] = rot
        pose[:3, 3] = [3.0 + 0.3 * i, -1.0, 2.0]
        poses.append(pose)
    k = np.array([[20.0, 0, w / 2], [0, 20.0, h / 2], [0, 0, 1]])
    depth = rng.uniform(1.0, 4.0, size=(num_views, h, w))
    return (torch.tensor(np.stack(poses))[None], torch.tensor(np.stack([k] * num_views), dtype=torch.float32)[None],
            torch.tensor(depth, dtype=torch.float32)[None])


def test_normalized_truth_is_in_the_first_camera_frame_with_unit_mean_distance():
    poses, k, depth = _window()
    truth = normalize_truth(poses, k, depth)
    assert torch.allclose(truth.extrinsics[0, 0], torch.eye(3, 4), atol=1e-5)
    dist = truth.world_points.norm(dim=-1)[truth.valid].mean()
    assert dist.item() == pytest.approx(1.0, rel=1e-4)
    # view 0's points are its depth unprojected: z equals the scaled depth
    assert torch.allclose(truth.world_points[0, 0, ..., 2], truth.depth[0, 0], atol=1e-5)
    # scaling the world does not change the normalised truth
    scaled = poses.clone()
    scaled[..., :3, 3] *= 2.5
    truth2 = normalize_truth(scaled, k, depth * 2.5)
    assert torch.allclose(truth.world_points, truth2.world_points, atol=1e-4)
    assert torch.allclose(truth.pose_enc, truth2.pose_enc, atol=1e-4)


def test_camera_loss_zero_at_truth_positive_otherwise_and_later_iterations_count_more():
    poses, k, depth = _window()
    truth = normalize_truth(poses, k, depth)
    enc = truth.pose_enc
    assert camera_loss([enc] * 4, enc).item() == pytest.approx(0.0, abs=1e-6)
    flipped = enc.clone()
    flipped[..., 3:7] *= -1  # -q is the same rotation
    assert camera_loss([flipped] * 4, enc).item() == pytest.approx(0.0, abs=1e-6)
    off = enc + 0.1
    assert camera_loss([off] * 4, enc).item() > 0
    early_wrong = camera_loss([off, enc, enc, enc], enc).item()
    late_wrong = camera_loss([enc, enc, enc, off], enc).item()
    assert 0 < early_wrong < late_wrong
    assert torch.allclose(extri_intri_to_pose_encoding(truth.extrinsics, truth.intrinsics, (12, 16)), enc, atol=1e-6)


def test_depth_and_point_losses_zero_at_truth_and_positive_otherwise():
    poses, k, depth = _window()
    truth = normalize_truth(poses, k, depth)
    ones = torch.ones_like(truth.depth)
    exact = {"depth": truth.depth.unsqueeze(-1), "depth_conf": ones, "world_points": truth.world_points,
             "world_points_conf": ones}
    assert depth_loss(exact, truth).item() == pytest.approx(0.0, abs=1e-6)
    assert point_loss(exact, truth).item() == pytest.approx(0.0, abs=1e-6)
    wrong = dict(exact, depth=exact["depth"] * 1.2, world_points=exact["world_points"] + 0.05)
    assert depth_loss(wrong, truth).item() > 0
    assert point_loss(wrong, truth).item() > 0
    # a bumpy error costs more than a constant one of the same mean (gradient term)
    bump = exact["depth"].clone()
    bump[..., ::2, :, :] += 0.2
    flat = exact["depth"] + 0.1
    assert depth_loss(dict(exact, depth=bump), truth).item() > depth_loss(dict(exact, depth=flat), truth).item()


def test_confidence_down_weights_errors_at_a_log_cost():
    poses, k, depth = _window()
    truth = normalize_truth(poses, k, depth)
    ones = torch.ones_like(truth.depth)
    wrong = {"depth": truth.depth.unsqueeze(-1) + 1.0, "depth_conf": ones}
    assert depth_loss(wrong, truth).item() > depth_loss(dict(wrong, depth_conf=ones * 3), truth).item() - 10
    # on a correct prediction, raising confidence only pays the -alpha*log(conf) reward; with an error it costs
    right = {"depth": truth.depth.unsqueeze(-1), "depth_conf": ones * 2}
    assert depth_loss(right, truth).item() < 0
    assert depth_loss(dict(wrong, depth_conf=ones * 2), truth).item() > depth_loss(wrong, truth).item()


def test_invalid_pixels_are_ignored():
    poses, k, depth = _window()
    depth[0, 1, :4] = 0.0
    truth = normalize_truth(poses, k, depth)
    assert not truth.valid[0, 1, :4].any() and truth.valid[0, 1, 4:].all()
    ones = torch.ones_like(truth.depth)
    pred = truth.depth.unsqueeze(-1).clone()
    pred[0, 1, :4] = 50.0  # garbage where there is no truth
    out = {"depth": pred, "depth_conf": ones}
    assert depth_loss(out, truth).item() == pytest.approx(0.0, abs=1e-6)


def test_pull_weight_ramps_in_and_reaches_the_papers_weight():
    from iggt_ros.train.losses import LossWeights, iggt_loss

    poses, k, depth = _window(num_views=2)
    truth = normalize_truth(poses, k, depth)
    ones = torch.ones_like(truth.depth)
    ids = torch.zeros(1, 2, 12, 16, dtype=torch.long)
    ids[..., 8:] = 1
    feats = torch.zeros(1, 2, 8, 12, 16)
    feats[:, :, 0] = 1.0
    feats[:, :, 1] = torch.rand(1, 2, 12, 16)  # same-instance pixels spread out: only pull sees this
    feats[:, :, 2][ids == 1] = 5.0  # the two instances far apart: no push
    out = {"pose_enc": [truth.pose_enc] * 4, "depth": truth.depth.unsqueeze(-1), "depth_conf": ones,
           "world_points": truth.world_points, "world_points_conf": ones, "part_feat": feats}
    weights = LossWeights(samples=256, feature_norm=0.0)
    start = iggt_loss(out, truth, ids, weights, torch.Generator().manual_seed(0), progress=0.0)
    end = iggt_loss(out, truth, ids, weights, torch.Generator().manual_seed(0), progress=1.0)
    assert start.instance == pytest.approx(0.0, abs=1e-6)
    assert end.instance > 0.05
    assert end.total.item() == pytest.approx(weights.instance * end.instance, abs=1e-5)


def test_feature_norm_penalty_pins_raw_norms_without_touching_directions():
    from iggt_ros.train.losses import feature_norm_penalty

    unit = torch.nn.functional.normalize(torch.randn(64, 8), dim=-1)
    assert feature_norm_penalty(unit).item() == pytest.approx(0.0, abs=1e-10)
    big = (unit * 20.0).requires_grad_(True)
    penalty = feature_norm_penalty(big)
    assert penalty.item() > 1.0
    penalty.backward()
    # the gradient is radial: a step shrinks the norms and keeps every direction
    stepped = big.detach() - 5.0 * big.grad
    assert (stepped.norm(dim=-1) < 20.0).all()
    assert torch.allclose(torch.nn.functional.normalize(stepped, dim=-1), unit, atol=1e-5)
    ids = torch.arange(64) % 4
    assert contrastive_pair_loss(unit * 20.0, ids).item() == pytest.approx(contrastive_pair_loss(unit, ids).item())
