"""Clustering settings turned into pixel and sample counts for one model input size.

The engine may run at any multiple of 28 from 84 px up (the embedded tiny model at 140x84, the
official one at 504x336), so the clustering settings are not in pixels:

* Areas are fractions of a view (``clustering.min_instance_area``); ``min_instance_area_px`` > 0
  overrides the fraction with an absolute pixel count at the model resolution.
* The sampling grid follows the pixel count: each view is cut into about
  ``clustering.patches_per_view`` patches, whatever its size. A patch reads 2x2 pixels ``read_px``
  apart (four reads are the fewest that can tell a clean patch from a boundary one); patches start
  every ``stride_px`` pixels. At 504x336 that is a 4-px grid of 4x4-px patches read at every second
  pixel; at 252x168 a 2-px grid of 2x2 patches; below about 200x100 pixels a 1-px grid of
  overlapping 2x2 patches. An object covering a given fraction of the view therefore gives about the
  same number of clustering samples at every resolution, which is what HDBSCAN's
  ``min_cluster_size`` (in samples) is compared with.
* A view too small to hold ``patches_per_view`` patches even on the 1-px grid gives fewer samples per
  object; ``min_cluster_size`` shrinks with the patch density there (not below 3 samples).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from iggt_ros.config import ClusteringConfig

MIN_CLUSTER_SIZE_FLOOR = 3
"""HDBSCAN needs a few points to call something dense; below this a cluster is indistinguishable from chance."""


@dataclass(frozen=True)
class ViewScale:
    """Pixel and sample counts of the clustering settings at one view size."""

    height: int
    width: int
    stride_px: int
    """Pixels between the origins of neighbouring patches."""
    read_px: int
    """Pixels between the 2x2 reads of a patch (the patch covers 2 * read_px pixels per side)."""
    patches_per_view: int
    """Patches of one view on this grid."""
    configured_patches: int
    """clustering.patches_per_view (the number asked for)."""
    min_cluster_size: int
    """HDBSCAN min_cluster_size in samples at this size."""
    min_instance_area_px: float
    """Smallest mask kept in a view, in pixels at this size."""

    @property
    def patch_density(self) -> float:
        """Patches per view relative to the number asked for (about 1 when the view is large enough)."""
        return self.patches_per_view / max(self.configured_patches, 1)


def patch_grid_size(length: int, stride_px: int, read_px: int) -> int:
    """Patches along a side of `length` pixels: every origin whose last read stays inside."""
    return max(0, (length - read_px - 1) // stride_px + 1)


def view_scale(config: ClusteringConfig, height: int, width: int) -> ViewScale:
    """Grid, cluster size and area threshold of `config` for views of height x width pixels."""
    pixels = max(height * width, 1)
    stride = max(1, int(round(math.sqrt(pixels / max(config.patches_per_view, 1)))))
    read = max(1, stride // 2)
    patches = patch_grid_size(height, stride, read) * patch_grid_size(width, stride, read)
    density = min(1.0, patches / max(config.patches_per_view, 1))
    min_cluster = max(MIN_CLUSTER_SIZE_FLOOR, int(round(config.min_cluster_size * density)))
    min_cluster = min(min_cluster, config.min_cluster_size)
    if config.min_instance_area_px > 0:
        min_area = float(config.min_instance_area_px)
    else:
        min_area = config.min_instance_area * pixels
    return ViewScale(height, width, stride, read, patches, config.patches_per_view, min_cluster, min_area)
