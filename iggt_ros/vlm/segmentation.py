"""Open-vocabulary semantic segmentation from instance masks, and its metrics (2D mIoU, 2D mAcc, 3D mIoU).

With a class vocabulary (shape words, say), each instance takes the class whose text embedding is
closest to its region embedding; a per-camera class image is then the instance image with every
instance ID replaced by its class. Scores follow the usual open-vocabulary segmentation protocol:
one confusion matrix accumulated over every pixel (2D) or point (3D) of every frame, IoU and
accuracy per class from it, averaged over the classes present in the ground truth.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from iggt_ros.vlm.encoders import TextEncoder, normalize_rows

IGNORE = -1
"""Class index of pixels that are not scored (background, or an instance without an embedding)."""


def classify(vectors: Mapping[int, np.ndarray], classes: Sequence[str], text_encoder: TextEncoder,
             prompt: str = "the {}") -> dict[int, int]:
    """Instance ID -> index of the closest class word (region embeddings and text in the same space)."""
    if not vectors:
        return {}
    words = normalize_rows(text_encoder.encode([prompt.format(c) for c in classes]))
    ids = list(vectors)
    v = normalize_rows(np.stack([np.asarray(vectors[i], np.float32).ravel() for i in ids]))
    return {int(i): int(k) for i, k in zip(ids, np.argmax(v @ words.T, axis=1), strict=True)}


def class_image(instance_ids: np.ndarray, classes: Mapping[int, int]) -> np.ndarray:
    """[H,W] class indices from an instance-ID image; background (0) and unclassified instances are IGNORE."""
    ids = np.asarray(instance_ids)
    out = np.full(ids.shape, IGNORE, np.int32)
    for iid, k in classes.items():
        out[ids == iid] = k
    return out


class ConfusionMatrix:
    """Counts of (true class, predicted class) over pixels or points; truth IGNORE is not scored."""

    def __init__(self, num_classes: int) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        self.n = num_classes
        self.counts = np.zeros((num_classes, num_classes + 1), np.int64)
        """Last column: scored pixels predicted IGNORE (missed: they count against the true class)."""

    def update(self, predicted: np.ndarray, truth: np.ndarray) -> None:
        p, t = np.asarray(predicted).ravel(), np.asarray(truth).ravel()
        if p.shape != t.shape:
            raise ValueError(f"prediction and truth differ in size ({p.size} vs {t.size})")
        keep = t != IGNORE
        p, t = p[keep], t[keep]
        if t.size and (t.min() < 0 or t.max() >= self.n or p.max(initial=0) >= self.n or p.min(initial=0) < IGNORE):
            raise ValueError(f"class indices must be in [0, {self.n}) (or {IGNORE} for none)")
        p = np.where(p == IGNORE, self.n, p)
        np.add.at(self.counts, (t, p), 1)

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
