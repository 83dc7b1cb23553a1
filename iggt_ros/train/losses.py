"""Training losses of IGGT: the VGGT geometry losses plus the multi-view contrastive instance loss.

Geometry is supervised in a normalised frame (first camera = world, unit mean point distance),
because a window of images alone fixes neither the world frame nor the metric scale; the model
is asked only for what the images determine. The instance loss is computed over pixels sampled
from all views of a window jointly, which is what makes the features 3D-consistent: the same
object seen from two viewpoints must land on one feature, and two identical-looking copies of
an object must land on different ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from iggt_ros.model.geometry import extri_intri_to_pose_encoding


@dataclass
class LossWeights:
    """Weights and hyper-parameters of the total loss (defaults follow VGGT and the IGGT paper)."""

    camera: float = 1.0
    depth: float = 1.0
    points: float = 1.0
    instance: float = 1.0
    camera_gamma: float = 0.6
    """Iteration i of n gets gamma**(n-1-i): the last camera-head iteration counts most."""
    conf_alpha: float = 0.2
    """Weight of the -log(conf) term that keeps confidences from growing without bound."""
    gradient: float = 1.0
    """Weight of the spatial-gradient term of the depth and point losses."""
    pull: float = 2.0
    pull_ramp: float = 0.3
    """Fraction of training over which the pull weight rises linearly from 0 to `pull`. A model
    trained from scratch starts with nearly the same feature at every pixel; pulling at full
    weight from the first step keeps it there (every pair is already close, and the push
    gradient of a collapsed set is weak), so separation is learned first and cohesion after."""
    push: float = 1.0
    margin: float = 1.0
    samples: int = 1024
    """Pixels sampled per window for the contrastive loss."""
    feature_norm: float = 0.1
    """Weight of mean(log|f|^2) on the raw features of the sampled pixels. The contrastive loss
    sees only directions, so nothing stops the raw norm from drifting upwards; once it is large
    the normalisation saturates (its gradient shrinks as 1/|f|) and features freeze into a few
    codes. This term pins |f| near 1 and leaves the directions to the contrastive loss."""


@dataclass
class NormalizedTruth:
    """Ground truth of a batch of windows in the normalised frame the model predicts in.

    Shapes: B windows of S views of H x W pixels.
    """

    extrinsics: torch.Tensor
    """[B,S,3,4] camera-from-world, world = first camera."""
    intrinsics: torch.Tensor
    """[B,S,3,3]."""
    depth: torch.Tensor
    """[B,S,H,W] z-depth, scaled."""
    world_points: torch.Tensor
    """[B,S,H,W,3] in the first camera's frame, scaled."""
    valid: torch.Tensor
    """[B,S,H,W] bool, pixels with a usable depth."""
    pose_enc: torch.Tensor
    """[B,S,9] encoding of extrinsics/intrinsics."""
    scale: torch.Tensor
    """[B] the factor metric lengths were divided by."""


def normalize_truth(
    world_from_camera: torch.Tensor,
    intrinsics: torch.Tensor,
    depth: torch.Tensor,
    valid: torch.Tensor | None = None,
) -> NormalizedTruth:
    """Express metric ground truth in VGGT's frame: first camera as world, mean point distance 1.

    Args:
        world_from_camera: [B,S,4,4] camera poses in any world frame.
        intrinsics: [B,S,3,3] pinhole intrinsics at the depth resolution.
        depth: [B,S,H,W] metric z-depth; non-positive or non-finite values are invalid.
        valid: optional extra [B,S,H,W] mask of usable pixels.
    """
    b, s, h, w = depth.shape
    world_from_camera = world_from_camera.double()
    first_from_world = torch.linalg.inv(world_from_camera[:, :1])
    first_from_camera = first_from_world @ world_from_camera  # [B,S,4,4]
    ok = torch.isfinite(depth) & (depth > 1e-6)
    if valid is not None:
        ok = ok & valid.bool()
    depth_d = torch.where(ok, depth.double(), torch.zeros_like(depth, dtype=torch.float64))

    v, u = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    k = intrinsics.double()
    fx, fy = k[..., 0, 0, None, None], k[..., 1, 1, None, None]
    cx, cy = k[..., 0, 2, None, None], k[..., 1, 2, None, None]
    cam = torch.stack([(u - cx) * depth_d / fx, (v - cy) * depth_d / fy, depth_d], dim=-1)  # [B,S,H,W,3]
    rot, trans = first_from_camera[..., :3, :3], first_from_camera[..., :3, 3]
    points = torch.einsum("bsij,bshwj->bshwi", rot, cam) + trans[:, :, None, None, :]

    dist = points.norm(dim=-1)
    count = ok.flatten(1).sum(1).clamp(min=1)
    scale = (dist * ok).flatten(1).sum(1) / count
    scale = torch.where(scale > 1e-9, scale, torch.ones_like(scale))
    inv = 1.0 / scale

    camera_from_first = torch.linalg.inv(first_from_camera)
    extrinsics = camera_from_first[..., :3, :].clone()
    extrinsics[..., :3, 3] *= inv[:, None, None]
    points = points * inv[:, None, None, None, None]
    depth_n = depth_d * inv[:, None, None, None]
    pose_enc = extri_intri_to_pose_encoding(extrinsics.float(), intrinsics.float(), (h, w))
    return NormalizedTruth(
        extrinsics=extrinsics.float(),
        intrinsics=intrinsics.float(),
        depth=depth_n.float(),
        world_points=points.float(),
        valid=ok,
        pose_enc=pose_enc.float(),
        scale=scale.float(),
    )


