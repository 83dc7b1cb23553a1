"""Semantic segmentation scores of a run (the paper's 2D mIoU, 2D mAcc and 3D mIoU), in bounded memory.

Protocol, as open-vocabulary segmentation benchmarks score it:

* Classes are a vocabulary of words ('cube', 'sphere', ...). A predicted instance's class is the
  vocabulary word it was last labelled with (the label the node publishes); an instance never
  labelled, or labelled with a word outside the vocabulary, has no class. A true object's class is
  the longest vocabulary entry whose words all occur in its true label ("small red cube" -> 'cube',
  or 'red cube' when the vocabulary has it); an object that matches none is not scored.
* 2D: every pixel of every scored view whose true object has a class counts once, predicted as the
  class of its instance, or as nothing (a miss) where it has no instance or its instance no class.
  3D: the same over the points of every published cloud, each point taking the truth of the pixel
  it came from (`point_truth`).
* One confusion matrix over all pixels (or points) of the run; IoU = TP / (TP + FP + FN) and
  accuracy = TP / true pixels per class; mIoU and mAcc average the classes present in the truth.

Labels arrive while the run goes on (an instance is labelled once it is embedded) and may change, so
nothing is classified view by view: the accumulator keeps pixel counts per (predicted instance,
true object) pair, and the classes are applied once, at the end. Memory is the number of such pairs,
whatever the run's length. When instance IDs start over (a looped bag), `restart` closes the pairs
and labels so far, so the next loop's IDs are not confused with them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

IGNORE = -1
"""Class index of pixels that are not scored (background, or an instance without an embedding)."""


class ConfusionMatrix:
    """Counts of (true class, predicted class) over pixels or points; truth IGNORE is not scored."""

    def __init__(self, num_classes: int) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        self.n = num_classes
        self.counts = np.zeros((num_classes, num_classes + 1), np.int64)
        """Last column: scored pixels predicted IGNORE (missed: they count against the true class)."""

    def update(self, predicted: np.ndarray, truth: np.ndarray, weights: np.ndarray | None = None) -> None:
        """Add pixels (or, with `weights`, that many pixels per entry) of predicted and true class indices."""
        p, t = np.asarray(predicted).ravel(), np.asarray(truth).ravel()
        if p.shape != t.shape:
            raise ValueError(f"prediction and truth differ in size ({p.size} vs {t.size})")
        w = np.ones(t.shape, np.int64) if weights is None else np.asarray(weights, np.int64).ravel()
        if w.shape != t.shape:
            raise ValueError(f"weights and truth differ in size ({w.size} vs {t.size})")
        keep = t != IGNORE
        p, t, w = p[keep], t[keep], w[keep]
        if t.size and (t.min() < 0 or t.max() >= self.n or p.max(initial=0) >= self.n or p.min(initial=0) < IGNORE):
            raise ValueError(f"class indices must be in [0, {self.n}) (or {IGNORE} for none)")
        p = np.where(p == IGNORE, self.n, p)
        np.add.at(self.counts, (t, p), w)

    def present(self) -> np.ndarray:
        """Classes with at least one true pixel (the average runs over these)."""
        return self.counts.sum(axis=1) > 0

    def iou(self) -> np.ndarray:
        """[C] IoU per class: TP / (TP + FP + FN); NaN for classes absent from the truth."""
        tp = np.diag(self.counts[:, : self.n]).astype(np.float64)
        fn = self.counts.sum(axis=1) - tp
        fp = self.counts[:, : self.n].sum(axis=0) - tp
        out = tp / np.maximum(tp + fp + fn, 1)
        return np.where(self.present(), out, np.nan)

    def accuracy(self) -> np.ndarray:
        """[C] per-class accuracy: TP / true pixels of the class; NaN for classes absent from the truth."""
        tp = np.diag(self.counts[:, : self.n]).astype(np.float64)
        out = tp / np.maximum(self.counts.sum(axis=1), 1)
        return np.where(self.present(), out, np.nan)

    def miou(self) -> float:
        return float(np.nanmean(self.iou())) if self.present().any() else float("nan")

    def macc(self) -> float:
        return float(np.nanmean(self.accuracy())) if self.present().any() else float("nan")


def class_of_label(label: str, classes: Sequence[str]) -> int:
    """Index of the longest class whose words all occur in `label` (IGNORE when none does)."""
    words = set(label.lower().split())
    best, best_len = IGNORE, 0
    for k, c in enumerate(classes):
        cw = c.lower().split()
        if cw and set(cw) <= words and len(cw) > best_len:
            best, best_len = k, len(cw)
    return best


def point_truth(points: np.ndarray, intrinsics: Sequence[np.ndarray], world_from_camera: Sequence[np.ndarray],
                depth: Sequence[np.ndarray], truth_ids: Sequence[np.ndarray],
                rel_tolerance: float = 0.02) -> np.ndarray:
    """[N] true instance ID of each point (0 = background), -1 where no view shows it.

    A point is projected into each view (intrinsics with pixel centres at half-integers, as
    `ViewInfo` carries them; world_from_camera in the points' frame) and takes the truth of the first
    pixel whose published depth agrees with the point's depth within `rel_tolerance`: the pixel it
    came from, or one showing the same surface. `truth_ids` may be larger than the depth images (the
    camera's size); it is sampled at the same relative position.
    """
    pts = np.asarray(points, np.float64).reshape(-1, 3)
    out = np.full(len(pts), -1, np.int64)
    todo = np.arange(len(pts))
    for k, pose, d, ids in zip(intrinsics, world_from_camera, depth, truth_ids, strict=True):
        if not todo.size:
            break
        d = np.asarray(d)
        ids = np.asarray(ids)
        h, w = d.shape
        cam = (pts[todo] - np.asarray(pose, np.float64)[:3, 3]) @ np.asarray(pose, np.float64)[:3, :3]
        z = cam[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = cam @ np.asarray(k, np.float64).T
            u, v = uv[:, 0] / z, uv[:, 1] / z
        inside = (z > 0) & (u >= 0) & (u < w) & (v >= 0) & (v < h)
        x = np.where(inside, u, 0).astype(np.int64)
        y = np.where(inside, v, 0).astype(np.int64)
        seen = d[y, x]
        ok = inside & np.isfinite(seen) & (np.abs(seen - z) <= rel_tolerance * np.abs(z))
        gy, gx = y[ok] * ids.shape[0] // h, x[ok] * ids.shape[1] // w
        out[todo[ok]] = ids[gy, gx]
        todo = todo[~ok]
    return out


def _pair_counts(pred_ids: np.ndarray, true_ids: np.ndarray) -> dict[tuple[int, int], int]:
    """Counts of (predicted ID, true ID) over entries whose true ID is an object (> 0)."""
    p = np.asarray(pred_ids, np.int64).ravel()
    t = np.asarray(true_ids, np.int64).ravel()
    if p.shape != t.shape:
        raise ValueError(f"predicted and true IDs differ in size ({p.size} vs {t.size})")
    keep = t > 0
    p, t = np.maximum(p[keep], 0), t[keep]
    if not t.size:
        return {}
    keys, counts = np.unique((p << 32) | t, return_counts=True)  # IDs are below 2**31
    return {(int(k >> 32), int(k & 0xFFFFFFFF)): int(n) for k, n in zip(keys.tolist(), counts.tolist(), strict=True)}


@dataclass
class _Epoch:
    """Pixel and point counts of one run of instance IDs, with the labels those IDs had."""

    pixels: dict[tuple[int, int], int] = field(default_factory=dict)
    points: dict[tuple[int, int], int] = field(default_factory=dict)
    labels: dict[int, str] = field(default_factory=dict)


@dataclass
class SegmentationMetrics:
    """2D and 3D semantic segmentation scores of a run (NaN where nothing was scored)."""

    classes: list[str]
    miou_2d: float
    macc_2d: float
    miou_3d: float
    macc_3d: float
    iou_2d: list[float]
    accuracy_2d: list[float]
    iou_3d: list[float]
    confusion_2d: list[list[int]]
    """[true class][predicted class, last column: no class]: the pixel counts (runs can be summed)."""
    confusion_3d: list[list[int]]
    pixels: int
    points: int
    points_unplaced: int
    """Points of the published clouds whose depth no view of their window agrees with (not scored): points a
    view does not show, or, without TF, points of the model's point map that its depth disagrees with."""
    objects: int
    """True objects with a class."""
    objects_without_class: list[str]
    """True labels no class matches (their pixels are not scored)."""
    instances_labelled: int

    def to_dict(self) -> dict[str, Any]:
        from iggt_ros.eval.metrics import to_jsonable

        return {k: to_jsonable(v) for k, v in self.__dict__.items()}


class SegmentationAccumulator:
    """Feeds 2D views, 3D points, labels and true objects in any order; `result` scores them (module docstring)."""

    def __init__(self, classes: Sequence[str]) -> None:
        self.classes = [c.strip() for c in classes if c and c.strip()]
        if not self.classes:
            raise ValueError("semantic segmentation needs at least one class word")
        self._epochs = [_Epoch()]
        self._true_labels: dict[int, str] = {}
        self.points_unplaced = 0

    def set_true_objects(self, labels: Mapping[int, str]) -> None:
        """True object ID -> its true label ('small red cube'); later calls add to or replace earlier ones."""
        self._true_labels.update({int(k): str(v) for k, v in labels.items()})

    def set_label(self, instance_id: int, label: str) -> None:
        """The label a predicted instance is published with now (the last one counts)."""
        self._epochs[-1].labels[int(instance_id)] = str(label)

    def restart(self) -> None:
        """Predicted instance IDs start over (a looped bag): later IDs are new instances."""
        self._epochs.append(_Epoch())

    @staticmethod
    def _add(into: dict[tuple[int, int], int], counts: dict[tuple[int, int], int]) -> None:
        for key, n in counts.items():
            into[key] = into.get(key, 0) + n

    def add_view(self, pred_ids: np.ndarray, true_ids: np.ndarray) -> None:
        """One view's predicted instance IDs and true object IDs, same shape (0 = none / background)."""
        if np.shape(pred_ids) != np.shape(true_ids):
            raise ValueError(f"predicted IDs {np.shape(pred_ids)} and true IDs {np.shape(true_ids)} differ in shape")
        self._add(self._epochs[-1].pixels, _pair_counts(pred_ids, true_ids))

    def add_points(self, pred_ids: np.ndarray, true_ids: np.ndarray) -> None:
        """Points' predicted instance IDs and true object IDs (from `point_truth`: -1 = shown by no view)."""
        t = np.asarray(true_ids, np.int64)
        self.points_unplaced += int(np.count_nonzero(t < 0))
        self._add(self._epochs[-1].points, _pair_counts(pred_ids, t))

    @property
    def has_truth(self) -> bool:
        return any(e.pixels for e in self._epochs)

    def _matrix(self, which: str) -> tuple[ConfusionMatrix, int]:
        truth = {oid: class_of_label(label, self.classes) for oid, label in self._true_labels.items()}
        words = {c.lower(): k for k, c in enumerate(self.classes)}  # a predicted label is a vocabulary word
        cm = ConfusionMatrix(len(self.classes))
        total = 0
        for epoch in self._epochs:
            counts = getattr(epoch, which)
            if not counts:
                continue
            keys = np.array(list(counts), np.int64).reshape(-1, 2)
            n = np.fromiter(counts.values(), np.int64, len(counts))
            pred = np.array([words.get(epoch.labels.get(p, "").strip().lower(), IGNORE) for p in keys[:, 0].tolist()],
                            np.int64)
            true = np.array([truth.get(t, IGNORE) for t in keys[:, 1].tolist()], np.int64)
            cm.update(pred, true, n)
            total += int(n[true != IGNORE].sum())
        return cm, total

    def result(self) -> SegmentationMetrics:
        c2, pixels = self._matrix("pixels")
        c3, points = self._matrix("points")
        missing = sorted({label for label in self._true_labels.values() if class_of_label(label, self.classes) < 0})
        return SegmentationMetrics(
            classes=list(self.classes), miou_2d=c2.miou(), macc_2d=c2.macc(), miou_3d=c3.miou(), macc_3d=c3.macc(),
            iou_2d=c2.iou().tolist(), accuracy_2d=c2.accuracy().tolist(), iou_3d=c3.iou().tolist(),
            confusion_2d=c2.counts.tolist(), confusion_3d=c3.counts.tolist(), pixels=pixels, points=points,
            points_unplaced=self.points_unplaced,
            objects=sum(class_of_label(v, self.classes) >= 0 for v in self._true_labels.values()),
            objects_without_class=missing, instances_labelled=sum(len(e.labels) for e in self._epochs))
