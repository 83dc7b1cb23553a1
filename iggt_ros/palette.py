"""Stable display colours for instance IDs: the one palette of the package.

The colourised instance images, the box markers and the evaluation report all colour an ID the
same way, and the colour of an ID never changes between windows or runs, so a user can follow one
object across RViz displays and into the report. numpy only, so every layer may import it.
"""

from __future__ import annotations

import numpy as np

_GOLDEN = 0.618033988749895


def instance_colors(ids: np.ndarray) -> np.ndarray:
    """[..., 3] uint8 RGB for integer IDs; 0 (no instance) is black.

    Hues step by the golden ratio so consecutive IDs get clearly different colours; saturation and
    value alternate over three levels so IDs whose hues come close still differ.
    """
    ids = np.asarray(ids, dtype=np.int64)
    hue = (ids * _GOLDEN) % 1.0
    sat = 0.65 + 0.1 * (ids % 3)
    val = 0.95 - 0.1 * ((ids // 3) % 3)
    rgb = _hsv_to_rgb(hue, sat, val)
    out = np.round(rgb * 255.0).astype(np.uint8)
    out[ids == 0] = 0
    return out


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    i = np.floor(h * 6.0).astype(np.int64) % 6
    f = h * 6.0 - np.floor(h * 6.0)
    p = v * (1.0 - s)
    q = v * (1.0 - f * s)
    t = v * (1.0 - (1.0 - f) * s)
    choices_r = [v, q, p, p, t, v]
    choices_g = [t, v, v, q, p, p]
    choices_b = [p, p, t, v, v, q]
    r = np.choose(i, choices_r)
    g = np.choose(i, choices_g)
    b = np.choose(i, choices_b)
    return np.stack([r, g, b], axis=-1)
