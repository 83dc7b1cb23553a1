"""Embedder inputs from synthetic sequences with ground-truth masks.

Training, tests and the query benchmark feed the embedder the renderer's exact instance masks;
this isolates the text-region model from segmentation quality (the perception pipeline's own
masks are evaluated separately). Each instance's box is estimated from its back-projected masked
depth over all views, the way an object map accumulates points, rather than taken from the scene
description, so sizes carry the same partial-view bias they have at run time.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from iggt_ros.perception.records import InstanceRecord
from iggt_ros.synthetic.types import RenderedView, SyntheticSequence
from iggt_ros.vlm.types import ViewObservation

MAX_POINTS_PER_VIEW = 400


def backproject(view: RenderedView, mask: np.ndarray, max_points: int = MAX_POINTS_PER_VIEW,
                rng: np.random.Generator | None = None) -> np.ndarray:
    """[N,3] world points of the masked pixels (a random subset of at most max_points)."""
    v, u = np.nonzero(mask)
    if v.size > max_points:
        pick = (rng or np.random.default_rng(0)).choice(v.size, max_points, replace=False)
        v, u = v[pick], u[pick]
    z = view.depth[v, u].astype(np.float64)
    k = view.intrinsics
    x = (u - k[0, 2]) * z / k[0, 0]
    y = (v - k[1, 2]) * z / k[1, 1]
    cam = np.stack([x, y, z, np.ones_like(z)], axis=1)
    return (cam @ view.world_from_camera.T)[:, :3]


def gravity_box(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(centre [3], extents [3], yaw) of a z-aligned box around points, yaw from the xy principal axis.

    The 1st and 99th percentiles bound the box so a few stray points do not inflate it.
    """
    xy = points[:, :2] - points[:, :2].mean(axis=0)
    if len(points) >= 3:
        evals, evecs = np.linalg.eigh(np.cov(xy.T))
        axis = evecs[:, int(np.argmax(evals))]
        yaw = float(np.arctan2(axis[1], axis[0]))
    else:
        yaw = 0.0
    c, s = np.cos(yaw), np.sin(yaw)
    local = np.stack([xy[:, 0] * c + xy[:, 1] * s, -xy[:, 0] * s + xy[:, 1] * c, points[:, 2]], axis=1)
    lo, hi = np.percentile(local, 1, axis=0), np.percentile(local, 99, axis=0)
    mid = (lo + hi) / 2
    centre_xy = points[:, :2].mean(axis=0) + np.array([mid[0] * c - mid[1] * s, mid[0] * s + mid[1] * c])
    return np.array([centre_xy[0], centre_xy[1], mid[2]]), hi - lo, yaw


def instances_from_views(views: Sequence[RenderedView], attributes: dict[int, dict[str, str]] | None = None,
                         min_area_px: int = 1, seed: int = 0) -> list[InstanceRecord]:
    """One snapshot per instance ID seen with at least `min_area_px` in some view (no embedding yet)."""
    rng = np.random.default_rng(seed)
    points: dict[int, list[np.ndarray]] = {}
    seen: dict[int, int] = {}
    stamps: dict[int, list[int]] = {}
    for view in views:
        ids = view.instance_ids
        counts = np.bincount(ids.ravel().astype(np.int64))
        for iid in np.nonzero(counts >= min_area_px)[0]:
            iid = int(iid)
            if iid == 0:
                continue
            points.setdefault(iid, []).append(backproject(view, ids == iid, rng=rng))
            seen[iid] = seen.get(iid, 0) + 1
            stamps.setdefault(iid, []).append(view.stamp_ns)
    out = []
    for iid in sorted(points):
        pts = np.concatenate(points[iid])
        centre, extents, yaw = gravity_box(pts)
        out.append(InstanceRecord(
            id=iid, centroid=pts.mean(axis=0), box_center=centre, box_size=extents, box_yaw=yaw,
            point_count=len(pts), views_seen=seen[iid], first_seen_ns=min(stamps[iid]),
            last_seen_ns=max(stamps[iid]), attributes=dict((attributes or {}).get(iid, {}))))
    return out


def observations(views: Sequence[RenderedView], instances: Sequence[InstanceRecord]) -> list[ViewObservation]:
    """The views as embedder inputs, each carrying the instances' box sizes."""
    sizes = {inst.id: np.asarray(inst.box_size, dtype=np.float32) for inst in instances}
    return [ViewObservation(camera=v.camera, stamp_ns=v.stamp_ns, rgb=v.rgb, instance_ids=v.instance_ids,
                            box_sizes=sizes) for v in views]


def sequence_instances(seq: SyntheticSequence, min_area_px: int = 1) -> list[InstanceRecord]:
    """`instances_from_views` over a whole sequence, with the scene's attributes attached."""
    attrs = {o.id: dict(o.attributes) for o in seq.scene.objects}
    return instances_from_views(seq.views(), attrs, min_area_px=min_area_px, seed=seq.scene.seed)
