"""Instance labels: the vocabulary word closest to an instance's region embedding, with its score.

Planners read `/iggt/instances` `label` and `score`; the query side already embeds every instance
from its masks (`InstanceEmbedder`), so a label is the best match of that same embedding against
the text embeddings of a small vocabulary, recomputed whenever the embedding changes. Scores are
on the scale of query scores ((1 + cosine) / 2 in [0, 1]), so a label and a query agree.

An instance without a label carries the reason instead (`label_reason`): not embedded yet, masks
too small to embed, encoders loading, or labels switched off.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from iggt_ros.vlm.captions import COLOR_WORDS, SHAPE_WORDS
from iggt_ros.vlm.encoders import TextEncoder, normalize_rows

NOT_EMBEDDED_YET = "not embedded yet"
"""The reason of an instance that will be labelled once the embedder has seen it in a view."""


def attribute_vocabulary() -> list[str]:
    """The default labels: every colour and shape of the attribute vocabulary ('red cube', ...)."""
    return [f"{color} {shape}" for color in COLOR_WORDS for shape in SHAPE_WORDS]


def too_small_reason(largest_px: int, min_area_px: int) -> str:
    """Why an instance seen only in small masks has no embedding (it gets one if it is seen larger)."""
    return (f"not embedded: its masks so far are smaller than query.embed_min_area_px ({min_area_px} px; "
            f"largest {largest_px} px)")


@dataclass(frozen=True)
class InstanceLabel:
    """A label and its score in [0, 1]."""

    label: str
    score: float


class LabelVocabulary:
    """Text embeddings of the label words, encoded once; `best` labels one region embedding."""

    def __init__(self, words: Sequence[str], text_encoder: TextEncoder) -> None:
        self.words = [w.strip() for w in words if w and w.strip()]
        if not self.words:
            raise ValueError("the label vocabulary is empty; list words in query.label_vocabulary or leave it "
                             "empty for the attribute vocabulary")
        self.space = text_encoder.space
        self._vectors = normalize_rows(text_encoder.encode(self.words))

    def best(self, vector: np.ndarray) -> InstanceLabel:
        """The closest word to a region embedding of the same space."""
        v = normalize_rows(np.asarray(vector, np.float32).reshape(1, -1))[0]
        if v.shape[0] != self._vectors.shape[1]:
            raise ValueError(f"region embedding has dimension {v.shape[0]} but the label vocabulary was encoded "
                             f"into {self._vectors.shape[1]}; use matching query.text_encoder and region_encoder")
        scores = np.clip((1.0 + self._vectors @ v) / 2.0, 0.0, 1.0)
        i = int(np.argmax(scores))
        return InstanceLabel(self.words[i], float(scores[i]))
