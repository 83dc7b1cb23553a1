"""Rigid transforms as ROS messages carry them: translation plus unit quaternion (x, y, z, w).

The package works with 4x4 homogeneous matrices named `<to>_from_<from>`; ROS messages carry
translation + quaternion. These helpers convert between the two and interpolate, for the layouts
(Pose, TransformStamped) and the TF buffer (interpolation between stamped samples).
"""

from __future__ import annotations

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
