"""Metric scale of a window's depth from the camera poses TF gives.

Why not from the model's cameras: the model predicts depth and camera poses up to one unknown factor
per window, and the obvious estimate, the ratio of the TF camera-centre spread to the model's, is only
as good as the model's camera translations. The embedded model's are close to noise (its camera
centres barely move), which made published depth 0.02 to 3 times the truth. Its depth, on the other
hand, is consistent within a window up to that one factor.

So the scale comes from the depth and the images, with the poses from TF: view i's pixel p lies at
X = T_i (s d_i(p) K_i^-1 p) in the world, which only leaves s unknown. For the right s, X projects into
another view j onto a pixel of the same colour, at the depth view j's own depth map says; for a wrong s
it lands off by the parallax the baseline between i and j causes. `fit_metric_scale` samples pixels of
every view, pairs each view with the (at most two) views furthest from it that look the same way, and
searches s on a logarithmic grid (coarse on a few samples, then fine on all), minimising a truncated
photometric difference plus a smaller depth-agreement term. Truncation keeps occlusions and moving
things from dominating.

Observability: without translation (a camera that turns in place or stands still) every s fits as
well as any other. The contrast, the cost at s / 1.5 or s * 1.5 over the cost at s, says whether the
minimum is real; below `MIN_CONTRAST` there is no scale. When the cameras mostly turn (the baseline is a
small fraction of the scene depth: `MIN_PARALLAX`), a shallow minimum is not trusted either: it takes
`LOW_PARALLAX_CONTRAST`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SAMPLES_PER_VIEW = 150
"""Pixels sampled per view for the fine search (a third of them for the coarse one)."""
PAIRS_PER_VIEW = 2
MAX_PAIR_ANGLE_DEG = 60.0
"""Views whose optical axes differ by more than this share too little of the scene to pair."""
SEARCH_RANGE = (0.01, 100.0)
"""Metres per model unit searched without a prior (models normalise depth to about 1 per window)."""
PRIOR_RANGE = 3.0
"""With a prior scale, the search covers prior / 3 to prior * 3."""
COARSE_STEP = math.log(1.08)
FINE_SPAN = math.log(1.06)
FINE_STEPS = 25
COLOUR_TOLERANCE = 0.08
"""Mean absolute RGB difference (0..1) at which a sample's photometric cost saturates."""
DEPTH_TOLERANCE = 0.15
"""|log depth ratio| at which a sample's depth cost saturates."""
DEPTH_WEIGHT = 0.3
MIN_CONTRAST = 1.25
MIN_PARALLAX = 0.1
"""Baseline over the median metric depth below which the cameras mostly turn (pans: 0.03-0.1; walks and orbits:
0.3-0.7)."""
LOW_PARALLAX_CONTRAST = 2.0
"""Contrast a fit needs below MIN_PARALLAX. On synthetic pans outside the benchmark and validation scenes, 9 of
the 17 fits of contrast 1.25-2 were 4-17 % off the true scale; the 18 of contrast 2 or more were within 4.2 %.
At walking and orbiting parallax, fits of contrast 1.3-1.7 (the embedded model's) were within 1-3 %. A weak fit
taken as a window's scale moves objects by tens of centimetres between windows; without it the scale carried
through the shared views is used (or, before any, the fallback frame until a fit is trusted)."""
CONTRAST_FACTOR = 1.5
MIN_SAMPLES = 30
MIN_COVERAGE = 0.3
"""A scale whose projections land inside the other views for fewer samples than this fraction of the
best-covered scale is not considered (a tiny scale leaves few samples that happen to match)."""


@dataclass
class ScaleFit:
    """Result of `fit_metric_scale`."""

    scale: float | None
    """Metres per model depth unit; None when the poses do not make it observable."""
    cost: float
    contrast: float
    """min(cost(s / 1.5), cost(s * 1.5)) / cost(s); about 1 when the scale is unobservable."""
    samples: int
    """Sample projections that landed inside another view at the chosen scale."""
    baseline_m: float
    """Largest distance between two paired cameras."""
    reason: str = ""
    """Why there is no scale (empty when there is one)."""
    parallax: float = math.nan
    """baseline_m over the median depth of the window at the fitted scale."""


