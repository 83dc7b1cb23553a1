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

from dataclasses import replace

import numpy as np

from .attributes import COLORS, FLOOR_COLORS, ROOM_COLORS, SHAPES, SIZES, TEXTURES
from .style import SceneStyle, random_albedo
from .types import ObjectSpec, Scene

ROOM_KINDS: dict[str, tuple[tuple[float, float], tuple[float, float], tuple[float, float]]] = {
    "room": ((5.5, 7.5), (4.5, 6.0), (2.6, 3.0)),
    "hall": ((9.0, 12.0), (7.0, 9.0), (3.2, 4.0)),
    "corridor": ((10.0, 13.0), (3.8, 4.4), (2.5, 2.9)),
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
    if shape in ("cylinder", "cone", "sphere", "prism"):
        return 0.5 * float(extent[0])
    return 0.5 * float(np.hypot(extent[0], extent[1]))


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
    if shape == "ellipsoid":
        return size * np.array([rng.uniform(0.7, 1.3), rng.uniform(0.6, 1.0), rng.uniform(0.6, 1.4)])
    if shape == "prism":
        d = size * rng.uniform(0.7, 1.1)
        return np.array([d, d, size * rng.uniform(0.6, 1.5)])
    if shape == "pyramid":
        return size * np.array([rng.uniform(0.8, 1.2), rng.uniform(0.8, 1.2), rng.uniform(0.8, 1.4)])
    raise ValueError(f"unknown shape '{shape}'; choose from {', '.join(SHAPES)}")


def _sq_dist(x: np.ndarray, y: np.ndarray, points: np.ndarray) -> np.ndarray:
    """[M, K] squared distances between candidates (x, y each [M, 1]) and points [K, 2]."""
    dx = x - points[None, :, 0]
    dy = y - points[None, :, 1]
    return dx * dx + dy * dy


def _min_sq_dist(x: np.ndarray, y: np.ndarray, points: np.ndarray) -> np.ndarray:
    return _sq_dist(x, y, points).min(axis=1, initial=np.inf)


class _Placer:
    """Rejection sampling of floor positions that keep the walkway, the walls and other objects clear.

    Candidates are drawn and tested in batches, so a placement costs a few array operations.
    """

    batch = 64

    def __init__(self, room_size: np.ndarray, rng: np.random.Generator) -> None:
        self.half = room_size[:2] / 2
        self.walkway = walkway_points(room_size)
        self.rng = rng
        self.centres = np.zeros((0, 2))
        self.radii = np.zeros(0)

    def fits(self, xy: np.ndarray, radius: float) -> np.ndarray:
        """[M] which of the candidate centres xy [M, 2] leave room for a footprint of `radius`."""
        ok = np.all(np.abs(xy) <= self.half - radius - WALL_MARGIN, axis=1)
        idx = np.flatnonzero(ok)
        x, y = xy[idx, 0:1], xy[idx, 1:2]
        walkway = _min_sq_dist(x, y, self.walkway)
        keep = walkway >= (WALKWAY_HALF_WIDTH + radius) ** 2
        if len(self.radii):
            keep &= np.all(np.sqrt(_sq_dist(x, y, self.centres)) - self.radii >= radius + OBJECT_GAP, axis=1)
        ok[idx] = keep
        return ok

    def place(self, radius: float, pair_step: np.ndarray | None, attempts: int) -> list[np.ndarray] | None:
        """Centres for one object, or for an object and its copy `pair_step` away; None if nothing fits."""
        for _ in range(max(attempts // self.batch, 1)):
            xy = self.rng.uniform(-self.half, self.half, size=(self.batch, 2))
            ok = self.fits(xy, radius)
            if pair_step is not None:
                ok &= self.fits(xy + pair_step, radius)
            hits = np.flatnonzero(ok)
            if len(hits):
                centres = [xy[hits[0]]] if pair_step is None else [xy[hits[0]], xy[hits[0]] + pair_step]
                self.centres = np.vstack([self.centres, *centres])
                self.radii = np.append(self.radii, [radius] * len(centres))
                return centres
        return None


def _draw_appearances(count: int, rng: np.random.Generator, shapes: tuple[str, ...] = SHAPES
                      ) -> list[tuple[str, str, str]]:
    """`count` distinct (shape, colour, size) triples in random order."""
    combos = [(s, c, z) for s in shapes for c in COLORS for z in SIZES]
    picks = rng.choice(len(combos), size=count, replace=False)
    return [combos[i] for i in picks]


def nearest_color_name(rgb: tuple[float, float, float]) -> str:
    """The colour word whose palette albedo is closest to `rgb` (what a person would call it)."""
    names = list(COLORS)
    dist = [float(np.sum((np.asarray(COLORS[n]) - np.asarray(rgb)) ** 2)) for n in names]
    return names[int(np.argmin(dist))]


def _draw_objects(num_originals: int, rng: np.random.Generator, style: SceneStyle | None = None) -> list[ObjectSpec]:
    """Objects with distinct appearances, not yet placed (centre at the origin, id 0).

    Without a style: palette colours and the three default textures. A style widens every factor: its
    shapes, any albedo, its texture kinds at random cell scales and contrasts, scaled sizes.
    """
    out = []
    for shape, color, size_name in _draw_appearances(num_originals, rng, SHAPES if style is None else style.shapes):
        if style is None:
            extent = make_extent(shape, rng.uniform(*SIZES[size_name]), rng)
            yaw = float(rng.uniform(-np.pi, np.pi))
            texture = str(rng.choice(TEXTURES, p=[0.4, 0.3, 0.3]))
            extra = {}
            rgb = COLORS[color]
        else:
            extent = make_extent(shape, rng.uniform(*SIZES[size_name]) * style.size_scale, rng)
            yaw = float(rng.uniform(-np.pi, np.pi))
            texture = str(rng.choice(style.object_textures, p=style.texture_weights))
            extra = {"texture_scale": float(rng.uniform(*style.texture_scale)),
                     "texture_tone": float(rng.uniform(*style.texture_tone)),
                     "texture_phase": float(rng.uniform(0, 100))}
            rgb = random_albedo(rng) if style.random_colors else COLORS[color]
            color = nearest_color_name(rgb)
        out.append(
            ObjectSpec(
                id=0,
                shape=shape,
                color_name=color,
                color_rgb=rgb,
                size_name=size_name,
                center=np.array([0.0, 0.0, extent[2] / 2]),
                extent=extent,
                yaw=yaw,
                texture=texture,
                **extra,
            )
        )
    return out


def _try_layout(
    room_size: np.ndarray, originals: list[ObjectSpec], num_pairs: int, rng: np.random.Generator, attempts: int = 320
) -> list[tuple[ObjectSpec, ObjectSpec | None]] | None:
    """Place the first `num_pairs` originals with a copy beside them, then the rest, largest first.

    Returns (object, original it copies or None) for every placed object; None if they do not fit.
    """
    placer = _Placer(room_size, rng)
    singles = sorted(originals[num_pairs:], key=lambda o: -footprint_radius(o.shape, o.extent))
    placed: list[tuple[ObjectSpec, ObjectSpec | None]] = []
    for index, obj in enumerate(originals[:num_pairs] + singles):
        radius = footprint_radius(obj.shape, obj.extent)
        step = None
        if index < num_pairs:
            # The copy stands beside the original along the original's own x axis, same yaw.
            side = rng.choice([-1.0, 1.0]) * np.array([np.cos(obj.yaw), np.sin(obj.yaw)])
            step = side * (2 * radius + rng.uniform(OBJECT_GAP, 0.15))
        centres = placer.place(radius, step, attempts)
        if centres is None:
            return None
        original = replace(obj, center=np.array([*centres[0], obj.extent[2] / 2]), extent=obj.extent.copy())
        placed.append((original, None))
        if step is not None:
            copy = replace(original, center=np.array([*centres[1], obj.extent[2] / 2]), extent=obj.extent.copy())
            placed.append((copy, original))
    return placed


def make_scene(seed: int, num_objects: int | None = None, room: str = "room", style: SceneStyle | None = None
               ) -> Scene:
    """A reproducible room with `num_objects` objects (default: a seeded choice in 5..30).

    The room grows by 8 % and the layout is redrawn when the objects do not fit, so any object
    count gives a valid scene; the result depends only on the arguments. `style` (see `style.py`)
    widens shapes, colours, textures and sizes and sets the room's look; None is the default look.
    """
    if room not in ROOM_KINDS:
        raise ValueError(f"unknown room kind '{room}'; choose from {', '.join(ROOM_KINDS)}")
    rng = np.random.default_rng(seed)
    if num_objects is None:
        num_objects = int(rng.integers(MIN_OBJECTS, MAX_OBJECTS + 1))
    max_objects = len(SHAPES if style is None else style.shapes) * len(COLORS) * len(SIZES)
    if not 0 <= num_objects <= max_objects:
        raise ValueError(f"num_objects must be between 0 and {max_objects}, got {num_objects}")
    room_size = np.array([rng.uniform(*r) for r in ROOM_KINDS[room]])
    num_pairs = 0
    if num_objects >= 2 and rng.random() < DUPLICATE_PROBABILITY:
        num_pairs = int(rng.integers(1, min(3, num_objects // 2) + 1))
    if style is not None and style.duplicate_pairs is not None:
        num_pairs = min(style.duplicate_pairs, num_objects // 2)
    wall_colors = [FLOOR_COLORS[rng.integers(len(FLOOR_COLORS))]]
    wall_colors += [ROOM_COLORS[i] for i in rng.choice(len(ROOM_COLORS), size=5, replace=True)]
    if style is not None and style.room_colors is not None:
        wall_colors = list(style.room_colors)
    originals = _draw_objects(num_objects - num_pairs, rng, style)
    while (placed := _try_layout(room_size, originals, num_pairs, rng)) is None:
        room_size = room_size * np.array([1.08, 1.08, 1.0])
    # Random IDs, so duplicates and big objects do not always get the lowest IDs.
    for new_id, k in enumerate(rng.permutation(len(placed)), start=1):
        placed[k][0].id = new_id
    for obj, original in placed:
        obj.duplicate_of = original.id if original is not None else 0
    objects = sorted((obj for obj, _ in placed), key=lambda o: o.id)
    return Scene(seed=seed, room_size=room_size, objects=objects, wall_colors=wall_colors,
                 style=style if style is not None else SceneStyle.default())
