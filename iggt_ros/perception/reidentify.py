"""Re-identification of objects that come back into view, against the whole object as mapped.

The tracker matches a detection to a track by mask overlap on shared views, position and embedding
(`tracking`). While an object is in view, its track's centroid and extent follow the latest detections
(a running mean), which describe the part of the object the last windows saw. The robot often comes
back from another side: the new detection then lies half an object away from the old one, the
position kernel scores it too low, and the object gets a second ID. Two rules repair this, both
applied after every window once its detections have joined the map (`Pipeline`):

* Lost geometry. When a track becomes lost (``tracking.lost_windows`` windows unseen), its centroid
  and extent become those of its voxels in the map (every part seen so far, measured like a
  detection: median point, 5th to 95th percentile per world axis), which is what a view from any side
  is compared with. The tracker's size gate (at most 3x larger or smaller) still keeps a small object
  on a large one from taking its ID.
* Folding. An instance detected in this window and one not detected in it are one object when they
  were never detected as separate instances in the same window and at least half of the smaller
  one's voxels lie within ``NEAR_VOXELS`` voxels of the other's. The younger ID is folded into the
  older one (`ObjectMap.merge`, `InstanceTracker.merge`), in this window's ID images already. Views
  from two sides share their edges and, once each ID has seen a little more, most of their surface,
  so a second ID given to a returning object does not outlive the next few windows that see it.
  Co-visibility keeps identical objects side by side apart.

Structure tracks (`structure`) are not in the map and take part in neither rule.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np

from iggt_ros.perception.object_map import ObjectMap
from iggt_ros.perception.records import TrackState
from iggt_ros.perception.tracking import InstanceTracker

log = logging.getLogger(__name__)

NEAR_VOXELS = 2.0
"""Distance, in voxels (``mapping.voxel_size_m``), within which two instances' voxels are the same surface."""
FOLD_FRACTION = 0.5
"""Share of the smaller instance's voxels near the other's above which the two are one object."""


def refresh_lost(tracker: InstanceTracker, omap: ObjectMap) -> list[int]:
    """Give every track that became lost in this window its mapped geometry; return their IDs."""
    lost_at = tracker.config.lost_windows
    refreshed = []
    for tid, track in tracker.tracks.items():
        if track.state == TrackState.LOST and track.misses == lost_at and tid in omap and not track.structure:
            centre, size = omap.extent(tid)
            if size.any():
                track.centroid, track.extent = centre, size
                refreshed.append(tid)
    return refreshed


def fold(tracker: InstanceTracker, omap: ObjectMap, in_view: Iterable[int], voxel_size: float,
         lut: np.ndarray | None = None) -> list[tuple[int, int]]:
    """Fold each instance of `in_view` and an unseen one that are one object (module rule); return (kept, folded).

    lut: this window's label -> ID table, rewritten in place so the window's images carry the kept ID.
    """
    distance = NEAR_VOXELS * voxel_size
    folded: list[tuple[int, int]] = []
    for tid in list(in_view):
        track = tracker.tracks.get(tid)
        if track is None or tid not in omap or track.structure:
            continue
        best, best_fraction = None, FOLD_FRACTION
        for other in tracker.tracks.values():
            if (other.id == tid or other.misses == 0 or other.structure or other.id in track.co_visible
                    or other.id not in omap):
                continue
            fraction = omap.near_fraction(tid, other.id, distance)
            if fraction >= best_fraction:
                best, best_fraction = other.id, fraction
        if best is None:
            continue
        other = tracker.tracks[best]
        keep, drop = (best, tid) if (other.first_seen_ns, best) < (track.first_seen_ns, tid) else (tid, best)
        omap.merge(keep, drop)
        tracker.merge(keep, drop, lut)
        folded.append((keep, drop))
        log.info("instance %d folded into %d: %.0f%% of the voxels on the same surface, never seen apart", drop,
                 keep, 100 * best_fraction)
    return folded
