"""Open-vocabulary semantic segmentation from instance masks, and its metrics (2D mIoU, 2D mAcc, 3D mIoU).

With a class vocabulary (shape words, say), each instance takes the class whose text embedding is
closest to its region embedding; a per-camera class image is then the instance image with every
instance ID replaced by its class. Scores follow the usual open-vocabulary segmentation protocol:
one confusion matrix accumulated over every pixel (2D) or point (3D) of every frame, IoU and
accuracy per class from it, averaged over the classes present in the ground truth (the matrix and
the run-level scores live in `iggt_ros.eval.semantic`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from iggt_ros.eval.semantic import IGNORE, ConfusionMatrix
from iggt_ros.vlm.encoders import TextEncoder, normalize_rows

__all__ = ["IGNORE", "ConfusionMatrix", "class_image", "classify"]


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
