"""The two plug-in interfaces of open-vocabulary queries: a text encoder and a region encoder.

A query is answered by comparing one text embedding with the stored embedding of each instance,
so a text encoder and a region encoder only work together when they embed into the same space.
Each encoder therefore names its `space`; the query side refuses to compare across spaces rather
than return meaningless rankings.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

import numpy as np

from iggt_ros.vlm.types import RegionCrop


class EncoderUnavailable(RuntimeError):
    """An encoder cannot be built here (missing library, weights file or model); says which and why."""


class TextEncoder(abc.ABC):
    """Turns query texts into unit vectors of the joint space."""

    name: str = ""
    dim: int = 0
    space: str = ""

    @abc.abstractmethod
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """[N, dim] float32 rows of unit length, one per text."""


class RegionEncoder(abc.ABC):
    """Turns instance crops (image plus mask) into unit vectors of the joint space."""

    name: str = ""
    dim: int = 0
    space: str = ""

    @abc.abstractmethod
    def encode(self, regions: Sequence[RegionCrop]) -> np.ndarray:
        """[N, dim] float32 rows of unit length, one per region."""


def normalize_rows(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), as float32."""
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norm, eps)).astype(np.float32)
