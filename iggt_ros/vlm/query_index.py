"""The query index: instance embeddings kept current from the views of each window.

One rule for the node and the replay, so a replayed query state holds what the node would have
embedded: each new view of a window is embedded from the RGB the engine saw (model resolution, the
same pixels as its instance image), with the metric box sizes of the map as a size cue, and an
instance the map no longer holds is forgotten. Labels follow the same rule in both: whenever an
instance's embedding changes, its closest word of the label vocabulary goes to `on_label` (the
pipeline's `set_label`), so /iggt/instances carry the same labels from the node and the replay.
The node runs it asynchronously (the embedder's worker thread; its inference thread never waits),
the replay synchronously (reproducible, nothing to protect); that is the only difference.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from iggt_ros.perception.pipeline import WindowResult
from iggt_ros.vlm.embedder import InstanceEmbedder
from iggt_ros.vlm.labels import LabelVocabulary
from iggt_ros.vlm.types import ViewObservation

LabelSink = Callable[[int, str, float], None]
"""(instance ID, label, score): where labels go as embeddings change."""


class QueryIndex:
    """Feeds an `InstanceEmbedder` from window results; `asynchronous` submits to its worker.

    With `labels` and `on_label`, every re-embedded instance is labelled (on the thread that embedded it).
    """

    def __init__(self, embedder: InstanceEmbedder, asynchronous: bool, labels: LabelVocabulary | None = None,
                 on_label: LabelSink | None = None) -> None:
        self.embedder = embedder
        self.asynchronous = asynchronous
        self.labels = labels
        self.on_label = on_label
        previous = embedder.listener

        def changed(ids: list[int]) -> None:
            if previous is not None:
                previous(ids)
            self._relabel(ids)

        embedder.listener = changed
        if asynchronous:
            embedder.start()

    def _relabel(self, instance_ids: list[int]) -> None:
        labels, sink = self.labels, self.on_label
        if labels is None or sink is None:
            return
        for iid in instance_ids:
            item = self.embedder.store.get(iid)
            if item is not None:
                best = labels.best(item.vector)
                sink(int(iid), best.label, best.score)

    def observe(self, result: WindowResult) -> int:
        """Embed the window's new views (queued when asynchronous); returns how many views were handed over."""
        if result.discarded or result.images is None or len(result.images) != len(result.views):
            return 0
        sizes = {int(i.id): np.asarray(i.box_size, np.float64) for i in result.instances}
        gone = [iid for iid in self.embedder.store.vectors() if iid not in sizes]
        if gone:
            self.embedder.forget(gone)
        handed = 0
        for view, rgb, ids in zip(result.views, result.images, result.instance_images, strict=True):
            if not view.new or not ids.any():
                continue
            observation = ViewObservation(camera=view.camera, stamp_ns=int(view.stamp_ns),
                                          rgb=np.ascontiguousarray(rgb), instance_ids=ids, box_sizes=sizes)
            if self.asynchronous:
                self.embedder.submit(observation)
            else:
                self.embedder.process(observation)
            handed += 1
        return handed

    def vectors(self) -> dict[int, np.ndarray]:
        """Instance ID -> current embedding."""
        return self.embedder.store.vectors()

    def reset(self) -> None:
        """The pipeline started over: instance IDs are reused, so every embedding goes."""
        self.embedder.reset()

    def stop(self) -> None:
        if self.asynchronous:
            self.embedder.stop()
