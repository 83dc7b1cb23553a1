"""Relations and superlatives on the map's boxes, as the robot sees them.

A relation query ("the cube left of the red ball", "the largest box", "the cylinder between the two
boxes") is answered in two steps. The text side gives each instance an attribute score for the
target and for each reference (`ParsedQuery`); this module turns the map's geometry into a fit in
[0, 1] per instance and combines both. Directions are taken from the viewer (the robot's
`base_link` pose in the map frame when known, else the map frame's own axes): 'left of X' means
to the left of X along the line of sight from the viewer to X, 'in front of X' nearer to the
viewer than X along that line, 'behind' farther.

Each instance weighs as much as the chance that it is what the description names (`membership`,
from the attribute probabilities of its embedding; without them, its attribute score relative to
the best match, `exp((s - s_max) / tau)`). A superlative ('the largest box', 'the cube nearest to
the ball') then picks the instance that is both likely a member and not outdone by another likely
member: its weight times, for each instance more extreme than it, the chance that that one is not
a member (`_extreme`). So an object the embedding is unsure about still wins when every more
extreme object is surely not one, and an unlikely member that happens to be the most extreme does
not hide the likely ones behind it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from iggt_ros.vlm.understanding import ParsedQuery

ATTRIBUTE_TAU = 0.02
"""Attribute-score gap (on the (1 + cos) / 2 scale) that weighs a candidate down by e."""
SIDE_SCALE_M = 0.05
"""Softness of left/right/front/behind decisions (metres)."""
DISTANCE_SCALE_M = 0.05
"""Softness of 'nearer than' / 'farther than' between two instances (metres)."""
SIZE_SCALE = 0.1
"""Softness of 'larger than' / 'smaller than' (log-volume)."""
HEIGHT_SCALE_M = 0.03
"""Softness of 'taller than' (top height, metres)."""
BEARING_SCALE_RAD = 0.03
"""Softness of 'more to the left / right than' (bearing from the robot, radians)."""


@dataclass
class Geometry:
    """Box centres in the viewer frame (x forward, y left, z up), box extents and heights."""

    centers: np.ndarray
    """[N,3] metres."""
    sizes: np.ndarray
    """[N,3] full extents (x, y along the box axes, z up)."""

    @classmethod
    def from_boxes(cls, centers: np.ndarray, sizes: np.ndarray, viewer: np.ndarray | None) -> Geometry:
        """Boxes of the map frame seen from `viewer` (4x4 pose of the viewer in that frame; None = identity)."""
        c = np.asarray(centers, np.float64).reshape(-1, 3)
        if viewer is not None:
            v = np.asarray(viewer, np.float64)
            c = (c - v[:3, 3]) @ v[:3, :3]
        return cls(c, np.asarray(sizes, np.float64).reshape(-1, 3))

    @property
    def bottom(self) -> np.ndarray:
        return self.centers[:, 2] - self.sizes[:, 2] / 2

    @property
    def top(self) -> np.ndarray:
        return self.centers[:, 2] + self.sizes[:, 2] / 2


@dataclass
class RelationResult:
    weights: np.ndarray
    """[N] combined fit in [0, 1]: attribute weight x relation fit x superlative fit (rank by this)."""
    references: list[int]
    """Indices of the instances taken as the relation's references (empty for the robot)."""


EQUAL_SIDES_RATIO = 0.75
"""Shortest over longest extent of a map box that is as likely a cube's as a (non-cubic) box's: where
the ratios of map boxes of objects seen all round and down to the floor part (seeds 52000-52039: a
cube's 10th percentile 0.81, a box's 90th 0.76; boxes asked about have sides within 0.85 of each
other at most)."""
EQUAL_SIDES_SCALE = 0.05
"""Change of that ratio that multiplies the odds 'cube rather than box' by e."""
EQUAL_SIDES_MAX_LOG_ODDS = 3.0
"""Bound on the proportions' say, for an object seen all round."""
PARTLY_SEEN_MAX_BOX_LOG_ODDS = 0.0
"""Bound on the odds for 'box' of an object not seen all round: every side measured is only at least
as long as the true one (a cube seen from one side is a slab), so uneven sides then say little, and
the embedding decides; even sides still say 'cube' (up to `EQUAL_SIDES_MAX_LOG_ODDS`)."""
FLOOR_CONTACT_M = 0.03
"""A map box whose bottom is this far or less above the floor (z = 0 of the map frame), or from the top of
another box under it, was seen down to where it stands; one higher may have its lower part hidden (by a
neighbour, or out of view)."""


