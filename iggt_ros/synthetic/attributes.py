"""The vocabulary of synthetic objects: shapes, colour words with their albedos, size classes, textures.

Text queries and evaluation refer to objects by these words, so each word maps to one visually
distinct appearance: colour albedos are far apart, and the size classes use disjoint ranges of the
object's characteristic dimension, so 'small' and 'large' never overlap.
"""

from __future__ import annotations

SHAPES: tuple[str, ...] = ("cube", "box", "sphere", "cylinder", "cone")

COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.80, 0.10, 0.10),
    "green": (0.12, 0.62, 0.15),
    "blue": (0.10, 0.25, 0.85),
    "yellow": (0.92, 0.85, 0.12),
    "orange": (0.95, 0.50, 0.05),
    "purple": (0.50, 0.15, 0.70),
    "white": (0.93, 0.93, 0.93),
    "black": (0.07, 0.07, 0.07),
    "cyan": (0.10, 0.80, 0.85),
    "pink": (0.96, 0.55, 0.75),
    "brown": (0.45, 0.27, 0.11),
    "gray": (0.50, 0.50, 0.50),
}

SIZES: dict[str, tuple[float, float]] = {
    "small": (0.15, 0.24),
    "medium": (0.30, 0.44),
    "large": (0.52, 0.70),
}
"""Size class -> range of the characteristic dimension in metres (edge of a cube, diameter of a sphere)."""

TEXTURES: tuple[str, ...] = ("plain", "stripes", "checker")

ROOM_COLORS: tuple[tuple[float, float, float], ...] = (
    (0.78, 0.74, 0.64),
    (0.70, 0.76, 0.80),
    (0.82, 0.80, 0.76),
    (0.62, 0.70, 0.62),
    (0.76, 0.66, 0.60),
    (0.66, 0.64, 0.74),
)
"""Muted albedos for walls and ceiling; the floor uses FLOOR_COLORS."""

FLOOR_COLORS: tuple[tuple[float, float, float], ...] = (
    (0.55, 0.42, 0.30),
    (0.45, 0.45, 0.47),
    (0.62, 0.55, 0.44),
    (0.38, 0.40, 0.36),
)
