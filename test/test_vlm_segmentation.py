"""Semantic segmentation metrics against a case worked out by hand, and classes from embeddings."""

from __future__ import annotations

import numpy as np
import pytest

from iggt_ros.vlm.encoders import TextEncoder, normalize_rows
from iggt_ros.vlm.segmentation import IGNORE, ConfusionMatrix, class_image, classify


def test_metrics_match_a_hand_computed_case():
    # 3 classes. Truth (row-major, -1 not scored):      Prediction:
    #   0 0 1 1                                          0 1 1 1
    #   2 2 -1 1                                         2 0 0 -1
    truth = np.array([[0, 0, 1, 1], [2, 2, IGNORE, 1]])
    pred = np.array([[0, 1, 1, 1], [2, 0, 0, IGNORE]])
    cm = ConfusionMatrix(3)
    cm.update(pred, truth)
    # class 0: TP 1 (0,0); FN 1 (0,1 -> 1); FP 1 ((1,1) true 2 -> 0; (1,2) is not scored) -> IoU 1/3, acc 1/2
    # class 1: TP 2 ((0,2),(0,3)); FN 1 ((1,3) predicted none); FP 1 ((0,1)) -> IoU 2/4, acc 2/3
    # class 2: TP 1 ((1,0)); FN 1 ((1,1) -> 0); FP 0 -> IoU 1/2, acc 1/2
    assert cm.iou() == pytest.approx([1 / 3, 2 / 4, 1 / 2])
    assert cm.accuracy() == pytest.approx([1 / 2, 2 / 3, 1 / 2])
    assert cm.miou() == pytest.approx((1 / 3 + 1 / 2 + 1 / 2) / 3)
    assert cm.macc() == pytest.approx((1 / 2 + 2 / 3 + 1 / 2) / 3)


def test_absent_classes_are_left_out_and_frames_accumulate():
    cm = ConfusionMatrix(4)
    cm.update(np.array([0, 0, 1]), np.array([0, 0, 1]))
    cm.update(np.array([1, 3]), np.array([1, 1]))  # class 3 predicted, never true: only a false positive
    iou = cm.iou()
    assert np.isnan(iou[2]) and np.isnan(iou[3])
    assert iou[0] == 1.0 and iou[1] == pytest.approx(2 / 3)
    assert cm.miou() == pytest.approx((1.0 + 2 / 3) / 2)
    with pytest.raises(ValueError, match="class indices"):
        cm.update(np.array([0]), np.array([4]))
    with pytest.raises(ValueError, match="differ in size"):
        cm.update(np.array([0, 1]), np.array([0]))


class ShapeAxes(TextEncoder):
    name, dim, space = "shape_axes", 3, "shapes"
    WORDS = ("cube", "sphere", "cone")

    def encode(self, texts):
        return normalize_rows(np.stack([np.array([float(w in t) for w in self.WORDS], np.float32) + 1e-3
                                        for t in texts]))


def test_classes_from_embeddings_and_class_images():
    vectors = {7: np.array([0.1, 0.9, 0.0]), 9: np.array([0.8, 0.1, 0.2])}
    classes = classify(vectors, ["cube", "sphere", "cone"], ShapeAxes())
    assert classes == {7: 1, 9: 0}
    ids = np.array([[0, 7, 7], [9, 9, 4]])  # instance 4 has no embedding
    assert class_image(ids, classes).tolist() == [[IGNORE, 1, 1], [0, 0, IGNORE]]
