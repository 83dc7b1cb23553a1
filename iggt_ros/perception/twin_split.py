"""Instances whose points fall apart in 3D become one instance per part.

Instance features follow appearance: two identical objects side by side get the same features, and
the clustering makes them one instance. The window's geometry tells them apart: their points form two
groups in space with a gap between them, where one object's points, however noisy, form one group.
After clustering, every instance's points (the view pixels at the cloud grid's stride, in the output
frame) are linked when they lie about a link distance apart or closer; when the links leave two or more parts
that each hold a fair share of the points and that some view sees together, each part becomes an
instance of its own, in every view of the window at once (the parts are found over all views jointly,
so the labels stay consistent across views), and the tracker follows each part with the position cue
that keeps look-alikes apart. Three guards keep single objects whole:

* The link distance is at least ``clustering.split_gap_m`` and at least a few times the points' own
  spacing, so the gaps of a sparse or noisy sampling link up, and a split needs a gap in space, not a
  scatter.
* The parts hold nearly all the points: a scatter of pieces of every size is noise, not objects.
* Parts no view sees together are one object whose views disagree (depth off in some of the views,
  which shifts all of that view's points together), not two objects: they are joined again. Two
  objects side by side are seen together by nearly every view of the window.

Linking is single linkage on a grid of cubes a third of the link distance wide: points in the same or touching
cubes (corners included) are linked, so points closer than a third of the link distance always are, points
further apart than 1.15 link distances (2 sqrt(3) / 3) never are, and a gap of about the link distance separates.
The grid costs a few milliseconds a window where linking every pair of points within the link distance cost tens.

``split_gap_m`` is in metres: it applies to windows with metric depth (TF or a rig baseline); at the model's own
scale only the spacing of the points sets the link distance.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from iggt_ros.perception.clustering import ClusterResult, label_order

MIN_PART_FRACTION = 0.05
"""A part holds at least this fraction of its instance's points (smaller ones are flying pixels at depth edges or
a sliver of the background, joined to the nearest part)."""
CLEAN_FRACTION = 0.95
"""The parts hold at least this fraction of the points together: objects apart in space fall cleanly into a few
parts (plus stray points), where depth noise scatters one object into pieces of every size."""
MIN_POINTS = 40
"""Instances with fewer grid points are left whole: too few to tell a gap from sparse sampling."""
MAX_POINTS = 2000
"""Points of one instance linked (every n-th when there are more): enough for the shape of every part."""
SPACING_FACTOR = 3.0
"""The link distance is at least this many times the median distance between the points of neighbouring pixels of
the instance in one view (the sampling of its surface, with the depth noise)."""
SPACING_STRIDE = 8
"""The spacing of an instance's points is measured along every 8th row and column of the point grid."""

PointsAt = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
"""(view, row, column) pixel indices [N] of a window -> [N,3] their metric output-frame points (NaN where invalid):
only the pixels the split looks at are placed, a few per cent of the window's."""
SHARED_VIEW_FRACTION = 0.1
"""Two parts are seen together by a view holding at least this fraction of each part's points."""
CUBE_FRACTION = 1 / 3
"""Points are linked through a grid of cubes this fraction of the link distance wide. On tuning scenes outside
every benchmark (seeds 907_201..206, embedded model) a third gave 1.66 published IDs per object, a half 1.89 (as
linking every pair within the link distance did) and a quarter 1.63 with T-mIoU 0.49 instead of 0.53."""
MAX_CUBES = 1 << 15
"""Cubes in the grid of one instance at most: a room-sized instance (a wall, the floor) gets wider cubes. Its
sample is too sparse to link at the finer distance anyway, so it stays whole either way."""


