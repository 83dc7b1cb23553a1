"""The object map with one operation more: re-expressing every instance in another frame.

Needed once per run at most, when the output moves from the fallback frame to the world frame
(TF arrived after the map was started, see `mapping`): each instance's voxel points go through the
similarity and are voxelised again at the map's voxel size (the unit may change, e.g. from the
model's unit to metres), keeping each voxel's age so the oldest still go first. Centroids and
gravity-aligned boxes are derived from the points, so they follow. Done under the map's lock, so a
reader never sees half the instances moved.
"""

from __future__ import annotations

import numpy as np

from iggt_ros.perception.mapping import Similarity
from iggt_ros.perception.object_map import ObjectMap


class ReexpressibleObjectMap(ObjectMap):
    """`ObjectMap` whose instances can be moved into another frame all at once."""

    def reexpress(self, similarity: Similarity) -> None:
        """Express every instance's points in the similarity's target frame."""
        with self._lock:
            for entry in self._entries.values():
                if len(entry.points):
                    points = similarity.apply(entry.points).astype(np.float32)
                    self._store(entry, points, entry.colors, entry.age)