# ---------------------------------------------------------------------------------------------- camera
def camera_loss(pose_encs: list[torch.Tensor], truth: torch.Tensor, gamma: float = 0.6) -> torch.Tensor:
    """L1 on translation, rotation quaternion and field of view, over every camera-head iteration.

    The quaternion's sign is ambiguous (q and -q are one rotation), so each is compared with the
    nearer of the two. Iteration i of n is weighted gamma**(n-1-i) and the weights are normalised,
    so the refined last estimate dominates while earlier ones still get a signal.

    Args:
        pose_encs: list of [B,S,9] predictions, first to last iteration.
        truth: [B,S,9] target encoding.
    """
    n = len(pose_encs)
    weights = [gamma ** (n - 1 - i) for i in range(n)]
    total = pose_encs[0].new_zeros(())
    for weight, pred in zip(weights, pose_encs, strict=True):
        loss_t = (pred[..., :3] - truth[..., :3]).abs().sum(-1)
        q_pred, q_true = pred[..., 3:7], truth[..., 3:7]
        loss_q = torch.minimum((q_pred - q_true).abs().sum(-1), (q_pred + q_true).abs().sum(-1))
        loss_f = (pred[..., 7:] - truth[..., 7:]).abs().sum(-1)
        total = total + weight * (loss_t + loss_q + 0.5 * loss_f).mean()
    return total / sum(weights)