def points_step(cloud_step: int) -> int:
    """Pixel stride of the points the parts are found in: half the cloud grid's, so that the points of one view
    lie close enough together to link across the gap between two objects standing a few centimetres apart."""
    return max(1, cloud_step // 2)


def split_parts(cluster: ClusterResult, points_at: PointsAt, step: int, gap_m: float) -> ClusterResult:
    """`cluster` with every instance whose points fall apart split into one instance per part.

    Args:
        cluster: the window's instances ([V,H,W] labels 1..K).
        points_at: the points of pixels of the window.
        step: the stride, in pixels, of the grid of pixels whose points are linked (rows and columns).
        gap_m: the smallest gap between parts, in the units of `points` (0: only the spacing of the points counts,
            for points at an unknown scale).
    Returns `cluster` itself when nothing is split, else a new result whose split parts have new labels
    K+1.. (the largest part keeps its label) and the prototype of the instance they came from.
    """
    k = cluster.num_instances
    if k == 0:
        return cluster
    grid_labels = cluster.labels[:, ::step, ::step]
    vi, yi, xi = np.nonzero(grid_labels > 0)
    lab = grid_labels[vi, yi, xi]
    order = label_order(lab, k)
    bounds = np.searchsorted(lab[order], np.arange(1, k + 2))
    spacing = _pixel_spacing(grid_labels, points_at, step, k)
    labels = cluster.labels
    protos = [cluster.prototypes]
    next_label = k + 1
    for label in range(1, k + 1):
        idx = order[bounds[label - 1]:bounds[label]]
        link = max(gap_m, SPACING_FACTOR * spacing[label])
        pick = idx[::max(1, int(np.ceil(len(idx) / MAX_POINTS)))]
        sample = points_at(vi[pick], yi[pick] * step, xi[pick] * step).astype(np.float64)
        keep = np.isfinite(sample).all(axis=1)
        pick, sample = pick[keep], sample[keep]
        sample_parts = _parts(sample, vi[pick], cluster.labels.shape[0], link)
        if sample_parts is None:
            continue
        pts = points_at(vi[idx], yi[idx] * step, xi[idx] * step).astype(np.float64)
        finite = np.isfinite(pts).all(axis=1)
        idx = idx[finite]
        # every point goes with the part of its nearest sample point
        parts = sample_parts[cKDTree(sample).query(pts[finite], k=1)[1]]
        if labels is cluster.labels:
            labels = cluster.labels.copy()
        new_labels = np.concatenate([[label], np.arange(next_label, next_label + parts.max())]).astype(np.int32)
        _relabel_pixels(labels, label, vi[idx], yi[idx], xi[idx], new_labels[parts], step)
        protos.append(np.repeat(cluster.prototypes[label - 1:label], parts.max(), axis=0))
        next_label += int(parts.max())
    if labels is cluster.labels:
        return cluster
    v = labels.shape[0]
    offsets = (np.arange(v, dtype=np.int64) * next_label)[:, None, None]
    counts = np.bincount((labels + offsets).ravel(), minlength=v * next_label).reshape(v, next_label)
    return replace(cluster, labels=labels, prototypes=np.concatenate(protos).astype(np.float32),
                   pixel_counts=counts.astype(np.int64))


def _pixel_spacing(grid_labels: np.ndarray, points_at: PointsAt, step: int, k: int) -> np.ndarray:
    """[K+1] median distance between the points of neighbouring grid pixels (in a row or a column of one view) of
    each label: how far apart one view samples the object's surface, noise included (inf: no such pair)."""
    dist, lab = [], []
    for dr, dc in ((0, 1), (1, 0)):
        v, r, c, la = _neighbour_pairs(grid_labels, dr, dc)
        d = np.linalg.norm(points_at(v, r * step, c * step) - points_at(v, (r + dr) * step, (c + dc) * step), axis=-1)
        keep = np.isfinite(d)
        dist.append(d[keep])
        lab.append(la[keep])
    dist, lab = np.concatenate(dist), np.concatenate(lab)
    spacing = np.full(k + 1, np.inf)
    order = label_order(lab, k)
    bounds = np.searchsorted(lab[order], np.arange(k + 2))
    for label in range(1, k + 1):
        d = dist[order[bounds[label]:bounds[label + 1]]]
        if d.size:
            spacing[label] = float(np.median(d))
    return spacing


def _neighbour_pairs(grid_labels: np.ndarray, dr: int, dc: int) -> tuple[np.ndarray, ...]:
    """(view, row, column, label) of the first grid pixel of the pairs (p, p + (dr, dc)) with one label, on every
    SPACING_STRIDE-th line along (dr, dc), every other pixel of it: a median needs no more."""
    _, h, w = grid_labels.shape
    rows = np.arange(0, h - dr, 2 if dr else SPACING_STRIDE)
    cols = np.arange(0, w - dc, 2 if dc else SPACING_STRIDE)
    a = grid_labels[:, rows][:, :, cols]
    b = grid_labels[:, rows + dr][:, :, cols + dc]
    v, r, c = np.nonzero((a > 0) & (a == b))
    return v, rows[r], cols[c], a[v, r, c]


def _parts(sample: np.ndarray, views: np.ndarray, num_views: int, link: float) -> np.ndarray | None:
    """Part (0 = the largest) of every sample point, or None when the points form one object."""
    m = len(sample)
    if m < MIN_POINTS or not np.isfinite(link) or link <= 0:  # a zero link: points on top of each other
        return None
    num, comp = _linked(sample, link)
    if num < 2:
        return None
    sizes = np.bincount(comp, minlength=num)
    big = np.flatnonzero(sizes >= MIN_PART_FRACTION * m)
    if len(big) < 2 or sizes[big].sum() < CLEAN_FRACTION * m:
        return None
    group = _join_unseen_together(comp, big, views, num_views)
    if len(np.unique(group)) < 2:
        return None
    # the points of small components go with the part of their nearest big-part point
    in_big = np.flatnonzero(np.isin(comp, big))
    part_of_big = group[np.searchsorted(big, comp[in_big])]
    part = part_of_big[cKDTree(sample[in_big]).query(sample, k=1)[1]]
    # number the parts by size, the largest first: it keeps the instance's label
    _, part, sizes = np.unique(part, return_inverse=True, return_counts=True)
    rank = np.empty_like(sizes)
    rank[np.argsort(-sizes, kind="stable")] = np.arange(len(sizes))
    return rank[part.ravel()]


def _linked(pts: np.ndarray, link: float) -> tuple[int, np.ndarray]:
    """Number of linked parts of the points and the part of each (single linkage on a grid of cubes)."""
    lo = pts.min(axis=0)
    side = CUBE_FRACTION * link
    span = np.floor((pts.max(axis=0) - lo) / side) + 1
    if np.prod(span) > MAX_CUBES:
        side *= float(np.cbrt(np.prod(span) / MAX_CUBES))
    cells = np.floor((pts - lo) / side).astype(np.int64)
    occupied = np.zeros(cells.max(axis=0) + 1, bool)
    occupied[cells[:, 0], cells[:, 1], cells[:, 2]] = True
    grid, num = ndimage.label(occupied, structure=np.ones((3, 3, 3), bool))
    return num, grid[cells[:, 0], cells[:, 1], cells[:, 2]] - 1


def _join_unseen_together(comp: np.ndarray, big: np.ndarray, views: np.ndarray, num_views: int) -> np.ndarray:
    """Group of each big part ([len(big)]): parts that no view sees together are one group."""
    per_view = np.zeros((len(big), num_views))
    for i, c in enumerate(big):
        per_view[i] = np.bincount(views[comp == c], minlength=num_views)
    seen = per_view >= SHARED_VIEW_FRACTION * per_view.sum(axis=1, keepdims=True)
    distinct = (seen.astype(np.int32) @ seen.T.astype(np.int32)) > 0  # a view sees both: two objects
    _, group = connected_components(coo_matrix(~distinct), directed=False)
    return group


def _relabel_pixels(labels: np.ndarray, label: int, vi: np.ndarray, yi: np.ndarray, xi: np.ndarray,
                    grid_label: np.ndarray, step: int) -> None:
    """Give each pixel of `label` the new label of the nearest grid pixel of `label` in its view (in place)."""
    for v in np.unique(vi):
        sel = vi == v
        mask = labels[v] == label
        ys, xs = np.nonzero(mask)
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        gy0, gx0 = y0 // step, x0 // step
        gy1, gx1 = (y1 - 1) // step + 1, (x1 - 1) // step + 1
        coarse = np.zeros((gy1 - gy0, gx1 - gx0), np.int32)
        gy, gx = yi[sel] - gy0, xi[sel] - gx0
        inside = (gy >= 0) & (gy < coarse.shape[0]) & (gx >= 0) & (gx < coarse.shape[1])
        coarse[gy[inside], gx[inside]] = grid_label[sel][inside]
        nearest = ndimage.distance_transform_edt(coarse == 0, return_distances=False, return_indices=True)
        filled = coarse[nearest[0], nearest[1]]
        cy = np.clip(np.rint(ys / step).astype(np.int64) - gy0, 0, coarse.shape[0] - 1)
        cx = np.clip(np.rint(xs / step).astype(np.int64) - gx0, 0, coarse.shape[1] - 1)
        labels[v, ys, xs] = filled[cy, cx]
