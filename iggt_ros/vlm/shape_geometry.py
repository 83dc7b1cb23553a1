"""Shape evidence from an instance's 3D points, to stand beside the region embedding's guess.

The region embedding names an instance's shape from its crops and is wrong about one time in ten
(a cylinder seen from the side looks like a box, a cube like a box). The map holds each instance's
surface points, and three cheap measurements of them separate the shapes the embedding confuses:

- footprint fill: the area of the points' horizontal outline (convex) over the area of the smallest
  rectangle around it. A round footprint (cylinder, ball, cone) fills pi/4 of it, a box's
  fills it all; half a disk, what one side of a cylinder shows, still fills pi/4.
- top and bottom taper: the outline's area in the top and bottom fifth of the height over the whole
  footprint's. A ball narrows toward both ends, a cone toward its top, a box or cylinder not at all.
  (Over the whole footprint, not the middle band's: the walls at mid-height are seen only from where
  the cameras went, while a top face seen from above outlines the whole footprint.)

`shape_cues` measures them (the object map hands out a `PendingCues` for each version of an instance's
points, measured at the first read: only queries that name a shape read them, and measuring every changed
instance every window cost about a millisecond each);
`shape_log_likelihood` turns them into a log-likelihood of each shape, which the query side adds to
the embedding's log-probabilities at `GEOMETRY_WEIGHT`. Cube and box get the same likelihood: their
footprints and profiles are alike, and the map box's proportions already tell them apart
(`relations.cube_log_odds`).

When the geometry says nothing (the rule): fewer than `MIN_POINTS` points, or a footprint not seen all
round (points of its outer half in fewer than `MIN_SECTORS` of the eight compass sectors around its
centre: seen from one side, an arc or an L fills its rectangle like no real shape), or a footprint
that is a line; then the embedding decides alone. (A band with too few points leaves its taper out.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from iggt_ros.synthetic.attributes import SHAPES

MIN_POINTS = 150
"""Fewer points than this give no geometric evidence (the outline of a few voxels is mostly noise)."""
MIN_SECTORS = 8
"""Of the 8 compass sectors around the footprint's centre, at least this many must hold outline points:
a footprint seen from one side is an arc or an L whose outline fills its rectangle like no real shape."""
MIN_BAND_POINTS = 8
"""Points a height band needs for its outline area to count."""
MAX_POINTS = 1000
"""At most this many of an instance's points are measured (about 1 ms; the map measures every instance
whose voxels changed in a window)."""
BAND = 0.2
"""Top and bottom bands: this fraction of the height at each end."""

_STEPS = 64
_ANGLES = np.linspace(0, 2 * np.pi, _STEPS, endpoint=False)
_DIRECTIONS = np.stack([np.cos(_ANGLES), np.sin(_ANGLES)])
"""Directions along which an outline is measured (every 360/64 degrees)."""
SUPPORT_QUANTILE = 1.0
"""An outline reaches, in each direction, as far as this share of the points. 1, the farthest point: a lower
quantile cuts a square's corners (few points lie near a corner) and makes boxes look round, and stray
points proved rare (dropping points with few neighbours changed the fill by under 0.01)."""


@dataclass(frozen=True)
class ShapeCues:
    """Measurements of one instance's points; see the module text. NaN where a band had too few points."""

    fill: float
    """Outline area over the smallest enclosing rectangle's area, of the whole footprint."""
    top_taper: float
    """Outline area of the top band over that of the whole footprint."""
    bottom_taper: float
    """Outline area of the bottom band over that of the whole footprint."""
    sectors: int
    """Compass sectors (of 8) around the footprint's centre that hold points of its outer half."""
    points: int

    def as_dict(self) -> dict[str, float]:
        return {"fill": self.fill, "top_taper": self.top_taper, "bottom_taper": self.bottom_taper,
                "sectors": float(self.sectors), "points": float(self.points)}

    @classmethod
    def from_dict(cls, d: dict) -> ShapeCues:
        return cls(float(d["fill"]), float(d["top_taper"]), float(d["bottom_taper"]), int(d["sectors"]),
                   int(d["points"]))

    @property
    def usable(self) -> bool:
        """Whether the points say anything about the shape (the rule in the module text)."""
        return self.points >= MIN_POINTS and self.sectors >= MIN_SECTORS and np.isfinite(self.fill)

    @cached_property
    def log_likelihood(self) -> np.ndarray | None:
        """`shape_log_likelihood` of these cues, worked out once: cues are measured anew (a new object)
        only when an instance's points change, while every query that names a shape reads them."""
        ll = shape_log_likelihood(self)
        if ll is not None:
            ll.flags.writeable = False  # shared by every query that reads it
        return ll


