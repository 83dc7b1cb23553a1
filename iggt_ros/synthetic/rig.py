"""Camera rigs: cameras rigidly mounted on a ground robot, with pinhole intrinsics.

The base frame follows REP-103/105: `base_link` on the floor, x forward, y left, z up. Each camera's
optical frame (x right, y down, z forward) looks along the base's +x, turned by the camera's yaw on
the mount and tilted down by `tilt_deg`, so that objects standing on the floor fill the image
rather than its lower half. The mount gives the height: cameras sit `mount_height` metres above
the floor.

Layouts by camera count:
- 1: `front`, on the base's centre line.
- 2: `front_left` / `front_right`, a forward-looking stereo pair with `baseline` metres between
  them (left at +y): the two views overlap almost entirely, the common robot stereo head.
- N >= 3: `cam0` .. `cam{N-1}`, a fan from left to right on a 0.1 m radius mount, neighbours turned
  by 0.75 of the horizontal field of view, so adjacent views overlap by about a quarter.
"""

from __future__ import annotations

import numpy as np

from .types import CameraRig

OPTICAL_IN_BASE = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
"""Rotation base <- optical for a camera looking along base +x: optical x = -base y, y = -base z, z = base x."""


def rot_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def rot_y(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def pose(rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """4x4 homogeneous transform from a 3x3 rotation and a translation."""
    out = np.eye(4)
    out[:3, :3] = rotation
    out[:3, 3] = translation
    return out


def pinhole_intrinsics(width: int, height: int, fov_deg: float) -> np.ndarray:
    """K with square pixels, horizontal field of view `fov_deg`, principal point at the image centre.

    Pixel centres sit at integer coordinates (OpenCV): column j, row i is the ray through (u, v) = (j, i),
    so the centre of a W x H image is ((W - 1) / 2, (H - 1) / 2).
    """
    if not 1.0 < fov_deg < 179.0:
        raise ValueError(f"fov_deg must be in (1, 179), got {fov_deg}")
    f = (width / 2) / np.tan(np.radians(fov_deg) / 2)
    return np.array([[f, 0.0, (width - 1) / 2], [0.0, f, (height - 1) / 2], [0.0, 0.0, 1.0]])


def camera_mount(yaw: float, tilt: float, offset: np.ndarray) -> np.ndarray:
    """base_from_camera of a camera turned by `yaw` (left positive) and tilted down by `tilt` radians."""
    return pose(rot_z(yaw) @ rot_y(tilt) @ OPTICAL_IN_BASE, offset)


def make_rig(
    num_cameras: int,
    width: int,
    height: int,
    fov_deg: float = 60.0,
    mount_height: float = 1.1,
    tilt_deg: float = 20.0,
    baseline: float = 0.2,
) -> CameraRig:
    """A rig of `num_cameras` cameras sharing one image size and K (layouts in the module docstring)."""
    if num_cameras < 1:
        raise ValueError(f"num_cameras must be at least 1, got {num_cameras}")
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    tilt = np.radians(tilt_deg)
    if num_cameras == 1:
        names = ["front"]
        mounts = [camera_mount(0.0, tilt, np.array([0.1, 0.0, mount_height]))]
    elif num_cameras == 2:
        names = ["front_left", "front_right"]
        mounts = [camera_mount(0.0, tilt, np.array([0.1, side * baseline / 2, mount_height])) for side in (1, -1)]
    else:
        names = [f"cam{i}" for i in range(num_cameras)]
        step = 0.75 * np.radians(fov_deg)
        yaws = step * ((num_cameras - 1) / 2 - np.arange(num_cameras))
        mounts = [
            camera_mount(yaw, tilt, np.array([0.1 * np.cos(yaw), 0.1 * np.sin(yaw), mount_height])) for yaw in yaws
        ]
    return CameraRig(
        names=names,
        base_from_camera=mounts,
        width=width,
        height=height,
        intrinsics=pinhole_intrinsics(width, height, fov_deg),
    )