# ---------------------------------------------------------------------------------------------- dense
def _gradient_error(err: torch.Tensor, conf: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Confidence-weighted L1 of the spatial gradients of the error map.

    Penalising the gradient of (pred - truth) rather than the values alone asks for sharp,
    correctly placed depth edges, which is where instance boundaries come from.

    Args: err [N,H,W,C]; conf [N,H,W]; valid [N,H,W] bool.
    """
    total = err.new_zeros(())
    count = err.new_zeros(())
    for dim in (1, 2):
        n = err.shape[dim]
        grad = (err.narrow(dim, 1, n - 1) - err.narrow(dim, 0, n - 1)).abs().sum(-1)
        pair = valid.narrow(dim, 1, n - 1) & valid.narrow(dim, 0, n - 1)
        c = 0.5 * (conf.narrow(dim, 1, n - 1) + conf.narrow(dim, 0, n - 1))
        total = total + (c * grad * pair).sum()
        count = count + pair.sum()
    return total / count.clamp(min=1)


def confidence_regression_loss(
    pred: torch.Tensor,
    truth: torch.Tensor,
    conf: torch.Tensor,
    valid: torch.Tensor,
    alpha: float = 0.2,
    gradient_weight: float = 1.0,
) -> torch.Tensor:
    """VGGT's aleatoric regression loss: mean of conf*|err| - alpha*log(conf), plus a gradient term.

    The model lowers the weight of pixels it cannot predict (sky, reflections, occlusion edges)
    by lowering their confidence, and pays alpha*log(conf) for it. With the 1+exp activation
    conf >= 1, so the loss is zero exactly when the prediction is right and conf = 1.

    Args:
        pred, truth: [..., H, W, C] (depth with C = 1, points with C = 3).
        conf: [..., H, W] confidence; valid: [..., H, W] bool.
    """
    h, w, c = pred.shape[-3:]
    pred = pred.reshape(-1, h, w, c)
    truth = truth.reshape(-1, h, w, c)
    conf = conf.reshape(-1, h, w)
    valid = valid.reshape(-1, h, w)
    err = pred - truth
    per_pixel = conf * err.abs().sum(-1) - alpha * torch.log(conf)
    count = valid.sum().clamp(min=1)
    loss = (per_pixel * valid).sum() / count
    if gradient_weight:
        loss = loss + gradient_weight * _gradient_error(err, conf, valid)
    return loss


def depth_loss(out: dict, truth: NormalizedTruth, alpha: float = 0.2, gradient_weight: float = 1.0) -> torch.Tensor:
    """Depth-head loss against normalised depth."""
    return confidence_regression_loss(out["depth"], truth.depth.unsqueeze(-1), out["depth_conf"], truth.valid,
                                      alpha, gradient_weight)


def point_loss(out: dict, truth: NormalizedTruth, alpha: float = 0.2, gradient_weight: float = 1.0) -> torch.Tensor:
    """Point-head loss against first-camera-frame points."""
    return confidence_regression_loss(out["world_points"], truth.world_points, out["world_points_conf"],
                                      truth.valid, alpha, gradient_weight)


# ---------------------------------------------------------------------------------------------- instance
def sample_pixels(instance_ids: torch.Tensor, count: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Indices of `count` pixels of one window, balanced across instances.

    Uniform sampling would spend almost every pair on walls and large objects; drawing each
    pixel with probability 1/(pixels of its instance) gives small and distant objects, which
    matter as much to the product, an equal share.

    Args:
        instance_ids: [N] integer IDs of every pixel of every view of the window.
    Returns:
        [count] long indices into instance_ids (with replacement when needed).
    """
    _, inverse, counts = torch.unique(instance_ids, return_inverse=True, return_counts=True)
    weights = 1.0 / counts[inverse].double()
    replace = count > instance_ids.numel()
    return torch.multinomial(weights, count, replacement=replace, generator=generator)


def contrastive_pair_loss(
    features: torch.Tensor,
    ids: torch.Tensor,
    pull: float = 2.0,
    push: float = 1.0,
    margin: float = 1.0,
) -> torch.Tensor:
    """IGGT's multi-view contrastive loss on a set of sampled pixels.

    pull * mean over same-instance pairs of d + push * mean over different-instance pairs of
    max(0, margin - d), with d the L2 distance between L2-normalised features. The pull term is
    linear (no margin), so same-instance features collapse onto one point.

    Args:
        features: [N, C] raw features (normalised here).
        ids: [N] instance IDs.
    """
    f = F.normalize(features, dim=-1, eps=1e-12)
    # For unit vectors |a - b|^2 = 2 - 2 a.b: an [N, N] Gram matrix instead of an [N, N, C] difference
    # tensor. The epsilon keeps the square root's gradient finite on identical pairs.
    sq = (2.0 - 2.0 * (f @ f.T)).clamp(min=0.0)
    dist = torch.sqrt(sq + 1e-12)
    same = ids.unsqueeze(1) == ids.unsqueeze(0)
    off_diag = ~torch.eye(len(ids), dtype=torch.bool, device=ids.device)
    pos = same & off_diag
    neg = ~same
    loss = features.new_zeros(())
    if pos.any():
        loss = loss + pull * dist[pos].mean()
    if neg.any():
        loss = loss + push * F.relu(margin - dist[neg]).mean()
    return loss


def feature_norm_penalty(features: torch.Tensor) -> torch.Tensor:
    """mean(log(|f|)^2) over [N, C] raw features: zero when every feature has unit norm."""
    return torch.log(features.norm(dim=-1).clamp(min=1e-6)).square().mean()


def instance_loss(
    part_feat: torch.Tensor,
    instance_ids: torch.Tensor,
    samples: int = 1024,
    pull: float = 2.0,
    push: float = 1.0,
    margin: float = 1.0,
    generator: torch.Generator | None = None,
    feature_norm: float = 0.0,
) -> torch.Tensor:
    """Contrastive loss over pixels sampled across ALL views of each window, averaged over windows.

    Args:
        part_feat: [B,S,C,H,W] raw instance features.
        instance_ids: [B,S,H,W] integer IDs, consistent across the views of a window.
    """
    b, s, c, h, w = part_feat.shape
    feats = part_feat.permute(0, 1, 3, 4, 2).reshape(b, s * h * w, c)
    ids = instance_ids.reshape(b, s * h * w)
    total = part_feat.new_zeros(())
    for i in range(b):
        idx = sample_pixels(ids[i], samples, generator).to(ids.device)
        total = total + contrastive_pair_loss(feats[i, idx], ids[i, idx], pull, push, margin)
        if feature_norm:
            total = total + feature_norm * feature_norm_penalty(feats[i, idx])
    return total / b


# ---------------------------------------------------------------------------------------------- total
@dataclass
class LossTerms:
    """The total loss and its parts (parts detached, for logging)."""

    total: torch.Tensor
    camera: float
    depth: float
    points: float
    instance: float

    def as_dict(self) -> dict[str, float]:
        return {"loss": float(self.total.detach()), "camera": self.camera, "depth": self.depth,
                "points": self.points, "instance": self.instance}


def iggt_loss(
    out: dict,
    truth: NormalizedTruth,
    instance_ids: torch.Tensor,
    weights: LossWeights | None = None,
    generator: torch.Generator | None = None,
    progress: float = 1.0,
) -> LossTerms:
    """L = L_camera + L_depth + L_points + L_instance (each with its weight).

    `progress` in [0, 1] is the fraction of training done (it sets the pull ramp); 1 gives the
    paper's weights.
    """
    wt = weights or LossWeights()
    pull = wt.pull * min(1.0, progress / wt.pull_ramp) if wt.pull_ramp > 0 else wt.pull
    l_cam = camera_loss(out["pose_enc"], truth.pose_enc, wt.camera_gamma)
    l_depth = depth_loss(out, truth, wt.conf_alpha, wt.gradient)
    l_pts = point_loss(out, truth, wt.conf_alpha, wt.gradient)
    l_inst = instance_loss(out["part_feat"], instance_ids, wt.samples, pull, wt.push, wt.margin, generator,
                           wt.feature_norm)
    total = wt.camera * l_cam + wt.depth * l_depth + wt.points * l_pts + wt.instance * l_inst
    return LossTerms(total, float(l_cam.detach()), float(l_depth.detach()), float(l_pts.detach()),
                     float(l_inst.detach()))