def _support(xy: np.ndarray) -> np.ndarray:
    """[64] how far the outline reaches along each direction (`SUPPORT_QUANTILE` of the projections)."""
    proj = xy @ _DIRECTIONS
    k = int(round(SUPPORT_QUANTILE * (len(xy) - 1)))
    return np.partition(proj, k, axis=0)[k]


def _outline_area(h: np.ndarray) -> float:
    """Area of the polygon bounded by the lines x . d_j = h_j (a convex outline seen from 64 sides)."""
    d0, d1 = _DIRECTIONS.T, np.roll(_DIRECTIONS.T, -1, axis=0)
    h0, h1 = h, np.roll(h, -1)
    det = d0[:, 0] * d1[:, 1] - d0[:, 1] * d1[:, 0]
    vx = (h0 * d1[:, 1] - h1 * d0[:, 1]) / det  # corner where neighbouring lines meet
    vy = (d0[:, 0] * h1 - d1[:, 0] * h0) / det
    return 0.5 * abs(float(np.dot(vx, np.roll(vy, -1)) - np.dot(vy, np.roll(vx, -1))))


def _min_rectangle(h: np.ndarray) -> tuple[float, np.ndarray]:
    """(area, centre) of the smallest rectangle, among those with sides along the measured directions,
    that holds the outline."""
    q = _STEPS // 4
    j = np.arange(q)
    widths = h[j] + h[j + 2 * q]
    heights = h[j + q] + h[j + 3 * q]
    k = int(np.argmin(widths * heights))
    a, b = _DIRECTIONS[:, k], _DIRECTIONS[:, k + q]
    centre = (h[k] - h[k + 2 * q]) / 2 * a + (h[k + q] - h[k + 3 * q]) / 2 * b
    return float(widths[k] * heights[k]), centre


