"""The recent camera frames and ground truth of a replay, kept in bounded memory.

Two readers need the truth of a view after its image was read: the ground-truth oracle engine
(which answers `infer` from it) and the evaluation (which compares each output view with it). Both
only ever ask about views that can still be in a window, so the store keeps:

* the views the pipeline still holds (`Pipeline.held_views`: waiting in the synchroniser or among
  the buffered keyframes), asked after every frame, so the store follows the core's own rules, and
* ground truth read ahead of its image (the image is offered a moment later);

and drops every other view. A hard cap on the number of views guards against truth whose image
never comes.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from iggt_ros.bag.reader import CameraImage, GroundTruthImage
from iggt_ros.engine.base import ViewKey
from iggt_ros.synthetic.types import RenderedView

log = logging.getLogger(__name__)


@dataclass
class ViewTruth:
    """One camera image of the bag with whatever ground truth it has."""

    image: CameraImage | None = None
    instances: np.ndarray | None = None
    """[H,W] uint16 true instance IDs (0 = background)."""
    depth: np.ndarray | None = None
    """[H,W] float32 true depth, metres."""


class TruthStore:
    """ViewKey -> `ViewTruth` for the views a window may still use (see the module docstring)."""

    def __init__(self, window_size: int, cameras: int, sync_queue_size: int) -> None:
        self.max_views = max(16, 4 * max(cameras, 1) * (window_size + sync_queue_size + 2))
        self._views: OrderedDict[ViewKey, ViewTruth] = OrderedDict()
        self.evicted_by_cap = 0

    def __len__(self) -> int:
        return len(self._views)

    def get(self, key: ViewKey) -> ViewTruth | None:
        return self._views.get(key)

    def _entry(self, key: ViewKey) -> ViewTruth:
        entry = self._views.get(key)
        if entry is None:
            entry = self._views[key] = ViewTruth()
            while len(self._views) > self.max_views:
                self._views.popitem(last=False)
                self.evicted_by_cap += 1
        return entry

    def add_image(self, image: CameraImage) -> None:
        self._entry(ViewKey(image.camera, image.stamp_ns)).image = image

    def add_ground_truth(self, gt: GroundTruthImage) -> None:
        entry = self._entry(ViewKey(gt.camera, gt.stamp_ns))
        if gt.kind == "instances":
            entry.instances = np.asarray(gt.array)
        elif gt.kind == "depth":
            entry.depth = np.asarray(gt.array, dtype=np.float32)

    def keep_only(self, held: set[ViewKey]) -> None:
        """Forget every view whose image was offered to the pipeline and that the pipeline no longer holds."""
        for key in [k for k, v in self._views.items() if v.image is not None and k not in held]:
            del self._views[key]

    def clear(self) -> None:
        """Forget everything (time jumped: stamps of the next loop would collide with this one's)."""
        self._views.clear()

    # ------------------------------------------------------------------ oracle lookup
    def rendered_view(self, key: ViewKey) -> RenderedView:
        """The truth of one view as the oracle engine reads it; KeyError (with the reason) when incomplete."""
        entry = self._views.get(key)
        if entry is None or entry.image is None:
            raise KeyError(f"no image of camera '{key.camera}' at {key.stamp_ns} is held")
        image = entry.image
        missing = [name for name, value in (("instances", entry.instances), ("depth", entry.depth),
                                            ("pose (TF)", image.world_from_camera),
                                            ("intrinsics (camera_info)", image.intrinsics)) if value is None]
        if missing:
            raise KeyError(f"camera '{key.camera}' at {key.stamp_ns} has no ground-truth {', '.join(missing)}")
        return RenderedView(camera=key.camera, stamp_ns=key.stamp_ns, rgb=image.rgb, depth=entry.depth,
                            instance_ids=entry.instances, intrinsics=image.intrinsics,
                            world_from_camera=image.world_from_camera)
