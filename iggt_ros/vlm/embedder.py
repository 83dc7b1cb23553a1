"""Per-instance embeddings, aggregated over views and computed off the inference thread.

The inference thread only hands over segmented views (`submit` never blocks: a bounded queue
drops the oldest view when the worker falls behind). The worker embeds an instance only when it
is new or has changed, because region encoders are far too slow to run on every instance of
every window:

- new: the instance has never been embedded;
- larger view: its mask in this view is larger than every mask embedded so far by more than
  `embed_area_growth` (a closer or less occluded look);
- refresh: `embed_refresh_views` views have shown it since its last embedding.

Each instance keeps its best `embed_max_views` per-view embeddings (by mask area x confidence);
its embedding is their weighted mean, renormalised. Results go to an `EmbeddingStore` keyed by
instance ID, which the query side reads at any time, and to an optional listener (the query side
re-labels the instances whose embedding changed). Instances seen only in masks smaller than
`embed_min_area_px` are remembered with their largest mask, so the reader can say why they have
no embedding instead of "not embedded yet".
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from iggt_ros.config import QueryConfig
from iggt_ros.vlm.crop import crop_region, view_regions
from iggt_ros.vlm.encoders import RegionEncoder, normalize_rows
from iggt_ros.vlm.types import RegionCrop, ViewObservation


@dataclass
class InstanceEmbedding:
    """The current embedding of one instance."""

    vector: np.ndarray
    """[D] unit vector."""
    views: int
    """Per-view embeddings aggregated into `vector`."""
    version: int
    """Increments each time the instance is re-embedded."""
    updated_ns: int
    """Stamp of the newest view that contributed."""


class EmbeddingStore:
    """Thread-safe instance ID -> `InstanceEmbedding`, written by the embedder, read by queries."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: dict[int, InstanceEmbedding] = {}

    def put(self, instance_id: int, item: InstanceEmbedding) -> None:
        with self._lock:
            self._items[int(instance_id)] = item

    def get(self, instance_id: int) -> InstanceEmbedding | None:
        with self._lock:
            return self._items.get(int(instance_id))

    def remove(self, instance_id: int) -> None:
        with self._lock:
            self._items.pop(int(instance_id), None)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def vectors(self) -> dict[int, np.ndarray]:
        """A snapshot: instance ID -> embedding vector."""
        with self._lock:
            return {k: v.vector for k, v in self._items.items()}

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


@dataclass
class _ViewEntry:
    vector: np.ndarray
    weight: float
    area_px: int
    crop: RegionCrop | None = None


@dataclass
class _InstanceState:
    entries: list[_ViewEntry] = field(default_factory=list)
    max_area_px: int = 0
    views_since_embed: int = 0
    version: int = 0


@dataclass
class EmbedderStats:
    views_processed: int = 0
    views_dropped: int = 0
    regions_encoded: int = 0
    encoder_calls: int = 0
    last_encode_ms: float = 0.0


