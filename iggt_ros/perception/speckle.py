"""Speckle removal for a whole window in one pass: small 4-connected pieces of each mask become 0.

A piece of label k in a view is kept when it has at least ``min_px`` pixels and at least ``fraction``
of the largest piece of k in that view. With scipy this takes one labelling per label and view inside
the label's bounding box, and the floor or a wall spans the whole view: on 8 views at 504x336 that
was the largest single cost of post-processing. Here a union-find over the runs of equal labels along
each row (numba) finds the pieces of every label at once: one pass over the label image finds the runs,
and the rest works on runs, whatever the number of labels. Without numba the per-label scipy version
runs; both give the same result.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import ndimage

try:
    import numba
except ImportError:  # pragma: no cover - numba comes with fast_hdbscan, a dependency
    numba = None


def drop_small_pieces(labels: np.ndarray, min_px: float, fraction: float,
                      skip: np.ndarray | None = None) -> np.ndarray:
    """Zero, in place, the 4-connected pieces of each label of one [H,W] view smaller than `min_px` or than
    `fraction` of that label's largest piece; labels where `skip` [K+1] is True are left alone. Works inside
    each label's bounding box, so the cost follows the mask areas rather than labels x image size.
    Returns the pixels zeroed per label ([K+1] int64, K = the largest label present)."""
    boxes = ndimage.find_objects(labels)
    removed = np.zeros(len(boxes) + 1, np.int64)
    for index, box in enumerate(boxes):
        if box is None or (skip is not None and index + 1 < len(skip) and skip[index + 1]):
            continue
        sub = labels[box]
        mask = sub == index + 1
        pieces, n = ndimage.label(mask)
        sizes = np.bincount(pieces.ravel(), minlength=n + 1)[1:]
        keep = (sizes >= min_px) & (sizes >= fraction * sizes.max())
        if keep.all():
            continue
        sub[mask & ~np.concatenate([[False], keep])[pieces]] = 0
        removed[index + 1] = int(sizes[~keep].sum())
    return removed


def _window_pieces_python(labels: np.ndarray, min_px: float, fraction: float, skip: np.ndarray) -> np.ndarray:
    removed = np.zeros((labels.shape[0], len(skip)), np.int64)
    for i in range(labels.shape[0]):
        r = drop_small_pieces(labels[i], min_px, fraction, skip)
        removed[i, : min(len(r), len(skip))] = r[: len(skip)]
    return removed


if numba is not None:

    @numba.njit(cache=True, nogil=True)
    def _find(parent: np.ndarray, p: int) -> int:
        root = p
        while parent[root] != root:
            root = parent[root]
        while parent[p] != root:  # path compression
            nxt = parent[p]
            parent[p] = root
            p = nxt
        return root

    @numba.njit(cache=True, nogil=True)
    def _window_pieces_numba(labels: np.ndarray, min_px: float, fraction: float, skip: np.ndarray) -> np.ndarray:
        # runs of one label along a row are the units: a union-find over runs, not pixels, touches each pixel
        # once to find the runs and once more only where a piece is removed
        v, h, w = labels.shape
        k1 = skip.shape[0]
        flat = labels.reshape(-1)
        n = flat.shape[0]
        run_start = np.empty(n, np.int32)  # flat index of the first pixel
        run_len = np.empty(n, np.int32)
        run_label = np.empty(n, np.int32)
        parent = np.empty(n, np.int32)
        row_first = np.empty(v * h + 1, np.int32)  # runs of row r: row_first[r] .. row_first[r + 1] - 1
        runs = 0
        for r in range(v * h):
            row_first[r] = runs
            base = r * w
            above = row_first[r - 1] if r > 0 else 0
            x = 0
            while x < w:
                lab = flat[base + x]
                x0 = x
                x += 1
                while x < w and flat[base + x] == lab:
                    x += 1
                if lab <= 0 or lab >= k1 or skip[lab]:
                    continue
                run_start[runs] = base + x0
                run_len[runs] = x - x0
                run_label[runs] = lab
                parent[runs] = runs
                # 4-connected to the runs of the row above that overlap it in x with the same label
                if r % h != 0:
                    # runs above that end before this one cannot touch it nor any later run of this row
                    while above < row_first[r] and run_start[above] - (base - w) + run_len[above] <= x0:
                        above += 1
                    for q in range(above, row_first[r]):
                        qx0 = run_start[q] - (base - w)
                        if qx0 >= x:
                            break
                        if run_label[q] == lab:
                            a = _find(parent, runs)
                            b = _find(parent, q)
                            if a != b:
                                if a < b:
                                    parent[b] = a
                                else:
                                    parent[a] = b
                runs += 1
        row_first[v * h] = runs
        size = np.zeros(runs, np.int64)
        for i in range(runs):
            size[_find(parent, i)] += run_len[i]
        largest = np.zeros((v, k1), np.int64)
        for i in range(runs):
            if parent[i] == i:
                view = run_start[i] // (h * w)
                if size[i] > largest[view, run_label[i]]:
                    largest[view, run_label[i]] = size[i]
        removed = np.zeros((v, k1), np.int64)
        for i in range(runs):
            s = size[parent[i]]  # parents are roots after the pass above
            lab = run_label[i]
            view = run_start[i] // (h * w)
            if s < min_px or s < fraction * largest[view, lab]:
                flat[run_start[i]: run_start[i] + run_len[i]] = 0
                removed[view, lab] += run_len[i]
        return removed

    @numba.njit(cache=True, nogil=True, parallel=True)
    def _window_pieces_parallel(labels: np.ndarray, min_px: float, fraction: float, skip: np.ndarray) -> np.ndarray:
        # the views are independent: one per thread
        v = labels.shape[0]
        removed = np.zeros((v, skip.shape[0]), np.int64)
        for a in numba.prange(v):
            removed[a] = _window_pieces_numba(labels[a:a + 1], min_px, fraction, skip)[0]
        return removed


def drop_small_pieces_window(labels: np.ndarray, min_px: float, fraction: float,
                             skip: np.ndarray | None = None) -> np.ndarray:
    """`drop_small_pieces` on every view of a [V,H,W] int32 window, in place, labels 0..K with `skip` [K+1].

    Returns the pixels zeroed per view and label, [V,K+1] int64."""
    if skip is None:  # with `skip` the caller says K: no pass over the window to find it
        skip = np.zeros(int(labels.max()) + 1 if labels.size else 1, bool)
    skip = np.asarray(skip, bool)
    if numba is None or labels.dtype != np.int32 or not labels.flags.c_contiguous:
        return _window_pieces_python(labels, min_px, fraction, skip)
    return _window_pieces_parallel(labels, float(min_px), float(fraction), skip)


@functools.cache
def warm_up() -> None:
    """Compile (or load from numba's cache) the kernel now, not in the first window (once per process)."""
    drop_small_pieces_window(np.zeros((1, 4, 4), np.int32), 1.0, 0.1)
