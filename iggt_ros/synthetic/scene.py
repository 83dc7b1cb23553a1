"""Procedural indoor scenes: a closed box room with objects standing on its floor.

Layout: an elliptic walkway around the room centre is kept free of objects, so every camera
trajectory (see `trajectory.py`) can drive along it without entering an object. Objects stand in the
centre island inside the walkway and in the band between the walkway and the walls, never overlap,
and in most scenes some of them come as identical pairs placed side by side: the hard case for
instance segmentation, where only position tells two objects apart.

Non-duplicate objects get distinct (shape, colour, size) triples, so a text query that names all
three matches exactly one object or one duplicate group.
"""

from __future__ import annotations

import numpy as np

from .attributes import COLORS, FLOOR_COLORS, ROOM_COLORS, SHAPES, SIZES, TEXTURES
from .types import ObjectSpec, Scene

ROOM_KINDS: dict[str, tuple[tuple[float, float], tuple[float, float], tuple[float, float]]] = {
    "room": ((5.5, 7.5), (4.5, 6.0), (2.6, 3.0)),
    "hall": ((9.0, 12.0), (7.0, 9.0), (3.2, 4.0)),
}
"""Room kind -> ranges of its x, y, z extent in metres."""

WALKWAY_INSET = 1.2
"""Distance from each wall to the walkway's centre line along the room axes (metres)."""
WALKWAY_HALF_WIDTH = 0.5
"""Free distance kept between the walkway's centre line and any object (metres)."""
WALL_MARGIN = 0.1
OBJECT_GAP = 0.08
DUPLICATE_PROBABILITY = 0.8
MIN_OBJECTS, MAX_OBJECTS = 5, 30


def walkway_axes(room_size: np.ndarray) -> tuple[float, float]:
    """Semi-axes (a, b) of the walkway ellipse x = a cos(phi), y = b sin(phi) centred in the room."""
    return float(room_size[0] / 2 - WALKWAY_INSET), float(room_size[1] / 2 - WALKWAY_INSET)


def walkway_points(room_size: np.ndarray, count: int = 256) -> np.ndarray:
    """[count, 2] points on the walkway centre line, dense enough (< 0.1 m apart) for clearance tests."""
    a, b = walkway_axes(room_size)
    phi = np.linspace(0.0, 2.0 * np.pi, count, endpoint=False)
    return np.stack([a * np.cos(phi), b * np.sin(phi)], axis=1)


def footprint_radius(shape: str, extent: np.ndarray) -> float:
    """Radius of the circle around the object's floor footprint, whatever its yaw."""
    if shape in ("cube", "box"):
        return 0.5 * float(np.hypot(extent[0], extent[1]))
    return 0.5 * float(extent[0])


def make_extent(shape: str, size: float, rng: np.random.Generator) -> np.ndarray:
    """Full extent along the object's x, y, z for a characteristic dimension `size`."""
    if shape in ("cube", "sphere"):
        return np.array([size, size, size])
    if shape == "box":
        return size * np.array([rng.uniform(0.8, 1.5), rng.uniform(0.5, 0.9), rng.uniform(0.5, 1.2)])
    if shape == "cylinder":
        d = size * rng.uniform(0.6, 1.0)
        return np.array([d, d, size * rng.uniform(0.9, 1.6)])
    if shape == "cone":
        d = size * rng.uniform(0.7, 1.1)
        return np.array([d, d, size * rng.uniform(1.0, 1.6)])
    raise ValueError(f"unknown shape '{shape}'; choose from {', '.join(SHAPES)}")


class _Placer:
    """Rejection sampling of floor positions that keep the walkway, the walls and other objects clear."""

    def __init__(self, room_size: np.ndarray, rng: np.random.Generator) -> None:
        self.half = room_size[:2] / 2
        self.walkway = walkway_points(room_size)
        self.rng = rng
        self.centres: list[np.ndarray] = []
        self.radii: list[float] = []

    def fits(self, xy: np.ndarray, radius: float) -> bool:
        if np.any(np.abs(xy) > self.half - radius - WALL_MARGIN):
            return False
        if np.min(np.linalg.norm(self.walkway - xy, axis=1)) < WALKWAY_HALF_WIDTH + radius:
            return False
        if not self.centres:
            return True
        clearance = np.linalg.norm(np.asarray(self.centres) - xy, axis=1) - np.asarray(self.radii)
        return bool(np.all(clearance >= radius + OBJECT_GAP))

    def add(self, xy: np.ndarray, radius: float) -> None:
        self.centres.append(xy)
        self.radii.append(radius)

    def sample(self) -> np.ndarray:
        return self.rng.uniform(-self.half, self.half)


