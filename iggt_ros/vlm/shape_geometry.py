"""Shape evidence from an instance's 3D points, to stand beside the region embedding's guess.

The region embedding names an instance's shape from its crops and is wrong about one time in ten
(a cylinder seen from the side looks like a box, a cube like a box). The map holds each instance's
surface points, and the outline measurements of them (`perception.outline`: footprint fill, top and
bottom taper) separate the shapes the embedding confuses. `shape_log_likelihood` turns them into a
log-likelihood of each shape, which the query side adds to the embedding's log-probabilities at
`GEOMETRY_WEIGHT`. Cube and box get the same likelihood: their footprints and profiles are alike, and
the map box's proportions already tell them apart (`relations.cube_log_odds`). Where the measurements
say nothing (`ShapeCues.usable`), the embedding decides alone.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from iggt_ros.perception.outline import ShapeCues
from iggt_ros.synthetic.attributes import SHAPES

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


def shape_log_likelihoods(cues: Sequence[ShapeCues | None]) -> np.ndarray:
    """[N, len(SHAPES)]: `cached_log_likelihood` per instance, rows of zeros where the points say nothing."""
    out = np.zeros((len(cues), len(SHAPES)))
    for i, c in enumerate(cues):
        ll = cached_log_likelihood(c)
        if ll is not None:
            out[i] = ll
    return out


@functools.lru_cache(maxsize=4096)
def cached_log_likelihood(cues: ShapeCues | None) -> np.ndarray | None:
    """`shape_log_likelihood` of the cues, worked out once per measurement (cues are equal only when every
    measurement is; read-only: every query that reads it shares it): an instance's cues change only with its
    points, while every query that names a shape reads them."""
    ll = shape_log_likelihood(cues)
    if ll is not None:
        ll.flags.writeable = False
    return ll
