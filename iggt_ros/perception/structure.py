"""Scene structure: pieces of walls, floor and ceiling are not objects, so the map does not keep them.

Clustering already labels a cluster 0 when it covers much of a window and spans it in 3D
(``clustering.background_fraction``). The background is not always one cluster, though: an instance
head's features on a large surface drift slowly across it, and a clustering pass can cut a floor
into pieces of a few percent of the window each. Each piece is then an "instance" several metres
long that the tracker follows and the map keeps like an object.

Rule: in a metric window (TF or a rig baseline), an instance whose size exceeds
``mapping.max_object_size_m`` is scene structure. Size is the longest side of the detection's extent
in the window (5th to 95th percentile along each world axis) or of the instance's box in the map (its
voxels over all windows: a piece of wall grows as more of it is seen). Structure is a property of the
track and stays with it: its pixels are published as 0 (no instance) in the ID images and the cloud,
it is not in the object map, `/iggt/instances`, saved maps or queries, and the tracker still matches
it, so the same piece of wall does not come back as a new instance in every window. A window whose
scale is the model's own (no TF, no rig baseline) says nothing in metres and marks nothing. 0 turns
the rule off.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from iggt_ros.perception.object_map import ObjectMap
from iggt_ros.perception.tracking import InstanceTracker


def too_large(size: np.ndarray, limit_m: float) -> bool:
    """Whether a size (per-axis extent, or box sides) exceeds the largest object (`limit_m` 0: never)."""
    return limit_m > 0 and float(np.max(size, initial=0.0)) > limit_m


def check_map(omap: ObjectMap, tracker: InstanceTracker, ids: Iterable[int], limit_m: float) -> list[int]:
    """Instances among `ids` whose box in the map outgrew `limit_m`: marked structure and removed from `omap`."""
    if limit_m <= 0:
        return []
    marked = []
    for tid in ids:
        if tid in omap and tid in tracker.tracks and too_large(omap.instance(tid).box_size, limit_m):
            tracker.tracks[tid].structure = True
            omap.remove(tid)
            marked.append(tid)
    return marked


def published(lut: np.ndarray, tracker: InstanceTracker) -> np.ndarray:
    """A copy of the label -> ID table with structure IDs set to 0 (what the ID images and cloud show)."""
    out = lut.copy()
    hidden = [tid for tid, t in tracker.tracks.items() if t.structure]
    if hidden:
        out[np.isin(out, np.asarray(hidden, out.dtype))] = 0
    return out
