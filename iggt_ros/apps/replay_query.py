"""The query state a replay leaves behind, so `iggt-ros query` can answer against its last map.

While the replay runs, every window goes through the node's query index
(`iggt_ros.vlm.query_index`), synchronously: a replay has no subscription callbacks to protect,
and running it in line keeps the result reproducible. At the end the last
map snapshot and the embeddings are saved with `iggt_ros.vlm.state.save_query_state`.

Labels follow the node's rule too (`QueryIndex` with the label vocabulary): given `on_label` (the
pipeline's `set_label`), every re-embedded instance gets its closest label, so the replay's
/iggt/instances carry the labels the node would publish. Labels need the text encoder as well;
when it cannot be built the replay says so in `warnings` and publishes no labels.

Embedding is optional: with `query.region_encoder: none`, or when the encoder cannot be built
here, the state is saved without embeddings (queries then say that nothing is embedded yet) and
the reason is kept in `warnings`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from iggt_ros.config import QueryConfig
from iggt_ros.perception.pipeline import MapSnapshot, WindowResult
from iggt_ros.perception.records import instance_record

if TYPE_CHECKING:
    from iggt_ros.vlm.query_index import QueryIndex

log = logging.getLogger(__name__)


class QueryStateRecorder:
    """Embeds output views as they come and saves the final state."""

    def __init__(self, config: QueryConfig, embed: bool = True,
                 on_label: Callable[[int, str, float], None] | None = None) -> None:
        self.warnings: list[str] = []
        self._index: QueryIndex | None = None
        self.space = ""
        if not embed or config.region_encoder == "none":
            return
        try:
            from iggt_ros.vlm.embedder import InstanceEmbedder
            from iggt_ros.vlm.query_index import QueryIndex
            from iggt_ros.vlm.registry import make_region_encoder

            encoder = make_region_encoder(config)
        except Exception as exc:  # a missing optional library or weights file: save the state without embeddings
            msg = f"instance embeddings are off for this replay ({type(exc).__name__}: {exc})"
            log.warning(msg)
            self.warnings.append(msg)
            return
        if encoder is not None:
            labels = self._labels(config) if on_label is not None else None
            self._index = QueryIndex(InstanceEmbedder(encoder, config), asynchronous=False, labels=labels,
                                     on_label=on_label if labels is not None else None)
            self.space = encoder.space

    def _labels(self, config: QueryConfig):
        """The node's label vocabulary, or None (with the reason in `warnings`) when no text encoder is here."""
        try:
            from iggt_ros.vlm.labels import LabelVocabulary, attribute_vocabulary
            from iggt_ros.vlm.registry import make_text_encoder

            text = make_text_encoder(config)
            if text is None:
                return None
            return LabelVocabulary(config.label_vocabulary or attribute_vocabulary(), text)
        except Exception as exc:  # a missing optional library: embeddings without labels
            msg = f"instance labels are off for this replay ({type(exc).__name__}: {exc})"
            log.warning(msg)
            self.warnings.append(msg)
            return None

    @property
    def embedding(self) -> bool:
        return self._index is not None

    def add(self, result: WindowResult) -> None:
        """Embed the new views of one window, as the node's query index does."""
        if self._index is not None:
            self._index.observe(result)

    def forget(self) -> None:
        """The pipeline was reset: instance IDs start over, so old embeddings must not carry over."""
        if self._index is not None:
            self._index.reset()

    def save(self, path: Path, snapshot: MapSnapshot) -> tuple[Path, Path]:
        from iggt_ros.vlm.state import save_query_state
        instances = [instance_record(i) for i in snapshot.instances]
        vectors = self._index.vectors() if self._index is not None else {}
        return save_query_state(path, instances, vectors, frame_id=snapshot.frame_id, stamp_ns=snapshot.stamp_ns,
                                embedding_space=self.space)