@dataclass
class _Samples:
    gain: np.ndarray
    """[N,3] K_j R_ji d_i K_i^-1 p: homogeneous pixel in view j per unit of scale."""
    offset: np.ndarray
    """[N,3] K_j t_ji."""
    target: np.ndarray
    """[N] index of view j."""
    colour: np.ndarray
    """[N,3] colour (0..255) of the sampled pixel in view i."""


def _pairs(poses: np.ndarray) -> tuple[list[tuple[int, int]], float]:
    centres = poses[:, :3, 3]
    axes = poses[:, :3, 2]
    cos_limit = math.cos(math.radians(MAX_PAIR_ANGLE_DEG))
    pairs: set[tuple[int, int]] = set()
    baseline = 0.0
    for i in range(len(poses)):
        dist = np.linalg.norm(centres - centres[i], axis=1)
        ok = (axes @ axes[i] >= cos_limit) & (dist > 1e-6)
        ok[i] = False
        for j in [int(j) for j in np.argsort(-dist) if ok[j]][:PAIRS_PER_VIEW]:
            pairs.add((i, j))
            baseline = max(baseline, float(dist[j]))
    return sorted(pairs), baseline


def _sample_grid(height: int, width: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    step = max(1, int(math.sqrt(height * width / max(count, 1))))
    rows, cols = np.mgrid[step // 2:height:step, step // 2:width:step]
    return rows.ravel(), cols.ravel()


def _samples(depth: np.ndarray, valid: np.ndarray, colours: np.ndarray, intrinsics: np.ndarray,
             poses: np.ndarray, pairs: list[tuple[int, int]], count: int) -> _Samples:
    _, h, w = depth.shape
    rows, cols = _sample_grid(h, w, count)
    pix = np.stack([cols, rows, np.ones_like(rows)]).astype(np.float64)
    inv_k = np.linalg.inv(intrinsics)
    inv_pose = np.linalg.inv(poses)
    gains, offsets, targets, cols_out = [], [], [], []
    for i, j in pairs:
        ok = valid[i, rows, cols]
        if not ok.any():
            continue
        cam = (inv_k[i] @ pix[:, ok]).T * depth[i, rows[ok], cols[ok]][:, None].astype(np.float64)
        rel = inv_pose[j] @ poses[i]
        gains.append(cam @ (intrinsics[j] @ rel[:3, :3]).T)
        offsets.append(np.broadcast_to(intrinsics[j] @ rel[:3, 3], (int(ok.sum()), 3)))
        targets.append(np.full(int(ok.sum()), j, np.int64))
        cols_out.append(colours[i, rows[ok], cols[ok]].astype(np.float32))
    if not gains:
        empty = np.zeros((0, 3))
        return _Samples(empty, empty, np.zeros(0, np.int64), empty)
    return _Samples(np.concatenate(gains).astype(np.float32), np.concatenate(offsets).astype(np.float32),
                    np.concatenate(targets), np.concatenate(cols_out))


def _costs(samples: _Samples, scales: np.ndarray, depth_flat: np.ndarray, valid_flat: np.ndarray,
           colour_flat: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Mean truncated cost and inside count per scale (cost inf where too few samples land inside)."""
    h, w = shape
    costs = np.full(len(scales), np.inf)
    counts = np.zeros(len(scales), np.int64)
    if len(samples.target) == 0:
        return costs, counts
    chunk = max(1, 400_000 // len(samples.target))
    for start in range(0, len(scales), chunk):
        s = scales[start:start + chunk, None, None].astype(np.float32)
        q = s * samples.gain[None] + samples.offset[None]
        z = q[..., 2]
        front = z > 1e-9
        zs = np.where(front, z, 1.0)
        u = np.floor(q[..., 0] / zs + 0.5)
        v = np.floor(q[..., 1] / zs + 0.5)
        inside = front & (u >= 0) & (u < w) & (v >= 0) & (v < h)
        idx = samples.target[None] * (h * w) + (np.where(inside, v, 0).astype(np.int64) * w
                                                + np.where(inside, u, 0).astype(np.int64))
        ok = inside & valid_flat[idx]
        other = np.where(ok, depth_flat[idx], 1.0) * s[..., 0]
        with np.errstate(divide="ignore", invalid="ignore"):
            depth_term = np.minimum(np.abs(np.log(zs / other)) / DEPTH_TOLERANCE, 1.0)
        colour_term = np.minimum(np.abs(colour_flat[idx] - samples.colour[None]).mean(-1)
                                 / np.float32(255.0 * COLOUR_TOLERANCE), 1.0)
        total = np.where(ok, colour_term + DEPTH_WEIGHT * np.nan_to_num(depth_term, nan=1.0), 0.0).sum(1)
        n = ok.sum(1)
        counts[start:start + len(s)] = n
        costs[start:start + len(s)] = np.where(n > 0, total / np.maximum(n, 1), np.inf)
    enough = counts >= max(MIN_SAMPLES, MIN_COVERAGE * counts.max())
    costs[~enough] = np.inf
    return costs, counts


def fit_metric_scale(depth: np.ndarray, valid: np.ndarray, images: np.ndarray, intrinsics: np.ndarray,
                     poses: np.ndarray, prior: float | None = None) -> ScaleFit:
    """Metres per model depth unit of one window, from its depth, images and known camera poses.

    Args:
        depth: [V,H,W] model depth (one unknown factor for the whole window).
        valid: [V,H,W] pixels whose depth can be used.
        images: [V,H,W,3] uint8, the images the model saw.
        intrinsics: [V,3,3] at (H, W), pixel centres at integer coordinates.
        poses: [V,4,4] world_from_camera in metres (OpenCV optical axes).
        prior: a scale believed close (the previous window's): the search stays within a factor
            `PRIOR_RANGE` of it.
    """
    poses = np.asarray(poses, np.float64)
    intrinsics = np.asarray(intrinsics, np.float64)
    _, h, w = depth.shape
    pairs, baseline = _pairs(poses)
    if not pairs:
        return ScaleFit(None, math.nan, 1.0, 0, baseline,
                        "the cameras of this window did not move (or look in directions too different to compare)")
    images = np.asarray(images)
    args = (np.ascontiguousarray(depth, np.float32).reshape(-1), np.asarray(valid, bool).reshape(-1),
            images.reshape(-1, 3), (h, w))

    lo, hi = SEARCH_RANGE if prior is None else (prior / PRIOR_RANGE, prior * PRIOR_RANGE)
    coarse = np.exp(np.arange(math.log(lo), math.log(hi) + COARSE_STEP, COARSE_STEP))
    few = _samples(depth, valid, images, intrinsics, poses, pairs, SAMPLES_PER_VIEW // 3)
    costs, _ = _costs(few, coarse, *args)
    if not np.isfinite(costs).any():
        return ScaleFit(None, math.nan, 1.0, 0, baseline, "no sampled pixel projects into another view")
    centre = float(coarse[int(np.argmin(costs))])

    many = _samples(depth, valid, images, intrinsics, poses, pairs, SAMPLES_PER_VIEW)
    fine = centre * np.exp(np.linspace(-FINE_SPAN, FINE_SPAN, FINE_STEPS))
    sides = np.array([centre / CONTRAST_FACTOR, centre * CONTRAST_FACTOR])
    costs, counts = _costs(many, np.concatenate([fine, sides]), *args)
    best = int(np.argmin(costs[:FINE_STEPS]))
    cost = float(costs[best])
    if not math.isfinite(cost):
        return ScaleFit(None, math.nan, 1.0, 0, baseline, "no sampled pixel projects into another view")
    scale = float(fine[best])
    side_cost = float(costs[FINE_STEPS:].min()) if np.isfinite(costs[FINE_STEPS:]).any() else 1.0 + DEPTH_WEIGHT
    contrast = side_cost / max(cost, 1e-9)
    if contrast < MIN_CONTRAST:
        return ScaleFit(None, cost, contrast, int(counts[best]), baseline,
                        f"the views agree about equally at every scale (contrast {contrast:.2f} < {MIN_CONTRAST}): "
                        "too little camera translation in this window")
    depths = np.asarray(depth)[np.asarray(valid, bool)]
    parallax = baseline / max(scale * float(np.median(depths)), 1e-9) if depths.size else math.nan
    if parallax < MIN_PARALLAX and contrast < LOW_PARALLAX_CONTRAST:
        return ScaleFit(None, cost, contrast, int(counts[best]), baseline,
                        f"the cameras mostly turn (baseline {100 * parallax:.0f} % of the scene depth) and the views "
                        f"agree nearly as well over a range of scales (contrast {contrast:.2f} < "
                        f"{LOW_PARALLAX_CONTRAST} at this parallax)", parallax)
    return ScaleFit(scale, cost, contrast, int(counts[best]), baseline, parallax=parallax)
