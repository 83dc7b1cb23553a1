"""The one interface every inference backend implements, and the data it returns.

Everything downstream of the engine (clustering, tracking, mapping, publishing) reads a
`WindowPrediction` and nothing else, so TensorRT, PyTorch, ONNX Runtime and the ground-truth
oracle are interchangeable. This module imports numpy only: the perception core may use it
without pulling in torch.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from iggt_ros.limits import MAX_VIEWS  # noqa: F401 - the engines' limit, re-exported for their callers


@dataclass(frozen=True)
class ViewKey:
    """Identifies one view of a window: which camera, at which stamp (nanoseconds)."""

    camera: str
    stamp_ns: int


@dataclass
class WindowPrediction:
    """Model output for one window of V views, at the model's input resolution (H, W).

    Geometry is in the model's own frame: the first view's camera frame, OpenCV convention
    (x right, y down, z forward), at the model's normalised scale (not metric). The perception
    core aligns it to the world frame.
    """

    extrinsics: np.ndarray
    """[V,3,4] float32 camera-from-world [R|t] (OpenCV)."""
    intrinsics: np.ndarray
    """[V,3,3] float32 pinhole intrinsics at (H, W)."""
    depth: np.ndarray
    """[V,H,W] float32 depth along the optical axis."""
    depth_conf: np.ndarray
    """[V,H,W] float32 confidence (>= 1 for IGGT's 1+exp activation)."""
    world_points: np.ndarray
    """[V,H,W,3] float32 point-head world points (model frame)."""
    world_points_conf: np.ndarray
    """[V,H,W] float32."""
    instance_features: np.ndarray
    """[V,H,W,C] float32 raw instance-head features (C = 8 for IGGT), not normalised."""
    images: np.ndarray
    """[V,H,W,3] uint8 RGB the model saw (after resizing), for colouring points."""
    engine: str = ""
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def num_views(self) -> int:
        return int(self.depth.shape[0])

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W)."""
        return int(self.depth.shape[1]), int(self.depth.shape[2])

    def validate(self) -> None:
        """Raise ValueError naming the field when shapes disagree or values are not finite."""
        v, h, w = self.depth.shape
        expected = {
            "extrinsics": (v, 3, 4),
            "intrinsics": (v, 3, 3),
            "depth_conf": (v, h, w),
            "world_points": (v, h, w, 3),
            "world_points_conf": (v, h, w),
            "images": (v, h, w, 3),
        }
        for name, shape in expected.items():
            got = tuple(getattr(self, name).shape)
            if got != shape:
                raise ValueError(f"WindowPrediction.{name} has shape {got}, expected {shape}")
        if self.instance_features.shape[:3] != (v, h, w):
            raise ValueError(f"WindowPrediction.instance_features has shape {self.instance_features.shape}, "
                             f"expected ({v}, {h}, {w}, C)")


class EngineError(RuntimeError):
    """An engine cannot be created or cannot run; the message says what to do about it."""


class Engine(abc.ABC):
    """Runs IGGT on one window of images."""

    name: str = "engine"

    @abc.abstractmethod
    def infer(self, images: np.ndarray, views: Sequence[ViewKey] | None = None) -> WindowPrediction:
        """Predict geometry and instance features.

        Args:
            images: [V,H,W,3] uint8 RGB, already at the engine's input size (see preprocess).
            views: which camera/stamp each image is; real models ignore it, the ground-truth
                oracle uses it to look up the truth.
        """

    @property
    @abc.abstractmethod
    def input_size(self) -> tuple[int, int]:
        """(H, W) the engine expects; multiples of 28."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release device memory; the default has nothing to release."""
