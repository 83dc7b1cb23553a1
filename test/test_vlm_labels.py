"""Instance labels from region embeddings against a vocabulary, refreshed as embeddings change."""

from __future__ import annotations

import numpy as np
import pytest
from test_vlm_embedder import MeanColorEncoder, config, make_view

from iggt_ros.vlm.embedder import InstanceEmbedder
from iggt_ros.vlm.encoders import TextEncoder, normalize_rows
from iggt_ros.vlm.labels import LabelVocabulary, attribute_vocabulary, too_small_reason

RED, GREEN, BLUE = (220, 20, 20), (20, 200, 20), (20, 20, 220)


class ColorWordEncoder(TextEncoder):
    """A real, tiny text encoder into MeanColorEncoder's RGB space: a colour word -> its colour."""

    name = "color_words"
    dim = 3
    space = "rgb"
    COLORS = {"red": RED, "green": GREEN, "blue": BLUE}

    def encode(self, texts):
        return normalize_rows(np.array([self.COLORS[t.split()[0]] for t in texts], np.float32) + 1e-3)


def test_default_vocabulary_is_every_colour_and_shape():
    words = attribute_vocabulary()
    assert "red cube" in words and "gray cone" in words and len(words) == len(set(words)) == 12 * 5


def test_label_is_the_closest_word_with_a_query_scale_score():
    vocab = LabelVocabulary(["red object", "green object", "blue object"], ColorWordEncoder())
    best = vocab.best(normalize_rows(np.array([[200.0, 30.0, 20.0]]))[0])
    assert best.label == "red object" and 0.95 < best.score <= 1.0
    with pytest.raises(ValueError, match="dimension 4"):
        vocab.best(np.ones(4))
    with pytest.raises(ValueError, match="vocabulary is empty"):
        LabelVocabulary(["", " "], ColorWordEncoder())


def test_labels_follow_the_embeddings_as_they_change():
    """The labeller runs on the embedder's changes: a new embedding relabels, an unchanged one does not."""
    vocab = LabelVocabulary(["red", "green", "blue"], ColorWordEncoder())
    emb = InstanceEmbedder(MeanColorEncoder(), config(embed_area_growth=0.5, embed_max_views=1))
    labels: dict[int, list[str]] = {}

    def relabel(ids: list[int]) -> None:
        for iid in ids:
            labels.setdefault(iid, []).append(vocab.best(emb.store.get(iid).vector).label)

    emb.listener = relabel
    emb.process(make_view(1, [(1, RED, 10, 10, 20), (2, BLUE, 50, 80, 20)]))
    assert labels == {1: ["red"], 2: ["blue"]}
    emb.process(make_view(2, [(1, RED, 10, 10, 20)]))  # nothing changed: no new label work
    assert labels[1] == ["red"]
    # instance 1 is seen much larger and green (a closer look at what it really is): relabelled
    emb.process(make_view(3, [(1, GREEN, 10, 10, 40)]))
    assert labels[1] == ["red", "green"]


def test_instances_seen_only_in_small_masks_are_remembered_with_their_largest_mask():
    emb = InstanceEmbedder(MeanColorEncoder(), config(embed_min_area_px=100))
    emb.process(make_view(1, [(1, RED, 10, 10, 6), (2, BLUE, 50, 80, 20)]))  # 36 px and 400 px
    emb.process(make_view(2, [(1, RED, 10, 10, 8)]))  # 64 px
    assert emb.small_masks() == {1: 64} and emb.store.get(1) is None
    assert "query.embed_min_area_px (100 px; largest 64 px)" in too_small_reason(64, 100)
    emb.process(make_view(3, [(1, RED, 10, 10, 12)]))  # 144 px: embedded, no longer "too small"
    assert emb.small_masks() == {} and emb.store.get(1) is not None
    emb.process(make_view(4, [(1, RED, 10, 10, 5)]))
    assert emb.small_masks() == {}, "an embedded instance seen small again keeps its embedding"
