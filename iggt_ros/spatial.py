"""Rigid and similarity transforms in numpy: the one place for quaternions and Umeyama fits.

The package works with 4x4 homogeneous matrices named `<to>_from_<from>`; ROS messages carry
translation + quaternion (x, y, z, w). These helpers convert between the two and interpolate (the
layouts and the TF buffer), and fit similarities between point sets (the mapping's world alignment
and the evaluation's trajectory error). numpy only, so every layer may import it.
"""

from __future__ import annotations

import math

import numpy as np


def quaternion_from_matrix(rotation: np.ndarray) -> np.ndarray:
    """Unit quaternion (x, y, z, w) of a 3x3 rotation, with w >= 0 so equal rotations give equal values."""
    m = np.asarray(rotation, dtype=np.float64)[:3, :3]
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    if trace > 0.0:
        s = 2.0 * np.sqrt(trace + 1.0)
        q = np.array([(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, 0.25 * s])
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = np.array([0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s, (m[2, 1] - m[1, 2]) / s])
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        q = np.array([(m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s, (m[0, 2] - m[2, 0]) / s])
    else:
        s = 2.0 * np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        q = np.array([(m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s, (m[1, 0] - m[0, 1]) / s])
    q /= np.linalg.norm(q)
    return -q if q[3] < 0 else q


def matrix_from_quaternion(q: np.ndarray) -> np.ndarray:
    """3x3 rotation of a quaternion (x, y, z, w); the quaternion is normalised first."""
    x, y, z, w = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def transform_from(translation: np.ndarray, quaternion: np.ndarray) -> np.ndarray:
    """4x4 homogeneous transform from a translation and a quaternion (x, y, z, w)."""
    out = np.eye(4)
    out[:3, :3] = matrix_from_quaternion(quaternion)
    out[:3, 3] = np.asarray(translation, dtype=np.float64)
    return out


def yaw_quaternion(yaw: float) -> np.ndarray:
    """Quaternion (x, y, z, w) of a rotation by `yaw` radians about z (gravity-aligned boxes)."""
    return np.array([0.0, 0.0, np.sin(yaw / 2.0), np.cos(yaw / 2.0)])


def slerp(q0: np.ndarray, q1: np.ndarray, t: float) -> np.ndarray:
    """Spherical linear interpolation between unit quaternions, along the shorter arc."""
    q0 = np.asarray(q0, dtype=np.float64)
    q1 = np.asarray(q1, dtype=np.float64)
    dot = float(np.dot(q0, q1))
    if dot < 0.0:
        q1, dot = -q1, -dot
    if dot > 0.9995:  # nearly equal: linear interpolation is exact to float precision
        q = q0 + t * (q1 - q0)
        return q / np.linalg.norm(q)
    theta = np.arccos(dot)
    return (np.sin((1.0 - t) * theta) * q0 + np.sin(t * theta) * q1) / np.sin(theta)


def interpolate_transform(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """Transform a fraction `t` of the way from `a` to `b` (linear translation, slerp rotation)."""
    qa = quaternion_from_matrix(a[:3, :3])
    qb = quaternion_from_matrix(b[:3, :3])
    return transform_from((1.0 - t) * a[:3, 3] + t * b[:3, 3], slerp(qa, qb, t))


def invert(transform: np.ndarray) -> np.ndarray:
    """Inverse of a rigid 4x4 transform."""
    out = np.eye(4)
    r = transform[:3, :3]
    out[:3, :3] = r.T
    out[:3, 3] = -r.T @ transform[:3, 3]
    return out


def umeyama_sim3(
    src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None, with_scale: bool = True
) -> tuple[float, np.ndarray, np.ndarray]:
    """Similarity (s, R, t) minimising sum_i w_i ||dst_i - (s R src_i + t)||^2 (Umeyama 1991).

    src, dst: [N,D] corresponding points (D = 3 for Sim(3)). weights: [N] non-negative, optional.
    with_scale=False fixes s = 1 (a rigid fit, for metric trajectories).

    Meant to be called on whatever a pipeline produces, so degenerate input never raises or
    returns NaN: rows with non-finite values or zero weight are dropped; with no row left the
    identity comes back; when either point set has no spread (one point, or all points equal)
    rotation and scale are unobservable and the result is s = 1, R = I and the translation
    between the weighted centroids. Collinear points give the rotation that aligns the line
    (the roll about it is unobservable). R is always a proper rotation (det +1), never a
    reflection.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.ndim != 2 or src.shape != dst.shape:
        raise ValueError(f"umeyama_sim3 needs two [N,D] arrays of the same shape, got {src.shape} and {dst.shape}")
    n, d = src.shape
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.shape != (n,):
        raise ValueError(f"umeyama_sim3 weights must have shape ({n},), got {w.shape}")
    if np.any(w < 0):
        raise ValueError("umeyama_sim3 weights must be non-negative")
    keep = np.isfinite(src).all(axis=1) & np.isfinite(dst).all(axis=1) & np.isfinite(w) & (w > 0)
    eye = np.eye(d)
    if not keep.any():
        return 1.0, eye, np.zeros(d)
    src, dst, w = src[keep], dst[keep], w[keep]
    w = w / w.sum()
    mu_s = w @ src
    mu_d = w @ dst
    xs = src - mu_s
    xd = dst - mu_d
    var_s = float(w @ np.sum(xs * xs, axis=1))
    var_d = float(w @ np.sum(xd * xd, axis=1))
    tiny = 1e-12
    if var_s <= tiny * max(1.0, float(w @ np.sum(src * src, axis=1))) or var_d <= tiny * max(
        1.0, float(w @ np.sum(dst * dst, axis=1))
    ):
        return 1.0, eye, mu_d - mu_s
    cov = (xd * w[:, None]).T @ xs
    u, sing, vt = np.linalg.svd(cov)
    sign = np.ones(d)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1.0
    rot = (u * sign) @ vt
    scale = float(np.sum(sing * sign) / var_s) if with_scale else 1.0
    if not math.isfinite(scale) or scale <= 0.0:
        scale = 1.0
    trans = mu_d - scale * rot @ mu_s
    return scale, rot, trans