def _draw_appearances(count: int, rng: np.random.Generator) -> list[tuple[str, str, str]]:
    """`count` distinct (shape, colour, size) triples in random order."""
    combos = [(s, c, z) for s in SHAPES for c in COLORS for z in SIZES]
    picks = rng.choice(len(combos), size=count, replace=False)
    return [combos[i] for i in picks]


def _try_layout(
    room_size: np.ndarray, num_objects: int, num_pairs: int, rng: np.random.Generator, attempts: int = 300
) -> list[ObjectSpec] | None:
    """Place `num_pairs` side-by-side duplicate pairs and the remaining singles; None if they do not fit."""
    placer = _Placer(room_size, rng)
    appearances = _draw_appearances(num_objects - num_pairs, rng)
    placed: list[tuple[ObjectSpec, int]] = []  # (object, index of the original it duplicates, or -1)
    for index, (shape, color, size_name) in enumerate(appearances):
        size = rng.uniform(*SIZES[size_name])
        extent = make_extent(shape, size, rng)
        yaw = float(rng.uniform(-np.pi, np.pi))
        texture = str(rng.choice(TEXTURES, p=[0.4, 0.3, 0.3]))
        radius = footprint_radius(shape, extent)
        paired = index < num_pairs
        for _ in range(attempts):
            xy = placer.sample()
            if not placer.fits(xy, radius):
                continue
            if paired:
                # The copy stands next to the original along the original's own x axis, same yaw.
                side = rng.choice([-1.0, 1.0]) * np.array([np.cos(yaw), np.sin(yaw)])
                xy2 = xy + side * (2 * radius + rng.uniform(0.03, 0.15))
                placer.add(xy, radius)
                if not placer.fits(xy2, radius):
                    placer.centres.pop()
                    placer.radii.pop()
                    continue
                placer.add(xy2, radius)
            else:
                placer.add(xy, radius)
            break
        else:
            return None
        centres = [xy, xy2] if paired else [xy]
        for copy, c in enumerate(centres):
            spec = ObjectSpec(
                id=0,
                shape=shape,
                color_name=color,
                color_rgb=COLORS[color],
                size_name=size_name,
                center=np.array([c[0], c[1], extent[2] / 2]),
                extent=extent.copy(),
                yaw=yaw,
                texture=texture,
            )
            placed.append((spec, len(placed) - 1 if copy else -1))
    # Random IDs, so duplicates and big objects are not always the lowest IDs.
    order = rng.permutation(len(placed))
    for new_id, k in enumerate(order, start=1):
        placed[k][0].id = new_id
    for spec, original in placed:
        if original >= 0:
            spec.duplicate_of = placed[original][0].id
    return sorted((spec for spec, _ in placed), key=lambda s: s.id)


def make_scene(seed: int, num_objects: int | None = None, room: str = "room") -> Scene:
    """A reproducible room with `num_objects` objects (default: a seeded choice in 5..30).

    The room grows by 8 % and the layout is redrawn when the objects do not fit, so any object
    count gives a valid scene; the result depends only on the arguments.
    """
    if room not in ROOM_KINDS:
        raise ValueError(f"unknown room kind '{room}'; choose from {', '.join(ROOM_KINDS)}")
    rng = np.random.default_rng(seed)
    if num_objects is None:
        num_objects = int(rng.integers(MIN_OBJECTS, MAX_OBJECTS + 1))
    max_objects = len(SHAPES) * len(COLORS) * len(SIZES)
    if not 0 <= num_objects <= max_objects:
        raise ValueError(f"num_objects must be between 0 and {max_objects}, got {num_objects}")
    room_size = np.array([rng.uniform(*r) for r in ROOM_KINDS[room]])
    num_pairs = 0
    if num_objects >= 2 and rng.random() < DUPLICATE_PROBABILITY:
        num_pairs = int(rng.integers(1, min(3, num_objects // 2) + 1))
    wall_colors = [FLOOR_COLORS[rng.integers(len(FLOOR_COLORS))]]
    wall_colors += [ROOM_COLORS[i] for i in rng.choice(len(ROOM_COLORS), size=5, replace=True)]
    while True:
        objects = _try_layout(room_size, num_objects, num_pairs, rng)
        if objects is not None:
            return Scene(seed=seed, room_size=room_size, objects=objects, wall_colors=wall_colors)
        room_size = room_size * np.array([1.08, 1.08, 1.0])
