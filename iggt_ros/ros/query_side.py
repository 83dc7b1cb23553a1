"""The node's text-query side: instance embeddings kept current in the background, queries answered at once.

`/iggt/query` ranks with `iggt_ros.vlm.query.answer_query`, the function behind `iggt-ros query`,
on the pipeline's latest map snapshot and the embeddings computed so far. Nothing here waits for
inference: encoders load in a background thread at configure time (a query before they are ready
is answered with a clear "still loading"), and views are embedded by the embedder's own worker.

Labels come from the same embeddings, by the query index's rule (the replay uses the same one):
whenever an instance's embedding changes, the embedder's worker matches it against the label
vocabulary (`query.label_vocabulary`) and hands the label and score to `on_label` (the node writes
them into the object map). `annotate` gives every unlabelled
instance the reason it has none.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from iggt_ros.config import QueryConfig
from iggt_ros.messages import convention as C
from iggt_ros.messages import layouts as L
from iggt_ros.messages.message import Header, MessageData
from iggt_ros.perception.object_map import ObjectInstance
from iggt_ros.perception.pipeline import MapSnapshot, WindowResult
from iggt_ros.perception.records import InstanceRecord, instance_record
from iggt_ros.vlm.answer_frame import transform_records
from iggt_ros.vlm.labels import NOT_EMBEDDED_YET, LabelVocabulary, attribute_vocabulary, too_small_reason
from iggt_ros.vlm.query import QueryResult, answer_query
from iggt_ros.vlm.query_index import LabelSink, QueryIndex
from iggt_ros.vlm.understanding import reader_for

Logger = Callable[[str], None]
TransformLookup = Callable[[str, str, int], np.ndarray]
"""(target frame, source frame, stamp ns) -> 4x4 target_from_source; raises when TF cannot give it."""


@dataclass
class QueryAnswer:
    """A /iggt/query response as plain data (the node converts `instances` to its InstanceArray)."""

    success: bool
    message: str
    instances: MessageData
    """iggt_ros/InstanceArray layout of the ranked instances, stamped like the snapshot."""
    scores: list[float]
    understood: str = ""
    """How the text was read (target attributes, relation, references)."""


def tf_lookup(buffer: Any) -> TransformLookup | None:
    """A `TransformLookup` over the node's TF buffer: tf2_ros.Buffer or the package's TransformBuffer."""
    if buffer is None:
        return None
    if hasattr(buffer, "lookup_transform"):
        from rclpy.time import Time

        from iggt_ros.spatial import transform_from

        def lookup(target: str, source: str, stamp: int) -> np.ndarray:
            t = buffer.lookup_transform(target, source, Time(nanoseconds=int(stamp))).transform
            return transform_from((t.translation.x, t.translation.y, t.translation.z),
                                  (t.rotation.x, t.rotation.y, t.rotation.z, t.rotation.w))
        return lookup
    return lambda target, source, stamp: buffer.lookup(target, source, int(stamp))


class QuerySide:
    """Encoders, the instance embedder and query answering for one node configuration."""

    def __init__(self, config: QueryConfig, info: Logger, error: Logger, on_label: LabelSink | None = None) -> None:
        self.config = config
        self._info = info
        self._error = error
        self._on_label = on_label
        self._text_encoder: Any = None
        self._embedder: Any = None
        self._index: QueryIndex | None = None
        self._grounder: Any = None
        self._vocabulary: LabelVocabulary | None = None
        self._ready = threading.Event()
        self._failure = ""
        self._stopped = False
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ life cycle
    def start(self) -> None:
        """Load the encoders in the background (they take seconds; configure should not wait)."""
        if self.config.text_encoder == "none":
            self._info("queries: disabled (query.text_encoder is 'none')")
            self._ready.set()
            return
        self._thread = threading.Thread(target=self._load, name="iggt-query-load", daemon=True)
        self._thread.start()

    def _load(self) -> None:
        from iggt_ros.vlm.embedder import InstanceEmbedder
        from iggt_ros.vlm.lmm import LmmGrounder
        from iggt_ros.vlm.registry import make_region_encoder, make_text_encoder

        try:
            text = make_text_encoder(self.config)
            if text is not None:
                reader_for(text).warm()  # the first query should not pay for the reader's tables
            region = make_region_encoder(self.config)
            vocabulary = (LabelVocabulary(self.config.label_vocabulary or attribute_vocabulary(), text)
                          if text is not None and region is not None else None)
        except Exception as exc:  # a missing optional library or weights file: queries fail with the reason
            self._failure = f"text queries are unavailable: {exc}"
            self._error(self._failure)
            self._ready.set()
            return
        with self._lock:
            if self._stopped:
                return
            self._text_encoder = text
            self._vocabulary = vocabulary
            self._grounder = LmmGrounder.from_config(self.config)
            # LMM grounding shows the model an instance's best views, so the embedder keeps them.
            keep = self.config.lmm_max_views if self._grounder is not None else 0
            if region is not None:
                self._index = QueryIndex(InstanceEmbedder(region, self.config, keep_views=keep), asynchronous=True,
                                         labels=vocabulary, on_label=self._on_label)
                self._embedder = self._index.embedder
        grounding = f", LMM grounding via {self.config.lmm_endpoint}" if self._grounder is not None else ""
        self._info(f"queries: text encoder '{self.config.text_encoder}', region encoder "
                   f"'{self.config.region_encoder}' ready{grounding}")
        self._ready.set()

    def wait_ready(self, timeout: float) -> bool:
        return self._ready.wait(timeout)

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            index, self._index, self._embedder = self._index, None, None
        if index is not None:
            index.stop()

    def reset(self) -> None:
        with self._lock:
            embedder = self._embedder
        if embedder is not None:
            embedder.reset()

    def wait_idle(self, timeout: float) -> bool:
        """Until every submitted view is embedded (tests and offline use)."""
        with self._lock:
            embedder = self._embedder
        return True if embedder is None else embedder.wait_idle(timeout)

    # ------------------------------------------------------------------ input
    def observe(self, result: WindowResult) -> int:
        """Hand the window's new views to the query index (never blocks); returns how many were submitted."""
        with self._lock:
            index = self._index
        return 0 if index is None else index.observe(result)

    # ------------------------------------------------------------------ labels
    def label_reason(self, instance_id: int) -> str:
        """Why an instance has no label (for an unlabelled instance; says nothing about labelled ones)."""
        if not self._ready.is_set():
            return f"not labelled yet: the encoders '{self.config.text_encoder}' are loading"
        if self._failure:
            return f"labels unavailable: {self._failure}"
        for key in ("text_encoder", "region_encoder"):
            if getattr(self.config, key) == "none":
                return f"labels are off: query.{key} is 'none'"
        with self._lock:
            embedder = self._embedder
        small = embedder.small_masks().get(int(instance_id)) if embedder is not None else None
        if small is not None:
            return too_small_reason(small, self.config.embed_min_area_px)
        return NOT_EMBEDDED_YET

    def annotate(self, instances: Sequence[ObjectInstance]) -> list[ObjectInstance]:
        """Copies of `instances` in which every unlabelled one carries the reason it has no label."""
        return [inst if inst.label else dataclasses.replace(inst, label_reason=self.label_reason(inst.id))
                for inst in instances]

    # ------------------------------------------------------------------ queries
    def respond(self, text: str, snapshot: MapSnapshot, max_results: int = 0, min_score: float = 0.0,
                target_frame: str = "", lookup: TransformLookup | None = None) -> QueryAnswer:
        """The content of a /iggt/query response: the ranked instances of the snapshot with their scores.

        `target_frame` (empty: the map's frame) is where boxes and centroids are returned, by `lookup`
        at the snapshot's stamp; the robot's `base_link` pose from the same lookup gives relations
        ('left of', 'in front of') their directions. A transform TF cannot give fails the query with
        the reason; a missing base_link pose only makes directions those of the map frame (said in
        `understood`).
        """
        map_frame = snapshot.frame_id
        target_frame = (target_frame or "").strip().lstrip("/")
        target_from_map = None
        if target_frame and target_frame != map_frame:
            if lookup is None:
                return self._failure_answer(snapshot, f"cannot answer in frame '{target_frame}': TF is not available "
                                                      f"(input.use_tf is off or tf2 is missing); leave target_frame "
                                                      f"empty for the map frame '{map_frame}'")
            try:
                target_from_map = np.asarray(lookup(target_frame, map_frame, int(snapshot.stamp_ns)), np.float64)
            except Exception as exc:  # tf2 raises several exception types; all mean "no transform"
                return self._failure_answer(snapshot, f"cannot answer in frame '{target_frame}': no transform from "
                                                      f"'{map_frame}' at the map's stamp {int(snapshot.stamp_ns)} ns "
                                                      f"({exc}); check TF or leave target_frame empty")
        viewer = None
        if lookup is not None:
            try:
                viewer = np.asarray(lookup(map_frame, C.BASE_FRAME, int(snapshot.stamp_ns)), np.float64)
            except Exception:  # no base_link: relations use the map frame's axes, and say so
                viewer = None
        result = self.answer(text, snapshot, max_results, min_score, viewer=viewer)
        by_id = {int(i.id): i for i in snapshot.instances}
        ranked = [(r, s) for r, s in zip(result.instances, result.scores, strict=True) if r.id in by_id]
        rows = [instance_record(by_id[r.id]) for r, _ in ranked]
        frame = map_frame
        if target_from_map is not None:
            rows, frame = transform_records(rows, target_from_map), target_frame
        header = Header(int(snapshot.stamp_ns), frame)
        return QueryAnswer(bool(result.success), result.message, L.instance_array(header, rows),
                           [float(s) for _, s in ranked], result.understood)

    def _failure_answer(self, snapshot: MapSnapshot, message: str) -> QueryAnswer:
        return QueryAnswer(False, message, L.instance_array(Header(int(snapshot.stamp_ns), snapshot.frame_id), []), [])

    def answer(self, text: str, snapshot: MapSnapshot, max_results: int = 0, min_score: float = 0.0,
               viewer: np.ndarray | None = None) -> QueryResult:
        if not self._ready.is_set():
            return QueryResult(False, f"the text encoder '{self.config.text_encoder}' is still loading; try again "
                                      "in a few seconds", [], snapshot.frame_id)
        if self._failure:
            return QueryResult(False, self._failure, [], snapshot.frame_id)
        with self._lock:
            encoder, embedder = self._text_encoder, self._embedder
        vectors = embedder.store.vectors() if embedder is not None else {}
        instances: Sequence[InstanceRecord] = [instance_record(i, vectors.get(int(i.id)))
                                                  for i in self.annotate(snapshot.instances)]
        result = answer_query(text, instances, encoder, self.config, max_results=int(max_results),
                              min_score=float(min_score), frame_id=snapshot.frame_id, viewer=viewer)
        if self._grounder is not None and embedder is not None:
            from iggt_ros.vlm.lmm import ground_result

            # Bounded by query.lmm_timeout_s per candidate; runs in the services' callback group.
            result = ground_result(result, text, self._grounder, embedder.best_views)
        return result
