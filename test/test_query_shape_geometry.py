"""Shape evidence from an instance's points: measured on sampled surfaces of each shape, carried from the
object map to the saved query state, and weighed against the region embedding in relation queries."""

from __future__ import annotations

import numpy as np
import pytest

from iggt_ros.config import MappingConfig
from iggt_ros.perception.object_map import ObjectMap
from iggt_ros.perception.outline import MIN_POINTS, PendingCues, measured, shape_cues
from iggt_ros.perception.records import InstanceRecord, instance_record
from iggt_ros.synthetic.attributes import SHAPES
from iggt_ros.vlm.encoders import TextEncoder, normalize_rows
from iggt_ros.vlm.query import answer_query
from iggt_ros.vlm.shape_geometry import cached_log_likelihood, shape_log_likelihood
from iggt_ros.vlm.state import load_query_state, save_query_state


def surface(shape: str, n: int = 3000, size: float = 0.2, seed: int = 0, top: bool = True) -> np.ndarray:
    """Points on the surface of an object resting on the floor at the origin, its bottom face unseen;
    `top` False also leaves out what only a camera above it sees (top faces)."""
    rng = np.random.default_rng(seed)
    r = size / 2
    m = 8 * n
    if shape in ("cube", "box"):
        half = np.array([r, r, r]) if shape == "cube" else np.array([1.6 * r, 0.9 * r, 0.6 * r])
        p = rng.uniform(-1, 1, (m, 3)) * half
        axis = rng.integers(0, 3, m)
        p[np.arange(m), axis] = np.where(rng.random(m) < 0.5, -1, 1) * half[axis]
        p = p[(p[:, 2] > -half[2] + 1e-9) & (top | (p[:, 2] < half[2] - 1e-9))]
    elif shape == "sphere":
        u = rng.normal(size=(m, 3))
        p = r * u / np.linalg.norm(u, axis=1, keepdims=True)
        p = p[top | (p[:, 2] < 0.3 * r)]
    elif shape == "cylinder":
        a, z = rng.uniform(0, 2 * np.pi, m), rng.uniform(-r, r, m)
        p = np.stack([r * np.cos(a), r * np.sin(a), z], 1)
        cap = rng.random(m) < (0.3 if top else 0.0)
        rad = r * np.sqrt(rng.random(int(cap.sum())))
        p[cap] = np.stack([rad * np.cos(a[cap]), rad * np.sin(a[cap]), np.full(int(cap.sum()), r)], 1)
    elif shape == "cone":
        a, h = rng.uniform(0, 2 * np.pi, m), 1 - np.sqrt(rng.random(m))  # uniform on the slanted surface
        p = np.stack([r * (1 - h) * np.cos(a), r * (1 - h) * np.sin(a), -r + 2 * r * h], 1)
    else:
        raise ValueError(shape)
    return p[rng.permutation(len(p))[:n]] + np.array([0.0, 0.0, r])


def best_shapes(points: np.ndarray) -> set[str]:
    ll = shape_log_likelihood(shape_cues(points))
    assert ll is not None
    return {s for s, v in zip(SHAPES, ll, strict=True) if v == ll.max()}


@pytest.mark.parametrize("shape, expected", [
    ("cube", {"cube", "box"}), ("box", {"cube", "box"}), ("cylinder", {"cylinder"}), ("sphere", {"sphere"}),
    ("cone", {"cone"}),
])
@pytest.mark.parametrize("size", [0.12, 0.3])
def test_points_of_each_shape_are_most_likely_that_shape(shape, expected, size):
    assert best_shapes(surface(shape, size=size, seed=int(size * 100))) == expected


def test_cues_measure_round_and_square_footprints():
    box, cylinder = shape_cues(surface("cube")), shape_cues(surface("cylinder"))
    assert box.fill > 0.97 and abs(cylinder.fill - np.pi / 4) < 0.03
    ball, cone = shape_cues(surface("sphere")), shape_cues(surface("cone"))
    assert 0.5 < ball.top_taper < 0.8 and cone.top_taper < 0.1 and box.top_taper > 0.95


def test_a_cylinder_seen_from_the_side_only_is_still_round():
    assert best_shapes(surface("cylinder", top=False)) == {"cylinder"}


def test_too_few_points_or_one_side_say_nothing():
    few = surface("sphere", n=MIN_POINTS - 1)
    assert shape_log_likelihood(shape_cues(few)) is None
    one_side = surface("cylinder", top=False)
    one_side = one_side[one_side[:, 0] > 0.05]  # the part of the wall facing one camera
    cues = shape_cues(one_side)
    assert len(one_side) >= MIN_POINTS and not cues.usable and shape_log_likelihood(cues) is None
    assert shape_cues(np.zeros((2, 3))) is None


def test_object_map_and_saved_state_carry_the_cues(tmp_path):
    omap = ObjectMap(MappingConfig(voxel_size_m=0.01))
    points = surface("sphere", size=0.25) + np.array([1.0, 2.0, 0.0])
    omap.update(7, points.astype(np.float32), np.full((len(points), 3), 200, np.uint8), views=3, stamp_ns=1, window=0)
    record = instance_record(omap.instance(7))
    assert measured(record.shape_cues) is not None and measured(record.shape_cues).usable
    assert best_shapes(omap.points(7)[0]) == {"sphere"}
    save_query_state(tmp_path / "state", [record])
    loaded = load_query_state(tmp_path / "state").instances[0]
    assert loaded.shape_cues == measured(record.shape_cues)