def shape_cues(points: np.ndarray) -> ShapeCues | None:
    """The cues of one instance's points ([N, 3], z up); None for fewer than 3 points."""
    pts = np.asarray(points, np.float64).reshape(-1, 3)
    n = len(pts)
    if n < 3:
        return None
    if n > MAX_POINTS:  # every k-th voxel: the outline of a voxel set barely moves, the time drops k-fold
        pts = pts[:: -(-n // MAX_POINTS)]
    xy = pts[:, :2] - pts[:, :2].mean(0)
    support = _support(xy)
    area = _outline_area(support)
    rect_area, centre = _min_rectangle(support)
    if area <= 1e-8 or rect_area <= 1e-8:  # a line or a point: nothing to measure
        return ShapeCues(float("nan"), float("nan"), float("nan"), 0, n)
    fill = float(np.clip(area / max(rect_area, 1e-12), 0.0, 1.0))
    rel = xy - centre
    radius = np.linalg.norm(rel, axis=1)
    outer = radius >= 0.5 * np.median(radius[radius >= np.percentile(radius, 75)])
    sector = (np.floor((np.arctan2(rel[outer, 1], rel[outer, 0]) + np.pi) / (np.pi / 4)).astype(int)) % 8
    sectors = int(len(np.unique(sector)))
    z_lo, z_hi = np.percentile(pts[:, 2], [2, 98])
    height = z_hi - z_lo
    tapers = [float("nan"), float("nan")]
    if height > 1e-3:
        t = (pts[:, 2] - z_lo) / height

        def band_area(lo: float, hi: float) -> float:
            sel = (t >= lo) & (t <= hi)
            return _outline_area(_support(xy[sel])) if int(sel.sum()) >= MIN_BAND_POINTS else float("nan")

        tapers = [band_area(1.0 - BAND, 1.0) / area, band_area(0.0, BAND) / area]
    return ShapeCues(fill, tapers[0], tapers[1], sectors, n)


GEOMETRIC_CLASSES: dict[str, tuple[str, ...]] = {
    "prism": ("cube", "box"), "cylinder": ("cylinder",), "sphere": ("sphere",), "cone": ("cone",)}
"""The shapes the points tell apart, and which vocabulary shapes each stands for."""

CUE_MODEL: dict[str, tuple[tuple[float, float], tuple[float, float], tuple[float, float]]] = {
    "prism": ((0.915, 0.049), (-0.077, 0.063), (-0.725, 0.63)),
    "cylinder": ((0.802, 0.02), (-0.071, 0.064), (-0.803, 0.466)),
    "sphere": ((0.802, 0.024), (-0.532, 0.144), (-0.924, 0.333)),
    "cone": ((0.79, 0.028), (-2.174, 0.265), (-0.12, 0.159)),
}
"""Per geometric class, (mean, standard deviation) of fill, log top taper and log bottom taper: measured on
the usable instances of oracle replays of synthetic scenes outside every benchmark (seeds 52000-52039: 508
of the 623 instances matched to their objects; the rest fall back to the embedding). The bottom band is
often hidden by neighbours or out of view, hence its wide spread."""
OUTLIER = 0.05
"""Share of each cue's likelihood spread evenly over its range: one odd measurement (a face hidden by a
neighbour) lowers a shape's likelihood by a bounded amount instead of ruling it out."""
_CUE_RANGES = (1.0, 6.0, 6.0)


def shape_log_likelihood(cues: ShapeCues | None) -> np.ndarray | None:
    """[len(SHAPES)] log-likelihood of the cues under each shape (vocabulary order, `SHAPES`), with the
    largest at 0; None when the cues say nothing (`ShapeCues.usable`)."""
    if cues is None or not cues.usable:
        return None
    x = (cues.fill, np.log(max(cues.top_taper, 1e-3)), np.log(max(cues.bottom_taper, 1e-3)))
    by_class = {}
    for name, params in CUE_MODEL.items():
        total = 0.0
        for value, (mean, sd), span in zip(x, params, _CUE_RANGES, strict=True):
            if not np.isfinite(value):
                continue
            density = np.exp(-0.5 * ((value - mean) / sd) ** 2) / (sd * np.sqrt(2 * np.pi))
            total += float(np.log((1 - OUTLIER) * density + OUTLIER / span))
        by_class[name] = total
    out = np.array([next(v for k, v in by_class.items() if s in GEOMETRIC_CLASSES[k]) for s in SHAPES])
    return out - out.max()


class PendingCues:
    """The cues of one version of an instance's points, measured at the first `get` and then kept. Readers
    take `measured(x)` of a cues field, which may hold a `PendingCues`, a `ShapeCues` or None."""

    __slots__ = ("_points", "_cues")

    def __init__(self, points: np.ndarray) -> None:
        self._points: np.ndarray | None = points
        """Not copied: the map replaces an instance's points, it never changes them in place."""
        self._cues: ShapeCues | None = None

    @property
    def is_measured(self) -> bool:
        return self._points is None

    def get(self) -> ShapeCues | None:
        points = self._points  # one read: another thread may measure at the same time, with the same result
        if points is not None:
            self._cues = shape_cues(points)
            self._points = None
        return self._cues


def measured(cues: ShapeCues | PendingCues | None) -> ShapeCues | None:
    """The cues themselves, measured now if they were pending."""
    return cues.get() if isinstance(cues, PendingCues) else cues


def shape_log_likelihoods(cues: Sequence[ShapeCues | None]) -> np.ndarray:
    """[N, len(SHAPES)]: `shape_log_likelihood` per instance (each cues' cached `ShapeCues.log_likelihood`),
    rows of zeros where the points say nothing."""
    out = np.zeros((len(cues), len(SHAPES)))
    for i, c in enumerate(cues):
        ll = None if c is None else c.log_likelihood
        if ll is not None:
            out[i] = ll
    return out