def heights_above_support(centers: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """[N] height of each map box's bottom above what holds it: 0 for a box resting on another box (its
    bottom within `FLOOR_CONTACT_M` of that box's top, its centre over that box's footprint: a mug on a
    table, a box on a box), else its bottom's height above z = 0 of the map frame.

    Without this a flat box on a table would look lifted off the floor with its lower part hidden, and
    `cube_log_odds` would let it grow to its top: every tabletop box would read as a cube.
    """
    c = np.asarray(centers, np.float64).reshape(-1, 3)
    e = np.asarray(sizes, np.float64).reshape(-1, 3)
    bottom, top = c[:, 2] - e[:, 2] / 2, c[:, 2] + e[:, 2] / 2
    reach = np.linalg.norm(e[:, :2], axis=1) / 2  # the footprint's half diagonal: any yaw fits inside
    rests = np.zeros(len(c), bool)
    if len(c) > 1:  # per support, the boxes whose centre is over its footprint (a tree: not every pair of boxes)
        for j, over in enumerate(cKDTree(c[:, :2]).query_ball_point(c[:, :2], r=reach)):
            over = np.asarray(over, np.int64)
            over = over[(over != j) & (np.abs(bottom[over] - top[j]) <= FLOOR_CONTACT_M)]
            rests[over] = True
    return np.where(rests, 0.0, bottom)


def cube_log_odds(sizes: np.ndarray, bottoms: np.ndarray | None = None,
                  seen_all_round: np.ndarray | None = None) -> np.ndarray:
    """[N] log-likelihood ratio 'cube' : 'box' of each map box from its proportions alone.

    A cube is a box with equal sides; that is all that tells the two words apart, and it is the
    distinction the region embedding gets wrong most often (about two thirds of its shape errors
    on replayed scenes), while the map's box measures it directly. 0 for a box with no extent.

    Map boxes of objects seen in part come out short or narrow. With the boxes' `bottoms` (z of
    their lowest point), a box not seen down to the floor (`FLOOR_CONTACT_M`) may be as tall as its
    top above the floor: its height is taken, within that range, as close to its footprint's longer
    side as it can be. With `seen_all_round` ([N] bool: the footprint's outline has points all round,
    `perception.outline.ShapeCues.sectors`), uneven sides of one that was not count for 'box' at most
    `PARTLY_SEEN_MAX_BOX_LOG_ODDS`.
    """
    e = np.array(sizes, np.float64).reshape(-1, 3)
    if bottoms is not None:
        bottom = np.asarray(bottoms, np.float64).reshape(-1)
        above_floor = np.where(bottom > FLOOR_CONTACT_M, bottom + e[:, 2], e[:, 2])
        e[:, 2] = np.clip(e[:, :2].max(axis=1), e[:, 2], np.maximum(above_floor, e[:, 2]))
    longest = e.max(axis=1)
    ratio = e.min(axis=1) / np.maximum(longest, 1e-9)
    low = np.full(len(e), -EQUAL_SIDES_MAX_LOG_ODDS)
    if seen_all_round is not None:
        low = np.where(np.asarray(seen_all_round, bool).reshape(-1), low, -PARTLY_SEEN_MAX_BOX_LOG_ODDS)
    odds = np.clip((ratio - EQUAL_SIDES_RATIO) / EQUAL_SIDES_SCALE, low, EQUAL_SIDES_MAX_LOG_ODDS)
    return np.where(longest > 1e-6, odds, 0.0)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -50, 50)))


def attribute_weights(scores: np.ndarray | None, n: int, membership: np.ndarray | None = None,
                      tau: float = ATTRIBUTE_TAU) -> np.ndarray:
    """How much each instance counts as what a mention describes: its membership probability when
    known; else exp((s - s_best) / tau) of the attribute scores; all ones when the mention names
    nothing (scores None)."""
    if membership is not None:
        return np.clip(np.asarray(membership, np.float64), 0.0, 1.0)
    if scores is None:
        return np.ones(n)
    s = np.asarray(scores, np.float64)
    return np.exp((s - s.max()) / tau)


def relate(parsed: ParsedQuery, geometry: Geometry, target_scores: np.ndarray | None,
           reference_scores: Sequence[np.ndarray | None], tau: float = ATTRIBUTE_TAU,
           target_membership: np.ndarray | None = None,
           reference_membership: Sequence[np.ndarray | None] | None = None) -> RelationResult:
    """Weights of every instance for a query with a relation and/or a superlative.

    `reference_scores[k]` are the attribute scores of reference k (None when it names no attribute);
    the optional `*_membership` give, per instance, the chance that it has every attribute the
    mention names (`query.attribute_membership`).
    """
    n = len(geometry.centers)
    w = attribute_weights(target_scores, n, target_membership, tau)
    refs: list[int] = []
    fit = np.ones(n)
    if parsed.relation is not None:
        ref_members = list(reference_membership or [None] * len(reference_scores))
        refs = _references(parsed, [None if s is None else attribute_weights(s, n, m, tau) * (1 + s)
                                    for s, m in zip(reference_scores, ref_members, strict=True)], n)
        if parsed.references and not refs:
            return RelationResult(np.zeros(n), [])
        w = w.copy()
        w[refs] = 0.0  # an object is not in relation to itself
        fit = relation_fit(parsed.relation, geometry, refs, w)
    if parsed.superlative is not None:
        fit = fit * superlative_fit(parsed.superlative, geometry, w * fit)
    return RelationResult(w * fit, refs)