def test_the_map_measures_the_cues_only_when_a_reader_asks():
    omap = ObjectMap(MappingConfig(voxel_size_m=0.01))
    ball = surface("sphere", size=0.25) + np.array([1.0, 2.0, 0.0])
    omap.update(7, ball.astype(np.float32), np.full((len(ball), 3), 200, np.uint8), views=3, stamp_ns=1, window=0)
    pending = instance_record(omap.instances()[0]).shape_cues  # what the outputs build every window
    assert isinstance(pending, PendingCues) and not pending.is_measured
    assert measured(omap.instance(7).shape_cues) == shape_cues(omap.points(7)[0])  # the same points, read now
    assert pending.is_measured  # one measurement, shared by every copy of this version of the points



def test_likelihood_is_worked_out_once_per_measurement_and_anew_when_the_points_change():
    omap = ObjectMap(MappingConfig(voxel_size_m=0.01))
    ball = surface("sphere", size=0.25) + np.array([1.0, 2.0, 0.0])
    omap.update(7, ball.astype(np.float32), np.full((len(ball), 3), 200, np.uint8), views=3, stamp_ns=1, window=0)
    first = measured(omap.instance(7).shape_cues)
    ll = cached_log_likelihood(first)
    assert ll is cached_log_likelihood(measured(omap.instance(7).shape_cues))  # read again: not recomputed
    assert SHAPES[int(np.argmax(ll))] == "sphere"
    can = surface("cylinder", size=0.25, seed=1) + np.array([1.0, 2.0, 0.0])  # the ball inside a can
    omap.update(7, can.astype(np.float32), np.full((len(can), 3), 200, np.uint8), views=3, stamp_ns=2, window=1)
    changed = measured(omap.instance(7).shape_cues)
    assert changed is not first and cached_log_likelihood(changed) is not ll
    assert SHAPES[int(np.argmax(cached_log_likelihood(changed)))] == "cylinder"


WORDS = ["red", "blue", *SHAPES]


class WordAxisEncoder(TextEncoder):
    """A real, tiny text encoder: one axis per colour or shape word, one more for any other text."""

    name = "word_axes"
    dim = len(WORDS) + 1
    space = "words"

    def encode(self, texts):
        rows = []
        for t in texts:
            v = np.array([float(w in t.lower().split()) for w in WORDS] + [0.0], np.float32)
            v[-1] = 0.0 if v.any() else 1.0
            rows.append(v)
        return normalize_rows(np.stack(rows))


def instance(iid: int, shape_seen: str, points: np.ndarray, x: float, also: str = "") -> InstanceRecord:
    """A red instance whose embedding says `shape_seen` (and nearly as much `also`), at x, with the cues of
    `points`."""
    e = np.zeros(len(WORDS) + 1, np.float32)
    e[WORDS.index("red")] = e[WORDS.index(shape_seen)] = 1.0
    if also:
        e[WORDS.index(also)] = 0.9
    size = np.ptp(points, axis=0)
    return InstanceRecord(id=iid, centroid=np.array([x, 0.0, size[2] / 2]), box_center=np.array([x, 0.0, size[2] / 2]),
                          box_size=size, embedding=e / np.linalg.norm(e), shape_cues=shape_cues(points))


def test_points_override_an_embedding_that_took_a_ball_for_a_cube():
    # instance 1: a large ball the embedding leans to call a cube (the embedding's error: a shape it is
    # unsure of); instance 2: a small ball it calls a sphere; instance 3: a large cube, rightly embedded
    scene = [instance(1, "cube", surface("sphere", size=0.4, seed=1), 2.0, also="sphere"),
             instance(2, "sphere", surface("sphere", size=0.15, seed=2), 3.0),
             instance(3, "cube", surface("cube", size=0.35, seed=3), 4.0)]
    result = answer_query("the largest red sphere", scene, WordAxisEncoder(), viewer=np.eye(4))
    assert result.success and result.ranked[0].instance.id == 1, [(r.instance.id, r.score) for r in result.ranked]
    result = answer_query("the largest red cube", scene, WordAxisEncoder(), viewer=np.eye(4))
    assert result.ranked[0].instance.id == 3
    # without what the points say, the embedding's word decides
    blind = [InstanceRecord(**{**vars(i), "shape_cues": None}) for i in scene]
    result = answer_query("the largest red sphere", blind, WordAxisEncoder(), viewer=np.eye(4))
    assert result.ranked[0].instance.id == 2


def test_only_queries_that_name_a_shape_measure_the_outlines():
    omap = ObjectMap(MappingConfig(voxel_size_m=0.01))
    for iid, (shape, x) in enumerate((("sphere", 2.0), ("cube", 3.0)), start=1):
        pts = surface(shape, size=0.3, seed=iid) + np.array([x, 0.0, 0.0])
        omap.update(iid, pts.astype(np.float32), np.full((len(pts), 3), 200, np.uint8), views=3, stamp_ns=1,
                    window=0)
    scene = [InstanceRecord(**{**vars(instance_record(i)), "embedding": e})
             for i, e in zip(omap.instances(), normalize_rows(np.eye(2, len(WORDS) + 1, dtype=np.float32)),
                             strict=True)]
    answer_query("the red one left of the blue one", scene, WordAxisEncoder(), viewer=np.eye(4))
    assert not any(r.shape_cues.is_measured for r in scene)
    answer_query("the largest red sphere", scene, WordAxisEncoder(), viewer=np.eye(4))
    assert all(r.shape_cues.is_measured for r in scene)


def test_too_few_points_leave_the_embedding_to_decide():
    few = surface("sphere", size=0.4, seed=1, n=MIN_POINTS - 5)
    scene = [instance(1, "cube", few, 2.0, also="sphere"),
             instance(2, "sphere", surface("sphere", size=0.15, seed=2), 3.0)]
    assert scene[0].shape_cues is not None and not scene[0].shape_cues.usable
    result = answer_query("the largest red sphere", scene, WordAxisEncoder(), viewer=np.eye(4))
    assert result.ranked[0].instance.id == 2
