"""Camera geometry of IGGT outputs: pose encoding <-> cameras, depth unprojection, masks.

Conventions (those of the released model):
- pose encoding `absT_quaR_FoV`, 9 values: translation T (3), quaternion (x, y, z, w) with the
  scalar last (4), vertical and horizontal field of view in radians (2);
- extrinsics are camera-from-world [R | T], OpenCV axes (x right, y down, z forward); the
  world frame is the first camera of the window;
- intrinsics are pinhole with the principal point at the image centre (W/2, H/2).

Every function takes torch tensors or numpy arrays and returns the same kind it was given
(numpy keeps its float precision), so the perception core can use them without torch code.
"""

from __future__ import annotations

import numpy as np
import torch

Array = torch.Tensor | np.ndarray


def _to_torch(x: Array) -> tuple[torch.Tensor, bool]:
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x)), True
    return x, False


def _back(x: torch.Tensor, was_numpy: bool) -> Array:
    return x.numpy() if was_numpy else x


# ---------------------------------------------------------------------------------------------
# Rotations
# ---------------------------------------------------------------------------------------------
def quat_to_mat(quat: Array) -> Array:
    """Quaternion (x, y, z, w) -> rotation matrix; the quaternion need not be unit length.

    Args:
        quat: [..., 4]. Returns: [..., 3, 3].
    """
    q, was_numpy = _to_torch(quat)
    x, y, z, w = q.unbind(-1)
    s = 2.0 / (q * q).sum(-1)
    rot = torch.stack(
        [
            1 - s * (y * y + z * z), s * (x * y - z * w), s * (x * z + y * w),
            s * (x * y + z * w), 1 - s * (x * x + z * z), s * (y * z - x * w),
            s * (x * z - y * w), s * (y * z + x * w), 1 - s * (x * x + y * y),
        ],
        dim=-1,
    )
    return _back(rot.reshape(*q.shape[:-1], 3, 3), was_numpy)


def mat_to_quat(rot: Array) -> Array:
    """Rotation matrix -> unit quaternion (x, y, z, w) with w >= 0.

    Uses the numerically best of the four standard closed forms for every matrix.

    Args:
        rot: [..., 3, 3]. Returns: [..., 4].
    """
    r, was_numpy = _to_torch(rot)
    m = r.reshape(-1, 3, 3)
    m00, m11, m22 = m[:, 0, 0], m[:, 1, 1], m[:, 2, 2]
    # 4*q_i^2 for (w, x, y, z); the largest one gives the best-conditioned formula.
    four_sq = torch.stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1)
    candidates = torch.stack(
        [
            torch.stack([four_sq[:, 0], m[:, 2, 1] - m[:, 1, 2], m[:, 0, 2] - m[:, 2, 0], m[:, 1, 0] - m[:, 0, 1]], -1),
            torch.stack([m[:, 2, 1] - m[:, 1, 2], four_sq[:, 1], m[:, 1, 0] + m[:, 0, 1], m[:, 0, 2] + m[:, 2, 0]], -1),
            torch.stack([m[:, 0, 2] - m[:, 2, 0], m[:, 1, 0] + m[:, 0, 1], four_sq[:, 2], m[:, 2, 1] + m[:, 1, 2]], -1),
            torch.stack([m[:, 1, 0] - m[:, 0, 1], m[:, 0, 2] + m[:, 2, 0], m[:, 2, 1] + m[:, 1, 2], four_sq[:, 3]], -1),
        ],
        dim=1,
    )  # [N, 4 formulas, (w, x, y, z)], each = 4*q_k*(q)
    best = four_sq.argmax(-1)
    wxyz = candidates[torch.arange(m.shape[0]), best]
    wxyz = wxyz / wxyz.norm(dim=-1, keepdim=True)
    wxyz = torch.where(wxyz[:, :1] < 0, -wxyz, wxyz)
    xyzw = torch.cat([wxyz[:, 1:], wxyz[:, :1]], dim=-1)
    return _back(xyzw.reshape(*r.shape[:-2], 4), was_numpy)


# ---------------------------------------------------------------------------------------------
# Pose encoding <-> cameras
# ---------------------------------------------------------------------------------------------
def pose_encoding_to_extri_intri(pose_enc: Array, image_hw: tuple[int, int]) -> tuple[Array, Array]:
    """Decode pose encodings into cameras for an image of size (H, W).

    Args:
        pose_enc: [..., 9].
        image_hw: (H, W) the intrinsics refer to.

    Returns:
        (extrinsics [..., 3, 4] camera-from-world, intrinsics [..., 3, 3]).
    """
    p, was_numpy = _to_torch(pose_enc)
    height, width = image_hw
    rot = quat_to_mat(p[..., 3:7])
    extrinsics = torch.cat([rot, p[..., :3, None]], dim=-1)
    fy = (height / 2.0) / torch.tan(p[..., 7] / 2.0)
    fx = (width / 2.0) / torch.tan(p[..., 8] / 2.0)
    intrinsics = torch.zeros(*p.shape[:-1], 3, 3, dtype=p.dtype, device=p.device)
    intrinsics[..., 0, 0] = fx
    intrinsics[..., 1, 1] = fy
    intrinsics[..., 0, 2] = width / 2.0
    intrinsics[..., 1, 2] = height / 2.0
    intrinsics[..., 2, 2] = 1.0
    return _back(extrinsics, was_numpy), _back(intrinsics, was_numpy)


