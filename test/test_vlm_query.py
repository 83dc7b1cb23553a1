"""Query semantics shared by /iggt/query and `iggt-ros query`, and the saved query state."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from iggt_ros.config import IggtConfig, QueryConfig, save_config
from iggt_ros.perception.records import InstanceRecord
from iggt_ros.vlm import query_cli
from iggt_ros.vlm.encoders import TextEncoder, normalize_rows
from iggt_ros.vlm.query import answer_query
from iggt_ros.vlm.state import QueryStateError, load_query_state, save_query_state

AXES = {"red": 0, "green": 1, "blue": 2}


class ColorWordEncoder(TextEncoder):
    """A real, tiny text encoder: one axis per colour word named in the text."""

    name = "color_words"
    dim = 3
    space = "rgb"

    def encode(self, texts):
        rows = []
        for t in texts:
            v = np.zeros(3, np.float32)
            for word, axis in AXES.items():
                v[axis] += word in t.lower()
            rows.append(v if v.any() else np.ones(3, np.float32))
        return normalize_rows(np.stack(rows))


def inst(iid: int, color: str | None, x: float = 0.0) -> InstanceRecord:
    emb = None
    if color is not None:
        emb = np.zeros(3, np.float32)
        emb[AXES[color]] = 1.0
        emb[(AXES[color] + 1) % 3] = 0.2  # not exactly orthogonal to the others
        emb /= np.linalg.norm(emb)
    return InstanceRecord(id=iid, centroid=np.array([x, 1.0, 0.2]), box_center=np.array([x, 1.0, 0.2]),
                            box_size=np.array([0.3, 0.3, 0.4]), box_yaw=0.1, embedding=emb,
                            attributes={"color": color or ""}, views_seen=3)


@pytest.fixture
def instances():
    return [inst(1, "red", 0.0), inst(2, "green", 1.0), inst(3, "blue", 2.0), inst(4, "red", 3.0)]


def test_ranking_topk_and_scores(instances):
    enc = ColorWordEncoder()
    res = answer_query("the red cube", instances, enc, QueryConfig(max_results=5), frame_id="odom")
    assert res.success and res.frame_id == "odom"
    assert {i.id for i in res.instances[:2]} == {1, 4}
    assert res.scores == sorted(res.scores, reverse=True)
    assert all(0.0 <= s <= 1.0 for s in res.scores) and res.scores[0] == pytest.approx((1 + 1 / np.sqrt(1.04)) / 2)
    assert len(res.instances) == len(res.scores) == 4
    assert res.instances[0].box_size.tolist() == [0.3, 0.3, 0.4]  # boxes and centroids pass through
    # max_results 0 means the config default; an explicit value wins.
    assert len(answer_query("blue", instances, enc, QueryConfig(max_results=2)).ranked) == 2
    assert len(answer_query("blue", instances, enc, QueryConfig(max_results=2), max_results=1).ranked) == 1
    assert answer_query("blue", instances, enc, max_results=1).instances[0].id == 3


def test_min_score(instances):
    enc = ColorWordEncoder()
    cfg = QueryConfig(min_score=0.0)
    all_ranked = answer_query("green", instances, enc, cfg)
    cut = answer_query("green", instances, enc, cfg, min_score=0.7)
    assert len(all_ranked.ranked) == 4 and [i.id for i in cut.instances] == [2]
    assert all(s >= 0.7 for s in cut.scores)
    # the config's minimum applies when the request gives 0
    assert [i.id for i in answer_query("green", instances, enc, QueryConfig(min_score=0.7)).instances] == [2]
    none = answer_query("green", instances, enc, cfg, min_score=0.9999)
    assert none.success and none.ranked == [] and "no instance scored" in none.message


@pytest.mark.parametrize("text,needle", [("", "empty"), ("   ", "empty"), ("x" * 201, "max_text_length")])
def test_bad_text_is_refused(instances, text, needle):
    res = answer_query(text, instances, ColorWordEncoder(), QueryConfig(max_text_length=200))
    assert not res.success and needle in res.message and res.ranked == []


def test_no_encoder_no_instances_no_embeddings(instances):
    enc = ColorWordEncoder()
    res = answer_query("red", instances, None)
    assert not res.success and "query.text_encoder is 'none'" in res.message
    res = answer_query("red", [], enc)
    assert not res.success and "no instances" in res.message
    res = answer_query("red", [inst(5, None), inst(6, None)], enc)
    assert not res.success and "none of the 2 instances has an embedding" in res.message


def test_embeddings_from_a_separate_store_and_pending_count(instances):
    enc = ColorWordEncoder()
    bare = [inst(1, None), inst(2, None), inst(3, None)]
    store = {1: instances[0].embedding, 3: instances[2].embedding}
    res = answer_query("blue", bare, enc, embeddings=store)
    assert res.success and [i.id for i in res.instances] == [3, 1] and "(1 not embedded yet)" in res.message


def test_mismatched_space_or_dimension_is_refused(instances):
    enc = ColorWordEncoder()
    res = answer_query("red", instances, enc, embedding_space="iggt-embedded-minilm-384")
    assert not res.success and "space" in res.message
    odd = [inst(1, None)]
    odd[0].embedding = np.ones(5, np.float32)
    res = answer_query("red", odd, enc)
    assert not res.success and "dimension" in res.message


def test_state_roundtrip_gives_the_same_answer(tmp_path, instances):
    instances.append(inst(9, None))  # not embedded yet
    (tmp_path / "out").mkdir()
    json_path, npz_path = save_query_state(tmp_path / "out", instances, frame_id="odom", stamp_ns=42,
                                           embedding_space="rgb")
    assert json_path.name == "query_state.json" and npz_path.name == "query_state.npz"
    state = load_query_state(tmp_path / "out" / "query_state.json")
    assert state.frame_id == "odom" and state.stamp_ns == 42 and state.embedding_space == "rgb"
    assert [i.id for i in state.instances] == [1, 2, 3, 4, 9]
    assert state.instances[4].embedding is None
    np.testing.assert_allclose(state.instances[2].embedding, instances[2].embedding)
    assert state.instances[0].box_yaw == pytest.approx(0.1) and state.instances[0].attributes == {"color": "red"}
    enc = ColorWordEncoder()
    live = answer_query("the blue one", instances, enc)
    saved = answer_query("the blue one", state.instances, enc, embedding_space=state.embedding_space)
    assert [i.id for i in live.instances] == [i.id for i in saved.instances]
    np.testing.assert_allclose(live.scores, saved.scores, rtol=1e-6)


def test_state_errors(tmp_path):
    with pytest.raises(QueryStateError, match="no saved query state"):
        load_query_state(tmp_path)
    (tmp_path / "query_state.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(QueryStateError, match="not a saved query state"):
        load_query_state(tmp_path)
    (tmp_path / "query_state.json").write_text("{nope")
    with pytest.raises(QueryStateError, match="not valid JSON"):
        load_query_state(tmp_path)


def _cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    query_cli.add_arguments(parser)
    return query_cli.run(parser.parse_args(argv))


def test_cli_reports_problems(tmp_path, instances, capsys):
    assert _cli([str(tmp_path), "red"]) == 2
    assert "no saved query state" in capsys.readouterr().err
    save_query_state(tmp_path, instances, embedding_space="rgb")
    cfg = IggtConfig()
    cfg.query.text_encoder = "none"
    save_config(cfg, tmp_path / "params.yaml")
    assert _cli([str(tmp_path), "red", "--config", str(tmp_path / "params.yaml")]) == 1
    assert "query.text_encoder is 'none'" in capsys.readouterr().err


def test_attribute_fit_ranks_by_the_named_attribute_and_keeps_the_best_score(instances):
    """Two instances equally close to the text as a whole: the one more surely red ranks first, and the
    best-fitting instance keeps its plain cosine score."""
    from iggt_ros.vlm.query import attribute_fit
    from iggt_ros.vlm.understanding import Description

    enc = ColorWordEncoder()
    vectors = normalize_rows(np.array([[1.0, 0.5, 0.0], [1.0, 0.0, 0.5], [0.0, 1.0, 0.0]], np.float32))
    fit = attribute_fit(Description(color="red"), vectors, enc)
    assert fit.max() == pytest.approx(1.0) and fit[2] < fit[0] and fit[2] < fit[1]
    both = attribute_fit(Description(color="red", other_colors=("green",)), vectors, enc)
    assert both[2] > fit[2]  # green is accepted too
    assert np.all(attribute_fit(None, vectors, enc) == 1.0)
    # nothing underflows: a colour far from every instance still orders them
    far = attribute_fit(Description(color="blue"), vectors * 1.0, enc)
    assert np.all(far > 0) and far[1] > far[0]
