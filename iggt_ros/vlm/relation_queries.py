"""Relation and superlative queries generated from a scene's true geometry, for the benchmark.

Each query has exactly one right answer that only the relation can single out: the target's
description matches at least two objects, of which exactly one stands in the relation (or is the
most extreme) by a clear margin, and every other match clearly does not. References are named by
a description unique in the scene. 'Cube' and 'box' are not used where a box with nearly equal
sides would count (it looks like a cube: which objects the word covers is not clear). Directions
are those of `relations` (from the robot's `base_link` at the end of the sequence), computed here
from the true object centres and sizes.

`on_top_of` needs stacked objects, which the synthetic scenes do not have; it is reported with no
queries rather than left out silently.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np

from iggt_ros.vlm.captions import ATTRIBUTE_PATTERNS
from iggt_ros.vlm.understanding import RELATIONS, SUPERLATIVES

SIDE_MARGIN_M = 0.12
"""Target at least this far on the named side, every other match at least this far on the other."""
DISTANCE_MARGIN_M = 0.25
SIZE_RATIO = 1.5
HEIGHT_MARGIN_M = 0.1
BEARING_MARGIN_RAD = 0.15
NEXT_TO_MAX_M = 1.5
CUBE_LOOKALIKE_RATIO = 0.85
"""A box whose shortest side is at least this share of its longest looks like a cube to anyone: a
description that names 'cube' or 'box' where such a box would count has no one clear answer."""

PHRASES: dict[str, list[str]] = {
    "left_of": ["left of", "to the left of", "on the left of"],
    "right_of": ["right of", "to the right of", "on the right side of"],
    "in_front_of": ["in front of"],
    "behind": ["behind", "in back of"],
    "next_to": ["next to", "beside", "near"],
    "between": ["between"],
    "on_top_of": ["on top of"],
    "nearest_to": ["nearest to", "closest to"],
    "farthest_from": ["farthest from", "furthest from"],
    "largest": ["the largest {t}", "the biggest {t}"],
    "smallest": ["the smallest {t}"],
    "tallest": ["the tallest {t}"],
    "leftmost": ["the leftmost {t}", "the {t} on the left"],
    "rightmost": ["the rightmost {t}", "the {t} on the right"],
    "nearest": ["the closest {t}", "the {t} nearest to the robot", "the nearest {t}"],
    "farthest": ["the farthest {t}", "the {t} farthest from the robot"],
}


@dataclass
class SceneObject:
    """What the generator needs of a true object: its ID, attributes and box in the viewer frame."""

    id: int
    color: str
    shape: str
    size: str
    center: np.ndarray
    """[3] in the viewer frame (x forward, y left, z up)."""
    extent: np.ndarray


@dataclass
class RelationQuery:
    kind: str
    """The relation or superlative it tests."""
    text: str
    target: int
    references: tuple[int, ...] = ()
    """IDs of the objects the text names as references."""


def _phrase(key: tuple[str | None, str | None, str | None]) -> str:
    color, shape, size = key
    return " ".join(w for w in (size, color, shape or "object") if w)


def _matches(o: SceneObject, key) -> bool:
    c, s, z = key
    return (c is None or o.color == c) and (s is None or o.shape == s) and (z is None or o.size == z)


def _shape_ambiguous(key, objects: Sequence[SceneObject]) -> bool:
    """Whether `key` names 'cube' or 'box' and an object it would otherwise fit is a box that looks
    like a cube (`CUBE_LOOKALIKE_RATIO`), so that whether it counts depends on who looks."""
    color, shape, size = key
    if shape not in ("cube", "box"):
        return False
    return any(o.shape == "box" and float(np.min(o.extent)) >= CUBE_LOOKALIKE_RATIO * float(np.max(o.extent))
               and _matches(o, (color, None, size)) for o in objects)


def _unique_name(o: SceneObject, objects: Sequence[SceneObject]) -> str | None:
    """The shortest description naming `o` alone (colour and shape first)."""
    for use_c, use_s, use_z in sorted(ATTRIBUTE_PATTERNS, key=lambda p: (sum(p), not p[0], not p[1])):
        key = (o.color if use_c else None, o.shape if use_s else None, o.size if use_z else None)
        if _shape_ambiguous(key, objects):
            continue
        if [x.id for x in objects if _matches(x, key)] == [o.id]:
            return "the " + _phrase(key)
    return None


def _target_keys(o: SceneObject):
    keys = [(None, o.shape, None), (o.color, None, None), (o.color, o.shape, None), (None, None, None)]
    return keys


def _bearing(c: np.ndarray) -> np.ndarray:
    return np.arctan2(c[..., 1], c[..., 0])


def _side_values(relation: str, centers: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Signed margin of each centre for a side relation (> 0: on the named side), as `relations` decides."""
    d = float(np.linalg.norm(ref[:2]))
    ray = ref[:2] / d
    if relation in ("left_of", "right_of"):
        lateral = ray[0] * centers[:, 1] - ray[1] * centers[:, 0]
        return lateral if relation == "left_of" else -lateral
    depth = centers[:, :2] @ ray - d
    return -depth if relation == "in_front_of" else depth


def generate(objects: Sequence[SceneObject], rng: random.Random, per_kind: int = 3,
             askable: Collection[int] | None = None) -> list[RelationQuery]:
    """Up to `per_kind` unambiguous queries per relation and superlative for one scene.

    `objects` are every object the answer depends on (all the robot saw); targets and references
    are drawn from `askable` IDs only (default: all), e.g. those the map has an instance of, so a
    query's answer never changes because some other object was left out.
    """
    out: list[RelationQuery] = []
    objs = list(objects)
    centers = np.array([o.center for o in objs]) if objs else np.zeros((0, 3))
    can_ask = [askable is None or o.id in askable for o in objs]
    for kind in (*RELATIONS, *SUPERLATIVES):
        found: list[RelationQuery] = []
        order = list(range(len(objs)))
        rng.shuffle(order)
        for ti in order:
            t = objs[ti]
            if not can_ask[ti]:
                continue
            for key in _target_keys(t):
                q = _one(kind, ti, key, objs, centers, rng, can_ask)
                if q is not None:
                    found.append(q)
                    break
            if len(found) >= per_kind:
                break
        out += found
    return out