def extri_intri_to_pose_encoding(extrinsics: Array, intrinsics: Array, image_hw: tuple[int, int]) -> Array:
    """Encode cameras as the model's 9-D pose encoding (training targets).

    The principal point is not encoded (the model assumes the image centre).

    Args:
        extrinsics: [..., 3, 4] camera-from-world.
        intrinsics: [..., 3, 3].
        image_hw: (H, W) the intrinsics refer to.

    Returns:
        [..., 9].
    """
    e, was_numpy = _to_torch(extrinsics)
    k, _ = _to_torch(intrinsics)
    height, width = image_hw
    quat = mat_to_quat(e[..., :3, :3])
    fov_h = 2.0 * torch.atan((height / 2.0) / k[..., 1, 1])
    fov_w = 2.0 * torch.atan((width / 2.0) / k[..., 0, 0])
    enc = torch.cat([e[..., :3, 3], quat, fov_h[..., None], fov_w[..., None]], dim=-1)
    return _back(enc, was_numpy)


def invert_extrinsics(extrinsics: Array) -> Array:
    """[R | t] -> [R^T | -R^T t] (camera-from-world <-> world-from-camera), [..., 3, 4]."""
    e, was_numpy = _to_torch(extrinsics)
    rot_t = e[..., :3, :3].transpose(-1, -2)
    out = torch.cat([rot_t, -(rot_t @ e[..., :3, 3:])], dim=-1)
    return _back(out, was_numpy)


# ---------------------------------------------------------------------------------------------
# Depth and points
# ---------------------------------------------------------------------------------------------
def unproject_depth(depth: Array, extrinsics: Array, intrinsics: Array) -> Array:
    """Lift depth maps to world points with the given cameras.

    Pixel (u, v) (integer column and row indices) at depth z maps to the camera point
    ((u - cx) z / fx, (v - cy) z / fy, z), then to the world with the inverse extrinsics.

    Args:
        depth: [S, H, W] or [S, H, W, 1].
        extrinsics: [S, 3, 4] camera-from-world.
        intrinsics: [S, 3, 3].

    Returns:
        [S, H, W, 3] world points (same kind and dtype as `depth`).
    """
    d, was_numpy = _to_torch(depth)
    e, _ = _to_torch(extrinsics)
    k, _ = _to_torch(intrinsics)
    if d.ndim == 4:
        d = d[..., 0]
    e, k = e.to(d.dtype), k.to(d.dtype)
    _, height, width = d.shape
    v, u = torch.meshgrid(
        torch.arange(height, dtype=d.dtype, device=d.device),
        torch.arange(width, dtype=d.dtype, device=d.device),
        indexing="ij",
    )
    fx, fy = k[:, 0, 0, None, None], k[:, 1, 1, None, None]
    cx, cy = k[:, 0, 2, None, None], k[:, 1, 2, None, None]
    cam = torch.stack([(u - cx) * d / fx, (v - cy) * d / fy, d], dim=-1)  # [S, H, W, 3]
    world_from_cam = invert_extrinsics(e)
    points = torch.einsum("sij,shwj->shwi", world_from_cam[:, :, :3], cam) + world_from_cam[:, None, None, :, 3]
    return _back(points, was_numpy)


def depth_validity_mask(depth: Array, min_depth: float = 1e-8, max_depth: float = 100.0) -> Array:
    """Pixels whose depth is finite and inside (min_depth, max_depth), as the official demo keeps them.

    Args:
        depth: [S, H, W] or [S, H, W, 1]. Returns: [S, H, W] bool.
    """
    d, was_numpy = _to_torch(depth)
    if d.ndim == 4:
        d = d[..., 0]
    return _back(torch.isfinite(d) & (d > min_depth) & (d < max_depth), was_numpy)


def confidence_mask(conf: Array, threshold: float | None = None, percentile: float | None = None) -> Array:
    """Pixels with enough confidence.

    IGGT confidences are 1 + exp(x) >= 1 with no absolute scale, so the official demo drops
    the lowest `percentile` percent of all pixels of the window; an absolute `threshold`
    is also supported. With both, a pixel must pass both.

    Args:
        conf: [S, H, W].
        threshold: keep conf >= threshold.
        percentile: keep conf >= this percentile (0..100) of all finite values.

    Returns:
        [S, H, W] bool.
    """
    c, was_numpy = _to_torch(conf)
    mask = torch.isfinite(c)
    if threshold is not None:
        mask &= c >= threshold
    if percentile is not None and bool(mask.any()):
        values = c[torch.isfinite(c)].double().sort().values
        # Linear interpolation between order statistics, like numpy.percentile.
        pos = percentile / 100.0 * (values.numel() - 1)
        lo, hi = int(np.floor(pos)), int(np.ceil(pos))
        cut = values[lo] + (values[hi] - values[lo]) * (pos - lo)
        mask &= c.double() >= cut
    return _back(mask, was_numpy)