def _references(parsed: ParsedQuery, scores: Sequence[np.ndarray | None], n: int) -> list[int]:
    refs: list[int] = []
    for desc, s in zip(parsed.references, scores, strict=True):
        order = np.argsort(-np.asarray(s if s is not None else np.zeros(n)), kind="stable")
        picked = [int(i) for i in order if int(i) not in refs][:desc.count]
        refs += picked
    return refs


def relation_fit(relation: str, g: Geometry, refs: list[int], w: np.ndarray) -> np.ndarray:
    """[N] in [0, 1]: how well each instance stands in `relation` to the references (or the robot)."""
    c = g.centers
    ref_point = c[refs[0]] if refs else np.zeros(3)  # no reference: the robot, at the viewer's origin
    distance = float(np.linalg.norm(ref_point[:2]))
    ray = ref_point[:2] / distance if distance > 1e-6 else np.array([1.0, 0.0])
    if relation in ("left_of", "right_of"):
        lateral = ray[0] * c[:, 1] - ray[1] * c[:, 0]  # (ray x p).z: > 0 left of the line of sight
        sign = 1.0 if relation == "left_of" else -1.0
        return _sigmoid(sign * lateral / SIDE_SCALE_M)
    if relation in ("in_front_of", "behind"):
        depth = c[:, :2] @ ray - np.linalg.norm(ref_point[:2])
        sign = -1.0 if relation == "in_front_of" else 1.0
        return _sigmoid(sign * depth / SIDE_SCALE_M)
    if relation in ("next_to", "nearest_to", "farthest_from"):
        d = np.linalg.norm(c[:, :2] - ref_point[:2], axis=1)
        return _extreme(-d if relation != "farthest_from" else d, w, DISTANCE_SCALE_M)
    if relation == "between":
        if len(refs) < 2:
            return np.zeros(len(c))
        a, b = c[refs[0], :2], c[refs[1], :2]
        ab = b - a
        length = max(float(np.linalg.norm(ab)), 1e-6)
        u = (c[:, :2] - a) @ ab / length**2
        off = np.abs((c[:, 0] - a[0]) * ab[1] - (c[:, 1] - a[1]) * ab[0]) / length
        inside = _sigmoid((u - 0.05) / 0.05) * _sigmoid((0.95 - u) / 0.05)
        return inside * np.exp(-off / (0.25 * length + 0.05))
    if relation == "on_top_of":
        r = refs[0]
        horizontal = np.linalg.norm(c[:, :2] - c[r, :2], axis=1)
        reach = 0.5 * max(float(np.max(g.sizes[r, :2])), 0.05)
        gap = np.abs(g.bottom - g.top[r])
        above = _sigmoid((c[:, 2] - c[r, 2]) / 0.02)
        return above * np.exp(-gap / 0.05) * _sigmoid((reach - horizontal) / 0.05)
    raise ValueError(f"unknown relation '{relation}'")


def superlative_fit(superlative: str, g: Geometry, w: np.ndarray) -> np.ndarray:
    """[N] in [0, 1]: 1 for the most extreme candidate, less for the others."""
    c = g.centers
    volume = np.log(np.maximum(np.prod(np.maximum(g.sizes, 1e-3), axis=1), 1e-9))
    values = {
        "largest": (volume, SIZE_SCALE), "smallest": (-volume, SIZE_SCALE),
        "tallest": (g.top, HEIGHT_SCALE_M),
        "leftmost": (np.arctan2(c[:, 1], c[:, 0]), BEARING_SCALE_RAD),
        "rightmost": (-np.arctan2(c[:, 1], c[:, 0]), BEARING_SCALE_RAD),
        "nearest": (-np.linalg.norm(c[:, :2], axis=1), DISTANCE_SCALE_M),
        "farthest": (np.linalg.norm(c[:, :2], axis=1), DISTANCE_SCALE_M),
    }
    if superlative not in values:
        raise ValueError(f"unknown superlative '{superlative}'")
    value, scale = values[superlative]
    return _extreme(value, w, scale)


def _extreme(value: np.ndarray, w: np.ndarray, scale: float) -> np.ndarray:
    """[N] in [0, 1]: the chance that no other instance is both a member (weight `w`) and more extreme.

    prod over j != i of (1 - w_j * sigmoid((value_j - value_i) / scale)): an instance outdone only by
    unlikely members keeps most of its weight; two equal values halve each other (identical copies
    tie).
    """
    v = np.asarray(value, np.float64)
    beats = np.asarray(w, np.float64)[None, :] * _sigmoid((v[None, :] - v[:, None]) / scale)
    np.fill_diagonal(beats, 0.0)
    return np.prod(1.0 - np.clip(beats, 0.0, 1.0), axis=1)
