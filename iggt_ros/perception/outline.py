"""The outline of an instance's points: what the object map can say about its shape.

Three cheap measurements of an instance's surface points, for the query side to weigh against the region
embedding's guess (`vlm.shape_geometry` turns them into a likelihood of each shape):

- footprint fill: the area of the points' horizontal outline (convex) over the area of the smallest
  rectangle around it. A round footprint (cylinder, ball, cone) fills pi/4 of it, a box's
  fills it all; half a disk, what one side of a cylinder shows, still fills pi/4.
- top and bottom taper: the outline's area in the top and bottom fifth of the height over the whole
  footprint's. A ball narrows toward both ends, a cone toward its top, a box or cylinder not at all.
  (Over the whole footprint, not the middle band's: the walls at mid-height are seen only from where
  the cameras went, while a top face seen from above outlines the whole footprint.)

When they say nothing (`ShapeCues.usable`): fewer than `MIN_POINTS` points, or a footprint not seen all
round (points of its outer half in fewer than `MIN_SECTORS` of the eight compass sectors around its
centre: seen from one side, an arc or an L fills its rectangle like no real shape), or a footprint
that is a line. (A band with too few points leaves its taper out.)

The object map hands out a `PendingCues` for each version of an instance's points, measured at the first
read (`measured`): only queries that name a shape read them, and measuring every changed instance every
window cost about a millisecond each.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_POINTS = 150
"""Fewer points than this give no geometric evidence (the outline of a few voxels is mostly noise)."""
MIN_SECTORS = 8
"""Of the 8 compass sectors around the footprint's centre, at least this many must hold outline points:
a footprint seen from one side is an arc or an L whose outline fills its rectangle like no real shape."""
MIN_BAND_POINTS = 8
"""Points a height band needs for its outline area to count."""
MAX_POINTS = 1000
"""At most this many of an instance's points are measured (about 1 ms, at the first read after the points
changed: `PendingCues`)."""
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