def _one(kind: str, ti: int, key, objs: list[SceneObject], centers: np.ndarray,
         rng: random.Random, can_ask: list[bool]) -> RelationQuery | None:
    t = objs[ti]
    if _shape_ambiguous(key, objs):
        return None
    if kind in SUPERLATIVES:
        members = [i for i, o in enumerate(objs) if _matches(o, key)]
        if len(members) < 2 or not _is_extreme(kind, ti, members, objs, centers):
            return None
        text = rng.choice(PHRASES[kind]).format(t=_phrase(key))
        return RelationQuery(kind, text, t.id)
    if kind == "on_top_of":
        return None
    refs_pool = [i for i in range(len(objs)) if i != ti and can_ask[i]]
    rng.shuffle(refs_pool)
    for ri in refs_pool[:6]:
        ref_name = _unique_name(objs[ri], objs)
        if ref_name is None:
            continue
        refs = [ri]
        if kind == "between":
            others = [j for j in refs_pool if j not in (ri,)]
            partner = next((j for j in others if _unique_name(objs[j], objs) and _between_ok(ti, ri, j, centers)),
                           None)
            if partner is None:
                continue
            refs = [ri, partner]
            ref_name = f"{ref_name} and {_unique_name(objs[partner], objs)}"
        members = [i for i, o in enumerate(objs) if _matches(o, key) and i not in refs]
        if len(members) < 2 or ti not in members:
            continue
        if not _relation_ok(kind, ti, refs, members, centers):
            continue
        text = f"the {_phrase(key)} {rng.choice(PHRASES[kind])} {ref_name}"
        return RelationQuery(kind, text, t.id, tuple(objs[r].id for r in refs))
    return None


def _between_ok(ti: int, a: int, b: int, centers: np.ndarray) -> bool:
    u, off, length = _segment(centers[ti], centers[a], centers[b])
    return 0.2 <= u <= 0.8 and off <= 0.2 * length and length >= 0.6


def _segment(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    ab = b[:2] - a[:2]
    length = float(np.linalg.norm(ab))
    u = float((p[:2] - a[:2]) @ ab / max(length**2, 1e-9))
    off = abs(float((p[0] - a[0]) * ab[1] - (p[1] - a[1]) * ab[0])) / max(length, 1e-9)
    return u, off, length


def _relation_ok(kind: str, ti: int, refs: list[int], members: list[int], centers: np.ndarray) -> bool:
    others = [i for i in members if i != ti]
    ref = centers[refs[0]]
    if kind in ("left_of", "right_of", "in_front_of", "behind"):
        v = _side_values(kind, centers, ref)
        return v[ti] >= SIDE_MARGIN_M and all(v[i] <= -SIDE_MARGIN_M for i in others)
    if kind in ("next_to", "nearest_to", "farthest_from"):
        d = np.linalg.norm(centers[:, :2] - ref[:2], axis=1)
        if kind == "farthest_from":
            return all(d[ti] - d[i] >= DISTANCE_MARGIN_M for i in others)
        return (all(d[i] - d[ti] >= DISTANCE_MARGIN_M for i in others)
                and (kind != "next_to" or d[ti] <= NEXT_TO_MAX_M))
    if kind == "between":
        a, b = centers[refs[0]], centers[refs[1]]
        for i in others:
            u, off, length = _segment(centers[i], a, b)
            if -0.1 <= u <= 1.1 and off <= 0.6 * length:
                return False
        return True
    return False


def _is_extreme(kind: str, ti: int, members: list[int], objs: list[SceneObject], centers: np.ndarray) -> bool:
    others = [i for i in members if i != ti]
    if kind in ("largest", "smallest"):
        vol = np.array([float(np.prod(o.extent)) for o in objs])
        if kind == "largest":
            return all(vol[ti] >= SIZE_RATIO * vol[i] for i in others)
        return all(vol[i] >= SIZE_RATIO * vol[ti] for i in others)
    if kind == "tallest":
        top = np.array([o.center[2] + o.extent[2] / 2 for o in objs])
        return all(top[ti] - top[i] >= HEIGHT_MARGIN_M for i in others)
    if kind in ("leftmost", "rightmost"):
        b = _bearing(centers)
        sign = 1.0 if kind == "leftmost" else -1.0
        return all(sign * (b[ti] - b[i]) >= BEARING_MARGIN_RAD for i in others)
    d = np.linalg.norm(centers[:, :2], axis=1)
    if kind == "nearest":
        return all(d[i] - d[ti] >= DISTANCE_MARGIN_M for i in others)
    return all(d[ti] - d[i] >= DISTANCE_MARGIN_M for i in others)


def scene_objects(objects, viewer: np.ndarray, keep: set[int] | None = None) -> list[SceneObject]:
    """True objects (synthetic `ObjectSpec`s) in the viewer frame; `keep` limits them to those IDs."""
    v = np.asarray(viewer, np.float64)
    out = []
    for o in objects:
        if keep is not None and o.id not in keep:
            continue
        c = (np.asarray(o.center, np.float64) - v[:3, 3]) @ v[:3, :3]
        out.append(SceneObject(o.id, o.color_name, o.shape, o.size_name, c, np.asarray(o.extent, np.float64)))
    return out
