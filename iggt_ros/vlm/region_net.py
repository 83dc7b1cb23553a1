"""The networks of the embedded text-region model, shared by training and inference.

Region side: a small CNN over a square masked crop (RGB plus the mask as a fourth channel),
joined with two cues a crop alone cannot give: the mean colour under the mask (robust to the
background the crop also contains) and the object's metric box size (a crop is rescaled, so
"small" and "large" are otherwise indistinguishable). Text side: the frozen MiniLM sentence
embedding refined by a residual MLP that starts as the identity, so the joint space stays the
MiniLM space and phrasings never seen in training still land near their meaning.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from iggt_ros.vlm.crop import resize_square
from iggt_ros.vlm.types import RegionCrop

SPACE = "iggt-embedded-minilm-384"
"""Name of the joint space of the embedded model (MiniLM-L6-v2 sentence space, 384-D)."""


@dataclass
class RegionNetConfig:
    crop_side: int = 64
    widths: list[int] = field(default_factory=lambda: [32, 64, 128, 128, 192])
    strides: list[int] = field(default_factory=lambda: [2, 2, 2, 1, 2])
    hidden: int = 256
    embed_dim: int = 384
    text_hidden: int = 384

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> RegionNetConfig:
        return cls(**json.loads(text))


NUM_EXTRA = 7
"""Extra region inputs: mean RGB under the mask (3), log box height and horizontal extents (3), size known (1)."""


class RegionNet(nn.Module):
    """[B,4,S,S] crops plus [B,7] extra cues -> [B,D] unit embeddings."""

    def __init__(self, cfg: RegionNetConfig):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = 4
        for width, stride in zip(cfg.widths, cfg.strides, strict=True):
            layers += [nn.Conv2d(c_in, width, 3, stride=stride, padding=1, bias=False),
                       nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            c_in = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(c_in + NUM_EXTRA, cfg.hidden), nn.ReLU(inplace=True),
                                  nn.Linear(cfg.hidden, cfg.embed_dim))

    def forward(self, crops: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
        f = self.features(crops).mean(dim=(2, 3))
        return F.normalize(self.head(torch.cat([f, extra], dim=1)), dim=1)


class TextHead(nn.Module):
    """Residual MLP on unit MiniLM embeddings; the last layer starts at zero (identity map)."""

    def __init__(self, cfg: RegionNetConfig):
        super().__init__()
        self.fc1 = nn.Linear(cfg.embed_dim, cfg.text_hidden)
        self.fc2 = nn.Linear(cfg.text_hidden, cfg.embed_dim)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x + self.fc2(F.gelu(self.fc1(x))), dim=1)


# Channel statistics for input normalisation (crops are 0..1; the mask channel is centred too).
_MEAN = torch.tensor([0.45, 0.45, 0.45, 0.3]).view(1, 4, 1, 1)
_STD = torch.tensor([0.25, 0.25, 0.25, 0.45]).view(1, 4, 1, 1)


def size_features(box_size_m: np.ndarray | None) -> np.ndarray:
    """[4]: log height, log longer and shorter horizontal extent, and 1 when the size is known (else zeros).

    `box_size_m` follows the map's gravity-aligned boxes: extents along the box's x and y (horizontal,
    any order) and world z. The height is kept apart because it does not depend on the box's yaw,
    which maps estimate poorly for round or square footprints (inflating x and y by up to sqrt(2)).
    """
    if box_size_m is None:
        return np.zeros(4, dtype=np.float32)
    x, y, z = np.maximum(np.asarray(box_size_m, dtype=np.float64).ravel()[:3], 1e-3)
    return np.array([np.log(z), np.log(max(x, y)), np.log(min(x, y)), 1.0], dtype=np.float32)


def crop_tensors(regions: list[RegionCrop], side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Network inputs for a list of crops: ([B,4,S,S] normalised, [B,7] extra cues)."""
    crops = np.zeros((len(regions), 4, side, side), dtype=np.float32)
    extra = np.zeros((len(regions), NUM_EXTRA), dtype=np.float32)
    for i, region in enumerate(regions):
        rgb, mask = resize_square(region.rgb, region.mask, side)
        crops[i, :3] = rgb.transpose(2, 0, 1)
        crops[i, 3] = mask
        extra[i, :3] = mean_color(region.rgb, region.mask)
        extra[i, 3:] = size_features(region.box_size_m)
    return normalize_crops(torch.from_numpy(crops)), torch.from_numpy(extra)


def normalize_crops(crops: torch.Tensor) -> torch.Tensor:
    """0..1 crops ([B,4,S,S]) to zero-centred network inputs."""
    return (crops - _MEAN) / _STD


def mean_color(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """[3] mean RGB (0..1) under the mask, mid-grey for an empty mask."""
    m = np.asarray(mask, dtype=bool)
    if not m.any():
        return np.full(3, 0.5, dtype=np.float32)
    return (np.asarray(rgb, dtype=np.float32)[m].mean(axis=0) / 255.0).astype(np.float32)
