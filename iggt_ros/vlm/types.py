"""Data that crosses between the perception core, the embedder and the query side.

The vision-language layer needs very little from the rest of the package: for embedding, one
view's RGB image with its instance-ID image; for answering, the list of instances with their box,
centroid and embedding. Keeping these as small dataclasses of its own lets the node, the replay
and the benchmarks feed it without depending on the object map's internals.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class ViewObservation:
    """One segmented camera view, as the embedder consumes it."""

    camera: str
    stamp_ns: int
    rgb: np.ndarray
    """[H,W,3] uint8 RGB."""
    instance_ids: np.ndarray
    """[H,W] integer instance IDs at the same resolution as `rgb`, 0 = no instance."""
    confidence: np.ndarray | None = None
    """[H,W] per-pixel confidence (any positive scale; only ratios matter), None = uniform."""
    box_sizes: dict[int, np.ndarray] = field(default_factory=dict)
    """Instance ID -> [3] metric box extents (any order) when the map knows them; used as a size cue."""


@dataclass
class RegionCrop:
    """One instance in one view: a crop around its mask, with the mask, ready for any region encoder.

    Crops are kept at a moderate resolution (longest side at most `crop.MAX_CROP_SIDE`) so that
    each encoder can resize to its own input size without returning to the full image.
    """

    rgb: np.ndarray
    """[h,w,3] uint8 crop of the image around the mask's bounding box (with margin)."""
    mask: np.ndarray
    """[h,w] bool: the instance's pixels within the crop."""
    area_px: int
    """Mask area in the full-resolution view (pixels), before any resizing."""
    weight: float = 1.0
    """Aggregation weight of this view: mask area times mean confidence."""
    box_size_m: np.ndarray | None = None
    """[3] metric box extents of the instance, when known."""

