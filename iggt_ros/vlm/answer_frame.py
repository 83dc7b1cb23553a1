"""Query answers in the requester's frame: instance boxes and centroids moved by one rigid transform.

A planner asks in `base_link` or its planning frame; the map lives in its world frame. The node
looks the transform up in TF at the map's stamp and hands it here; the maths is one place, shared
by the node and tests. Map boxes are gravity-aligned (rotation about z only); in a target frame
whose z axis is not vertical the box keeps its extents and takes the yaw of its x axis about the
target z, which is exact for the usual level frames (`base_link`, `odom`, a planning frame).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from iggt_ros.perception.records import InstanceRecord


class FrameUnavailable(LookupError):
    """The transform into the requested frame is not known (TF lookup failed); says which and why."""


def transform_records(records: Sequence[InstanceRecord], target_from_map: np.ndarray) -> list[InstanceRecord]:
    """Copies of `records` with centroid, box centre and yaw expressed in the target frame."""
    t = np.asarray(target_from_map, np.float64)
    if t.shape != (4, 4) or not np.all(np.isfinite(t)):
        raise ValueError(f"target_from_map must be a finite 4x4 transform, got shape {t.shape}")
    rot, trans = t[:3, :3], t[:3, 3]
    out = []
    for r in records:
        axis = rot @ np.array([np.cos(r.box_yaw), np.sin(r.box_yaw), 0.0])
        out.append(dataclasses.replace(
            r, centroid=rot @ np.asarray(r.centroid, np.float64) + trans,
            box_center=rot @ np.asarray(r.box_center, np.float64) + trans,
            box_yaw=float(np.arctan2(axis[1], axis[0])), attributes=dict(r.attributes)))
    return out


def box_corners(record: InstanceRecord) -> np.ndarray:
    """[8,3] corners of an instance's box in its record's frame (for checks and planning-scene layouts)."""
    half = np.asarray(record.box_size, np.float64) / 2
    c, s = np.cos(record.box_yaw), np.sin(record.box_yaw)
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    signs = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], np.float64)
    return (signs * half) @ rot.T + np.asarray(record.box_center, np.float64)