class InstanceEmbedder:
    """Keeps `store` up to date from segmented views; see the module docstring for the rules.

    Use `submit` from the inference thread together with `start`/`stop` (a daemon worker), or
    `process` directly for synchronous use (replay, benchmarks, tests).
    """

    def __init__(self, encoder: RegionEncoder, config: QueryConfig | None = None,
                 store: EmbeddingStore | None = None, keep_views: int = 0,
                 listener: Callable[[list[int]], None] | None = None):
        cfg = config or QueryConfig()
        self.encoder = encoder
        self.store = store if store is not None else EmbeddingStore()
        self.min_area_px = cfg.embed_min_area_px
        self.refresh_views = cfg.embed_refresh_views
        self.area_growth = cfg.embed_area_growth
        self.max_views = cfg.embed_max_views
        self.keep_views = keep_views
        """Crops kept per instance (its best views) for LMM grounding; 0 keeps none."""
        self.listener = listener
        """Called with the IDs whose embedding changed, after each view (on the thread that processed it)."""
        self.stats = EmbedderStats()
        self._states: dict[int, _InstanceState] = {}
        self._small: dict[int, int] = {}
        """Instances never embedded, seen only in masks below min_area_px -> their largest mask (pixels)."""
        self._state_lock = threading.Lock()
        self._queue: collections.deque[ViewObservation] = collections.deque(maxlen=cfg.embed_queue_size)
        self._cond = threading.Condition()
        self._busy = False
        self._thread: threading.Thread | None = None
        self._stop = False

    # ------------------------------------------------------------------ worker
    def start(self) -> InstanceEmbedder:
        """Start the background worker (idempotent)."""
        if self._thread is None or not self._thread.is_alive():
            self._stop = False
            self._thread = threading.Thread(target=self._run, name="iggt-embedder", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the worker after the view being processed; queued views are discarded."""
        with self._cond:
            self._stop = True
            self._queue.clear()
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def submit(self, view: ViewObservation) -> bool:
        """Queue a view for the worker without blocking; False when an older view had to be dropped."""
        with self._cond:
            dropped = len(self._queue) == self._queue.maxlen
            if dropped:
                self.stats.views_dropped += 1
            self._queue.append(view)
            self._cond.notify_all()
        return not dropped

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until the queue is empty and the worker is idle; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                view = self._queue.popleft()
                self._busy = True
            try:
                self.process(view)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    # ------------------------------------------------------------------ rules
    def forget(self, instance_ids) -> None:
        """Drop instances the map has removed (their embeddings and view history)."""
        with self._state_lock:
            for iid in instance_ids:
                self._states.pop(int(iid), None)
                self._small.pop(int(iid), None)
                self.store.remove(int(iid))

    def reset(self) -> None:
        with self._state_lock:
            self._states.clear()
            self._small.clear()
            self.store.clear()

    def small_masks(self) -> dict[int, int]:
        """Instances not embedded because every mask so far was below min_area_px -> largest mask (pixels)."""
        with self._state_lock:
            return dict(self._small)

    def process(self, view: ViewObservation) -> list[int]:
        """Embed the new or changed instances of one view now; returns the IDs re-embedded."""
        seen = view_regions(view)
        regions = {iid: r for iid, r in seen.items() if r[0] >= self.min_area_px}
        todo: list[tuple[int, RegionCrop]] = []
        with self._state_lock:
            for iid, (area, _) in seen.items():
                state = self._states.get(iid)
                if area < self.min_area_px and (state is None or state.version == 0):
                    self._small[iid] = max(self._small.get(iid, 0), area)
            for iid, (area, weight) in regions.items():
                state = self._states.setdefault(iid, _InstanceState())
                state.views_since_embed += 1
                if self._changed(state, area):
                    ids = np.asarray(view.instance_ids)
                    crop = crop_region(view.rgb, ids == iid, weight=weight, box_size_m=view.box_sizes.get(iid))
                    if crop is not None:
                        todo.append((iid, crop))
        self.stats.views_processed += 1
        if not todo:
            return []
        t0 = time.perf_counter()
        vectors = self.encoder.encode([crop for _, crop in todo])
        self.stats.last_encode_ms = (time.perf_counter() - t0) * 1e3
        self.stats.encoder_calls += 1
        self.stats.regions_encoded += len(todo)
        with self._state_lock:
            for (iid, crop), vec in zip(todo, vectors, strict=True):
                state = self._states.get(iid)
                if state is None:  # forgotten while encoding
                    continue
                self._add_entry(state, _ViewEntry(vec, crop.weight, crop.area_px,
                                                  crop if self.keep_views > 0 else None))
                self._small.pop(iid, None)
                self.store.put(iid, InstanceEmbedding(vector=self._aggregate(state), views=len(state.entries),
                                                      version=state.version, updated_ns=view.stamp_ns))
        changed = [iid for iid, _ in todo]
        self._notify(changed)
        return changed

    def _notify(self, changed: list[int]) -> None:
        if self.listener is not None:
            self.listener(changed)

    def _changed(self, state: _InstanceState, area_px: int) -> bool:
        return (state.version == 0
                or area_px > state.max_area_px * (1.0 + self.area_growth)
                or state.views_since_embed >= self.refresh_views)

    def _add_entry(self, state: _InstanceState, entry: _ViewEntry) -> None:
        state.entries.append(entry)
        state.entries.sort(key=lambda e: e.weight, reverse=True)
        del state.entries[self.max_views:]
        for dropped in state.entries[self.keep_views:]:
            dropped.crop = None
        state.max_area_px = max(state.max_area_px, entry.area_px)
        state.views_since_embed = 0
        state.version += 1

    def best_views(self, instance_id: int, count: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """(rgb crop, mask) of an instance's best kept views, best first (needs keep_views > 0)."""
        with self._state_lock:
            state = self._states.get(int(instance_id))
            crops = [e.crop for e in state.entries if e.crop is not None] if state is not None else []
        return [(c.rgb, c.mask) for c in crops[:count]]

    @staticmethod
    def _aggregate(state: _InstanceState) -> np.ndarray:
        vecs = np.stack([e.vector for e in state.entries])
        w = np.array([max(e.weight, 1e-6) for e in state.entries], dtype=np.float32)
        return normalize_rows((w[:, None] * vecs).sum(axis=0, keepdims=True))[0]
