"""One training batch: B windows of S views with everything the losses need."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class TrainWindow:
    """One window of S views at the model's input size (H, W), metric ground truth."""

    rgb: np.ndarray
    """[S,H,W,3] uint8."""
    depth: np.ndarray
    """[S,H,W] float32 metric z-depth (0 or non-finite where unknown)."""
    instance_ids: np.ndarray
    """[S,H,W] integer IDs, the same object has the same ID in every view."""
    intrinsics: np.ndarray
    """[S,3,3] at (H, W)."""
    world_from_camera: np.ndarray
    """[S,4,4] camera poses, OpenCV optical frame."""


@dataclass
class TrainBatch:
    """B windows of equal size stacked as tensors."""

    images: torch.Tensor
    """[B,S,3,H,W] float in [0,1]."""
    depth: torch.Tensor
    """[B,S,H,W]."""
    instance_ids: torch.Tensor
    """[B,S,H,W] int64."""
    intrinsics: torch.Tensor
    """[B,S,3,3]."""
    world_from_camera: torch.Tensor
    """[B,S,4,4] float64 (poses far from the origin lose precision in float32)."""

    @classmethod
    def stack(cls, windows: list[TrainWindow]) -> TrainBatch:
        rgb = np.stack([w.rgb for w in windows])
        return cls(
            images=torch.from_numpy(rgb).permute(0, 1, 4, 2, 3).float() / 255.0,
            depth=torch.from_numpy(np.stack([w.depth for w in windows]).astype(np.float32)),
            instance_ids=torch.from_numpy(np.stack([w.instance_ids for w in windows]).astype(np.int64)),
            intrinsics=torch.from_numpy(np.stack([w.intrinsics for w in windows]).astype(np.float32)),
            world_from_camera=torch.from_numpy(np.stack([w.world_from_camera for w in windows]).astype(np.float64)),
        )

    def to(self, device: torch.device | str) -> TrainBatch:
        return TrainBatch(*(t.to(device) for t in (self.images, self.depth, self.instance_ids, self.intrinsics,
                                                     self.world_from_camera)))
