"""Camera geometry against hand-made cameras."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from iggt_ros.model.geometry import (
    confidence_mask,
    depth_validity_mask,
    extri_intri_to_pose_encoding,
    invert_extrinsics,
    mat_to_quat,
    pose_encoding_to_extri_intri,
    quat_to_mat,
    unproject_depth,
)

H, W = 336, 504


def rot_y(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def rot_x(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def test_quaternion_is_xyzw_scalar_last():
    # 90 degrees about +z: x axis goes to +y.
    q = np.array([0.0, 0.0, math.sin(math.pi / 4), math.cos(math.pi / 4)])
    rot = quat_to_mat(q)
    np.testing.assert_allclose(rot @ np.array([1.0, 0, 0]), [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(quat_to_mat(np.array([0, 0, 0, 1.0])), np.eye(3), atol=1e-12)
    # Non-unit quaternions describe the same rotation.
    np.testing.assert_allclose(quat_to_mat(3.0 * q), rot, atol=1e-12)


@pytest.mark.parametrize("angle", [0.0, 0.3, math.pi / 2, math.pi - 1e-3, math.pi])
def test_matrix_quaternion_round_trip(angle):
    # Angles near pi exercise the non-w formulas of mat_to_quat.
    for rot in (rot_y(angle), rot_x(angle) @ rot_y(angle / 2), rot_y(-angle) @ rot_x(angle)):
        q = mat_to_quat(rot)
        assert q[3] >= 0
        assert abs(np.linalg.norm(q) - 1) < 1e-12
        np.testing.assert_allclose(quat_to_mat(q), rot, atol=1e-9)


def test_decoding_a_hand_made_pose_encoding():
    fov_h, fov_w = 2 * math.atan(168 / 300.0), 2 * math.atan(252 / 400.0)  # fy = 300, fx = 400
    angle = 0.5
    enc = torch.tensor([[1.0, -2.0, 3.0, 0.0, math.sin(angle / 2), 0.0, math.cos(angle / 2), fov_h, fov_w]],
                       dtype=torch.float64)
    extr, intr = pose_encoding_to_extri_intri(enc, (H, W))
    np.testing.assert_allclose(extr[0, :, :3].numpy(), rot_y(angle), atol=1e-12)
    np.testing.assert_allclose(extr[0, :, 3].numpy(), [1, -2, 3])
    np.testing.assert_allclose(intr[0].numpy(), [[400, 0, W / 2], [0, 300, H / 2], [0, 0, 1]], atol=1e-9)


def test_pose_encoding_round_trip_numpy_and_torch():
    extr = np.stack([
        np.hstack([np.eye(3), np.zeros((3, 1))]),
        np.hstack([rot_y(0.4) @ rot_x(-0.2), np.array([[0.3], [-0.1], [1.5]])]),
        np.hstack([rot_x(2.9), np.array([[-1.0], [2.0], [0.5]])]),
    ])
    intr = np.array([[[500.0, 0, W / 2], [0, 450.0, H / 2], [0, 0, 1]]] * 3)
    enc = extri_intri_to_pose_encoding(extr, intr, (H, W))
    assert isinstance(enc, np.ndarray) and enc.shape == (3, 9)
    np.testing.assert_allclose(enc[0], [0, 0, 0, 0, 0, 0, 1, 2 * math.atan(168 / 450), 2 * math.atan(252 / 500)],
                               atol=1e-12)
    extr2, intr2 = pose_encoding_to_extri_intri(enc, (H, W))
    np.testing.assert_allclose(extr2, extr, atol=1e-9)
    np.testing.assert_allclose(intr2, intr, atol=1e-9)
    enc_t = extri_intri_to_pose_encoding(torch.from_numpy(extr), torch.from_numpy(intr), (H, W))
    assert isinstance(enc_t, torch.Tensor)
    np.testing.assert_allclose(enc_t.numpy(), enc, atol=1e-12)


def test_invert_extrinsics():
    extr = np.hstack([rot_y(0.7), np.array([[1.0], [2.0], [3.0]])])
    inv = invert_extrinsics(extr)
    point = np.array([0.5, -0.2, 4.0])
    cam = extr[:, :3] @ point + extr[:, 3]
    np.testing.assert_allclose(inv[:, :3] @ cam + inv[:, 3], point, atol=1e-12)


def test_unprojection_recovers_world_points_seen_by_a_hand_made_camera():
    # A camera 2 units behind the world origin, turned 30 degrees; a plane of known world points.
    fx, fy, h, w = 60.0, 50.0, 28, 42
    intr = np.array([[fx, 0, w / 2], [0, fy, h / 2], [0, 0, 1]])
    rot = rot_y(math.radians(30))
    t = np.array([0.2, -0.1, 2.0])
    extr = np.hstack([rot, t[:, None]])
    depth = 1.0 + 0.05 * np.arange(h * w, dtype=np.float64).reshape(h, w) / (h * w)
    points = unproject_depth(depth[None], extr[None], intr[None])
    assert points.shape == (1, h, w, 3) and points.dtype == np.float64
    # Projecting the recovered points must land on their own pixel at their own depth.
    cam = points[0] @ rot.T + t
    np.testing.assert_allclose(cam[..., 2], depth, atol=1e-12)
    u = fx * cam[..., 0] / cam[..., 2] + w / 2
    v = fy * cam[..., 1] / cam[..., 2] + h / 2
    np.testing.assert_allclose(u, np.broadcast_to(np.arange(w), (h, w)), atol=1e-9)
    np.testing.assert_allclose(v, np.broadcast_to(np.arange(h)[:, None], (h, w)), atol=1e-9)
    # The principal-point pixel lies on the optical axis: world = camera centre + depth * axis.
    centre = -rot.T @ t
    np.testing.assert_allclose(points[0, h // 2, w // 2], centre + depth[h // 2, w // 2] * rot.T[:, 2], atol=1e-12)
    # Torch input, trailing channel axis, float32: same result.
    points_t = unproject_depth(torch.from_numpy(depth[None, ..., None]).float(), torch.from_numpy(extr[None]),
                               torch.from_numpy(intr[None]))
    assert points_t.dtype == torch.float32
    np.testing.assert_allclose(points_t.numpy(), points, rtol=1e-5, atol=1e-5)


def test_depth_validity_mask():
    depth = np.array([[[0.0, 1e-9, 0.5, 99.0, 100.0, np.nan, np.inf]]])
    np.testing.assert_array_equal(depth_validity_mask(depth)[0, 0], [False, False, True, True, False, False, False])


def test_confidence_mask_threshold_and_percentile():
    conf = torch.arange(1.0, 101.0).reshape(1, 10, 10)  # 1..100
    assert int(confidence_mask(conf, threshold=51.0).sum()) == 50
    keep = confidence_mask(conf, percentile=10.0)  # cut = 10.9 by linear interpolation
    assert int(keep.sum()) == 90 and not bool(keep[0, 0, 9]) and bool(keep[0, 1, 0])
    both = confidence_mask(conf.numpy(), threshold=95.0, percentile=10.0)
    assert isinstance(both, np.ndarray) and int(both.sum()) == 6
    conf[0, 0, 0] = float("nan")
    assert not bool(confidence_mask(conf)[0, 0, 0])
