"""Cutting one instance out of a view: a square crop around its mask, with the mask kept alongside.

Square crops keep an object's aspect ratio (a cylinder must not turn into a cube when resized),
and the margin keeps a little context so the encoder sees the object's outline.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from iggt_ros.vlm.types import RegionCrop, ViewObservation

MAX_CROP_SIDE = 128
"""Stored crops are downsampled to at most this side; every shipped encoder uses less."""
CROP_MARGIN = 0.15
"""Margin around the mask's bounding box, as a fraction of the box's longer side."""


def square_box(mask: np.ndarray, margin: float = CROP_MARGIN) -> tuple[int, int, int, int] | None:
    """The square (x0, y0, x1, y1) around a mask's bounding box plus margin; None for an empty mask.

    The box may extend past the image border; `crop_region` pads with zeros there.
    """
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return None
    y0, y1 = int(ys.min()), int(ys.max()) + 1
    x0, x1 = int(xs.min()), int(xs.max()) + 1
    side = max(y1 - y0, x1 - x0)
    side = int(np.ceil(side * (1.0 + 2.0 * margin))) + 2
    cy, cx = (y0 + y1) / 2.0, (x0 + x1) / 2.0
    bx0, by0 = int(round(cx - side / 2.0)), int(round(cy - side / 2.0))
    return bx0, by0, bx0 + side, by0 + side


def _paste(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """image[y0:y1, x0:x1] with zero padding where the box leaves the image."""
    x0, y0, x1, y1 = box
    h, w = image.shape[:2]
    out = np.zeros((y1 - y0, x1 - x0) + image.shape[2:], dtype=image.dtype)
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = image[sy0:sy1, sx0:sx1]
    return out


def resize_square(rgb: np.ndarray, mask: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Resize an RGB crop ([h,w,3] uint8) and its mask to side x side, antialiased.

    Returns float32 arrays: rgb [side,side,3] in 0..1 and mask [side,side] in 0..1 (soft at edges).
    """
    t = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).float().unsqueeze(0) / 255.0
    m = torch.from_numpy(mask.astype(np.float32))[None, None]
    both = torch.cat([t, m], dim=1)
    if both.shape[-1] != side or both.shape[-2] != side:
        both = F.interpolate(both, size=(side, side), mode="bilinear", align_corners=False,
                             antialias=both.shape[-1] > side)
    both = both.clamp(0.0, 1.0)[0]
    return both[:3].permute(1, 2, 0).numpy(), both[3].numpy()


def crop_region(rgb: np.ndarray, mask: np.ndarray, weight: float = 1.0,
                box_size_m: np.ndarray | None = None, max_side: int = MAX_CROP_SIDE) -> RegionCrop | None:
    """A `RegionCrop` of one mask in one image, None when the mask is empty."""
    box = square_box(mask)
    if box is None:
        return None
    crop_rgb = _paste(rgb, box)
    crop_mask = _paste(mask.astype(bool), box)
    if crop_rgb.shape[0] > max_side:
        small_rgb, small_mask = resize_square(crop_rgb, crop_mask, max_side)
        crop_rgb = np.round(small_rgb * 255.0).astype(np.uint8)
        crop_mask = small_mask >= 0.5
    return RegionCrop(rgb=crop_rgb, mask=crop_mask, area_px=int(mask.sum()), weight=float(weight),
                      box_size_m=None if box_size_m is None else np.asarray(box_size_m, dtype=np.float32))


def view_regions(view: ViewObservation, min_area_px: int = 1,
                 only: set[int] | None = None) -> dict[int, tuple[int, float]]:
    """Instance ID -> (mask area in pixels, weight) for every instance in a view.

    The weight is area times mean confidence over the mask, so large, well-observed masks count
    more when views are aggregated. `only` restricts the answer to some IDs.
    """
    ids = np.asarray(view.instance_ids)
    flat = ids.ravel().astype(np.int64)
    counts = np.bincount(flat)
    if view.confidence is not None:
        conf_sum = np.bincount(flat, weights=np.asarray(view.confidence, dtype=np.float64).ravel(),
                               minlength=counts.size)
    out: dict[int, tuple[int, float]] = {}
    for iid in np.nonzero(counts)[0]:
        iid = int(iid)
        if iid == 0 or counts[iid] < min_area_px or (only is not None and iid not in only):
            continue
        area = int(counts[iid])
        conf = float(conf_sum[iid] / area) if view.confidence is not None else 1.0
        out[iid] = (area, area * max(conf, 0.0))
    return out
