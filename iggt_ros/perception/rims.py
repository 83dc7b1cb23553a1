"""Thin rims along instance boundaries: labels that are only the blurred outline of another instance.

A feature map upsampled from a coarse token grid blurs across object boundaries: the pixels of a 1-3 px band
along an object's outline get features between the object's and its surroundings', and clustering can give
that band its own label. Tracked on its own, such a band becomes an extra published ID for every object it
outlines. A band is told from a genuinely thin object by two tests over all views of the window together:

- it is thin: an erosion by half the band width (rounded up) leaves almost nothing of it, and
- it hugs one instance: most of its pixels lie within the band width of that one instance's pixels.

A pole or a cable standing apart is thin but hugs no instance (only unlabelled pixels or scene structure),
and a small object beside a large one touches it along one side only: both are kept. Scene structure
(floor, walls) is neither absorbed nor a target: a band between an object and the floor hugs the object;
a thin object on the floor hugs only the floor, and looks exactly like it would standing apart.

A rim's pixels become unlabelled rather than joining the instance they hug: they straddle the boundary, half
of them on the object and half beside it, and on scenes outside every benchmark giving them to the object
lowered its IoU (T-mIoU 0.376 -> 0.371 with the embedded model) where leaving them out raised it (0.392).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

MAX_CORE_FRACTION = 0.25
"""A label is thin when at most this share of its pixels survives the erosion."""
MIN_HUG_FRACTION = 0.75
"""A thin label hugs an instance when at least this share of its pixels lies within the band width of it."""

_SQUARE = np.ones((3, 3), bool)


def rim_labels(labels: np.ndarray, num_labels: int, width_px: int, skip: np.ndarray | None = None) -> np.ndarray:
    """[num_labels+1] bool: the labels that are rims of another instance (index 0, no instance, is False).

    Args:
        labels: [V,H,W] window labels 0..``num_labels`` (0 = no instance), the same label in every view.
        width_px: the widest band that counts as a rim, in pixels of `labels` (0 = no label is a rim).
        skip: [num_labels+1] bool, labels that are scene structure: never a rim, never hugged.
    """
    rim = np.zeros(num_labels + 1, bool)
    if width_px <= 0 or num_labels < 2:
        return rim
    skip = np.zeros(num_labels + 1, bool) if skip is None else np.asarray(skip, bool)[: num_labels + 1]
    erode = (width_px + 1) // 2
    total = np.zeros(num_labels + 1, np.int64)
    core = np.zeros(num_labels + 1, np.int64)
    boxes = [ndimage.find_objects(view, max_label=num_labels) for view in labels]
    # thinness first: an erosion per label and view, cheap inside the label's box; the neighbour test below
    # runs only for the few thin labels
    for view, view_boxes in zip(labels, boxes, strict=True):
        for index, box in enumerate(view_boxes):
            lab = index + 1
            if box is None or skip[lab]:
                continue
            mask = _padded(view, box, erode + 1) == lab
            total[lab] += int(np.count_nonzero(mask))
            # outside the image counts as inside the mask: an object cut by the border is not thinner for it
            # (inside the image the padding around the box is not the label, so it erodes as it should)
            core[lab] += int(np.count_nonzero(ndimage.binary_erosion(mask, _SQUARE, iterations=erode,
                                                                      border_value=1)))
    thin = (total > 0) & (core <= MAX_CORE_FRACTION * total)
    thin[0] = False
    if not thin.any():
        return rim
    target_ok = ~skip
    target_ok[0] = False
    hug = np.zeros((num_labels + 1, num_labels + 1), np.int64)
    for view, view_boxes in zip(labels, boxes, strict=True):
        for lab in np.flatnonzero(thin):
            box = view_boxes[lab - 1]
            if box is None:
                continue
            sub = _padded(view, box, width_px)
            others = target_ok[sub] & (sub != lab)
            if not others.any():
                continue
            # chessboard distance to the nearest pixel of another instance, and which instance that is
            dist, (iy, ix) = ndimage.distance_transform_cdt(~others, metric="chessboard", return_indices=True)
            near = (sub == lab) & (dist <= width_px)
            hug[lab] += np.bincount(sub[iy[near], ix[near]], minlength=num_labels + 1)[: num_labels + 1]
    hugged = np.argmax(hug, axis=1)
    hugs = thin & (hug[np.arange(num_labels + 1), hugged] >= MIN_HUG_FRACTION * np.maximum(total, 1))
    for lab in np.flatnonzero(hugs):
        other = int(hugged[lab])
        # two thin labels hugging each other (a pole and a strip along it): the larger one is an object
        rim[lab] = not (hugs[other] and hugged[other] == lab and (total[other], other) < (total[lab], lab))
    return rim


def _padded(view: np.ndarray, box: tuple[slice, slice], pad: int) -> np.ndarray:
    h, w = view.shape
    ys, xs = box
    return view[max(ys.start - pad, 0): min(ys.stop + pad, h), max(xs.start - pad, 0): min(xs.stop + pad, w)]
