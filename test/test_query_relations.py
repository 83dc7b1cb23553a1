"""Relations, superlatives and answers in the requester's frame, on hand-placed boxes.

The text encoder is a real, tiny one (one axis per colour or shape word), so every ranking below
follows from the geometry and the rules, which the expected answers were worked out from by hand.
"""

from __future__ import annotations

import numpy as np
import pytest

from iggt_ros.messages.tf_buffer import TransformBuffer
from iggt_ros.perception.records import InstanceRecord
from iggt_ros.spatial import transform_from, yaw_quaternion
from iggt_ros.vlm.answer_frame import box_corners, transform_records
from iggt_ros.vlm.encoders import TextEncoder, normalize_rows
from iggt_ros.vlm.query import answer_query

WORDS = ["red", "green", "blue", "cube", "sphere", "box"]


class WordAxisEncoder(TextEncoder):
    name = "word_axes"
    dim = len(WORDS)
    space = "words"

    def encode(self, texts):
        rows = []
        for t in texts:
            v = np.array([float(w in t.lower().split()) for w in WORDS], np.float32)
            rows.append(v if v.any() else np.full(len(WORDS), 0.1, np.float32))
        return normalize_rows(np.stack(rows))


def obj(iid: int, color: str, shape: str, x: float, y: float, size: float = 0.3) -> InstanceRecord:
    e = np.zeros(len(WORDS), np.float32)
    e[WORDS.index(color)] = 1.0
    e[WORDS.index(shape)] = 1.0
    return InstanceRecord(id=iid, centroid=np.array([x, y, size / 2]), box_center=np.array([x, y, size / 2]),
                          box_size=np.array([size, size, size]), embedding=e / np.linalg.norm(e))


@pytest.fixture
def scene():
    # Seen from the origin looking along +x (y to the left):
    #   red sphere (1) ahead at 3 m; cube 2 (green) to its left, cube 3 (blue) to its right,
    #   cube 4 (red) far behind it, blue box 5 and blue box 6 on either side of green sphere 7.
    return [
        obj(1, "red", "sphere", 3.0, 0.0), obj(2, "green", "cube", 3.0, 1.0), obj(3, "blue", "cube", 3.0, -1.0),
        obj(4, "red", "cube", 6.0, 0.2, size=0.6), obj(5, "blue", "box", 1.5, 2.0), obj(6, "blue", "box", 1.5, 4.0),
        obj(7, "green", "sphere", 1.5, 3.0),
    ]


def top(text, scene, viewer=None):
    result = answer_query(text, scene, WordAxisEncoder(), viewer=viewer if viewer is not None else np.eye(4))
    assert result.success, result.message
    return result.ranked[0].instance.id, result


@pytest.mark.parametrize("text, expected", [
    ("the cube left of the red sphere", 2),
    ("the cube to the right of the red ball", 3),
    ("the cube behind the red sphere", 4),
    ("the cube in front of the red cube", 2),          # nearer to the robot than cube 4, and the nearest such
    ("the sphere between the two boxes", 7),
    ("the cube next to the green sphere", 2),
    ("the cube farthest from the green sphere", 4),
    ("the largest cube", 4),
    ("the leftmost cube", 2),
    ("the rightmost cube", 3),
    ("the closest sphere", 1),         # 3 m away; the green sphere is 3.35 m
    ("the farthest sphere", 7),
])
def test_relations_and_superlatives(scene, text, expected):
    got, result = top(text, scene)
    assert got == expected, (result.understood, [(r.instance.id, round(r.score, 3)) for r in result.ranked])
    scores = [r.score for r in result.ranked]
    assert scores == sorted(scores, reverse=True) and all(0.0 <= s <= 1.0 for s in scores)


def test_understood_names_the_reference(scene):
    _, result = top("the cube left of the red sphere", scene)
    assert "relation: left_of the red sphere" in result.understood and "reference IDs 1" in result.understood


def test_directions_follow_the_robot(scene):
    # Turned around (looking along -x from x = 8): left and right swap, the red cube is now in front.
    viewer = transform_from([8.0, 0.0, 0.0], yaw_quaternion(np.pi))
    assert top("the cube left of the red sphere", scene, viewer)[0] == 3
    assert top("the cube in front of the red sphere", scene, viewer)[0] == 4
    _, result = top("the cube left of the red sphere", scene, None)
    assert "robot pose unknown" not in result.understood
    result = answer_query("the cube left of the red sphere", scene, WordAxisEncoder())
    assert "robot pose unknown" in result.understood


def test_transform_records_moves_boxes_rigidly(scene):
    t = transform_from([0.5, -2.0, 0.1], yaw_quaternion(0.7))
    moved = transform_records(scene, t)
    for a, b in zip(scene, moved, strict=True):
        corners = box_corners(a) @ t[:3, :3].T + t[:3, 3]
        assert np.allclose(np.sort(corners, axis=0), np.sort(box_corners(b), axis=0), atol=1e-9)
        assert np.allclose(b.centroid, t[:3, :3] @ a.centroid + t[:3, 3])
        assert b.id == a.id and np.allclose(b.box_size, a.box_size)
    with pytest.raises(ValueError, match="4x4"):
        transform_records(scene, np.eye(3))


def test_answers_in_base_link_through_tf(scene):
    """The node's path: TF gives base_link <- map at the map's stamp; boxes come back in base_link."""
    from iggt_ros.ros.query_side import tf_lookup

    buffer = TransformBuffer()
    stamp = 5_000_000_000
    odom_from_base = transform_from([2.0, 1.0, 0.0], yaw_quaternion(0.5))
    buffer.set_transform("odom", "base_link", stamp, odom_from_base)
    lookup = tf_lookup(buffer)
    base_from_odom = lookup("base_link", "odom", stamp)
    assert np.allclose(base_from_odom @ odom_from_base, np.eye(4))
    red = scene[0]
    answered = transform_records([red], base_from_odom)[0]
    true_center = np.linalg.inv(odom_from_base) @ np.append(red.box_center, 1.0)
    assert np.linalg.norm(answered.box_center - true_center[:3]) < 1e-9


def test_on_top_of_picks_the_object_resting_on_the_reference():
    box = obj(1, "blue", "box", 2.0, 0.0, size=0.4)
    on_box = obj(2, "red", "cube", 2.0, 0.05, size=0.2)
    on_box.box_center = np.array([2.0, 0.05, 0.4 + 0.1])  # bottom at the box's top
    beside = obj(3, "green", "cube", 2.0, 1.0, size=0.2)
    result = answer_query("the cube on top of the blue box", [box, on_box, beside], WordAxisEncoder(),
                          viewer=np.eye(4))
    assert [r.instance.id for r in result.ranked][:2] == [2, 3]
    assert result.ranked[0].score > 10 * result.ranked[1].score


def test_a_reference_nothing_explains_is_said_and_not_guessed(scene):
    got, result = top("the green cube left of the zorblax", scene)
    assert got == 2  # the green cube, by its description alone
    assert "reference of 'left_of' ('zorblax') names no known object" in result.understood


SHAPE_WORDS = ["red", "cube", "box", "sphere", "cylinder", "cone"]


class ShapeAxes(WordAxisEncoder):
    """One axis per colour or shape word, with every shape word the reader can name."""

    dim = len(SHAPE_WORDS)

    def encode(self, texts):
        rows = [np.array([float(w in t.lower().split()) for w in SHAPE_WORDS], np.float32) for t in texts]
        return normalize_rows(np.stack([r if r.any() else np.full(len(SHAPE_WORDS), 0.1, np.float32) for r in rows]))


def leaning(iid: int, cube: float, box: float, extent, y: float | None = None) -> InstanceRecord:
    """A red object 3 m ahead whose embedding leans `cube` : `box`, with a map box of `extent`."""
    e = np.array([1.0, cube, box, 0.0, 0.0, 0.0], np.float32)
    size = np.asarray(extent, float)
    center = np.array([3.0, iid - 2.0 if y is None else y, size[2] / 2])
    return InstanceRecord(id=iid, centroid=center, box_center=center, box_size=size, embedding=e / np.linalg.norm(e))


def test_a_likely_member_outdone_only_by_unlikely_ones_wins():
    """'The largest box': the largest object is surely not a box, the next is probably one (the
    embedding leans box, its map box is a box's), the smallest surely is. The likely box wins;
    a surer but smaller box is second, and the sure non-box, largest as it is, last."""
    instances = [leaning(1, 0.0, 1.0, [0.3, 0.15, 0.2]), leaning(2, 0.9, 1.0, [0.8, 0.4, 0.5]),
                 leaning(3, 1.0, 0.0, [0.9, 0.9, 0.9])]
    result = answer_query("the largest box", instances, ShapeAxes(), viewer=np.eye(4))
    assert [r.instance.id for r in result.ranked] == [2, 1, 3], result.understood


def test_proportions_tell_a_cube_from_a_box():
    """An embedding torn between cube and box (equal cosines): the map box's proportions decide which
    word fits, so the same embedding is 'the cube' with equal sides and 'the box' when elongated."""
    even = leaning(1, 1.0, 1.0, [0.4, 0.4, 0.4], y=0.0)
    long = leaning(2, 1.0, 1.0, [0.8, 0.3, 0.4], y=1.0)
    other = leaning(3, 0.0, 0.0, [0.4, 0.4, 0.4], y=-1.0)  # red, neither cube nor box
    # the cube (or box) left of the plain red object: both candidates are left of it
    cube = answer_query("the cube left of the red sphere", [even, long, other], ShapeAxes(), viewer=np.eye(4))
    box = answer_query("the box left of the red sphere", [even, long, other], ShapeAxes(), viewer=np.eye(4))
    assert cube.ranked[0].instance.id == 1 and box.ranked[0].instance.id == 2
    assert cube.ranked[0].score > 3 * cube.ranked[1].score


def test_cube_odds_follow_the_proportions():
    from iggt_ros.vlm.relations import EQUAL_SIDES_MAX_LOG_ODDS, cube_log_odds

    odds = cube_log_odds(np.array([[0.4, 0.4, 0.4], [0.4, 0.38, 0.41], [0.8, 0.3, 0.4], [0.0, 0.0, 0.0]]))
    assert odds[0] == EQUAL_SIDES_MAX_LOG_ODDS and odds[1] == EQUAL_SIDES_MAX_LOG_ODDS
    assert odds[2] == -EQUAL_SIDES_MAX_LOG_ODDS
    assert odds[3] == 0.0  # no extent, no evidence


def test_a_box_not_seen_down_to_the_floor_may_be_as_tall_as_its_top():
    """A cube whose lower half is hidden has a flat map box, which alone says 'box'. Its bottom 0.2 m
    above the floor says the hidden part may reach down to it: the height is taken, between the seen
    0.2 m and the top's 0.4 m, as near the 0.4 m footprint as it can be, and the box reads as a cube.
    The same flat box standing on the floor is a flat box."""
    from iggt_ros.vlm.relations import EQUAL_SIDES_MAX_LOG_ODDS, cube_log_odds

    flat = np.array([[0.4, 0.4, 0.2], [0.4, 0.4, 0.2], [0.4, 0.4, 0.2]])
    odds = cube_log_odds(flat, bottoms=np.array([0.2, 0.0, 0.05]))
    assert odds[0] == EQUAL_SIDES_MAX_LOG_ODDS and odds[1] == -EQUAL_SIDES_MAX_LOG_ODDS
    assert odds[2] == pytest.approx((0.25 / 0.4 - 0.75) / 0.05)  # top at 0.25 m: as tall as that, no more
    assert (cube_log_odds(flat) == -EQUAL_SIDES_MAX_LOG_ODDS).all()


def test_a_box_resting_on_another_box_was_seen_down_to_where_it_stands():
    """A flat box on a table is not lifted off the floor with its lower part hidden: its bottom touches the
    table's top over the table's footprint, so it keeps its flat height and reads as a box. The same flat
    box at the same height beside the table (nothing under it) may reach down to the floor."""
    from iggt_ros.vlm.relations import EQUAL_SIDES_MAX_LOG_ODDS, cube_log_odds, heights_above_support

    table = ([1.0, 0.0, 0.36], [1.2, 0.8, 0.72])
    on_table = ([1.2, 0.1, 0.745], [0.3, 0.3, 0.05])  # bottom at 0.72 m, the table's top
    beside = ([3.0, 0.1, 0.745], [0.3, 0.3, 0.05])  # the same box and height, nothing under it
    on_floor = ([1.0, 2.0, 0.025], [0.3, 0.3, 0.05])
    centers, sizes = (np.array([b[k] for b in (table, on_table, beside, on_floor)]) for k in (0, 1))
    heights = heights_above_support(centers, sizes)
    assert heights[1] == 0.0 and heights[2] == pytest.approx(0.72) and heights[3] == pytest.approx(0.0)
    assert heights[0] == pytest.approx(0.0)  # the table stands on the floor
    odds = cube_log_odds(sizes, bottoms=heights)
    assert odds[1] == -EQUAL_SIDES_MAX_LOG_ODDS and odds[3] == -EQUAL_SIDES_MAX_LOG_ODDS  # flat boxes
    assert odds[2] == EQUAL_SIDES_MAX_LOG_ODDS  # may be a cube whose lower part is hidden


def test_supports_among_many_boxes_are_every_box_over_whose_top_another_rests():
    """A map near mapping.max_instances: the supports are found through a tree of footprint centres, and they
    must be exactly the pairs the rule names (centre over the support's footprint, bottom at its top)."""
    from iggt_ros.vlm.relations import FLOOR_CONTACT_M, heights_above_support

    rng = np.random.default_rng(3)
    sizes = rng.uniform(0.1, 1.0, (600, 3))
    centers = rng.uniform(-4.0, 4.0, (600, 3))
    centers[:, 2] = sizes[:, 2] / 2
    for i in range(0, 598, 3):  # every third box carries the next one
        centers[i + 1, :2] = centers[i, :2] + rng.uniform(-0.05, 0.05, 2)
        centers[i + 1, 2] = sizes[i, 2] + sizes[i + 1, 2] / 2
    bottom, top = centers[:, 2] - sizes[:, 2] / 2, centers[:, 2] + sizes[:, 2] / 2
    reach = np.linalg.norm(sizes[:, :2], axis=1) / 2
    over = np.linalg.norm(centers[:, None, :2] - centers[None, :, :2], axis=2) <= reach[None, :]
    touching = np.abs(bottom[:, None] - top[None, :]) <= FLOOR_CONTACT_M
    rests = (over & touching & ~np.eye(600, dtype=bool)).any(axis=1)
    assert rests[1::3].all()
    np.testing.assert_array_equal(heights_above_support(centers, sizes), np.where(rests, 0.0, bottom))


def test_a_flat_box_on_a_table_is_not_the_cube():
    """'The cube left of the red sphere' on a tabletop: a flat box on a table whose embedding leans a
    little to cube, and a cube on the floor, both left of the sphere. Resting on the table, the flat box
    was seen down to where it stands, so its flat proportions say box and the cube is the answer; taken
    for an object lifted off the floor with its lower part hidden, it would read as a cube and win."""
    table = leaning(1, 0.0, 0.0, [1.2, 0.8, 0.72], y=0.0)
    flat = leaning(2, 1.0, 0.9, [0.3, 0.3, 0.05], y=0.1)
    flat.box_center = flat.centroid = np.array([3.0, 0.1, 0.745])
    cube = leaning(3, 0.9, 1.0, [0.3, 0.3, 0.3], y=1.0)
    sphere = leaning(4, 0.0, 0.0, [0.4, 0.4, 0.4], y=-1.0)
    result = answer_query("the cube left of the red sphere", [table, flat, cube, sphere], ShapeAxes(),
                          viewer=np.eye(4))
    assert result.ranked[0].instance.id == 3, result.understood


def test_uneven_sides_of_an_object_not_seen_all_round_leave_cube_or_box_to_the_embedding():
    from iggt_ros.vlm.relations import EQUAL_SIDES_MAX_LOG_ODDS, PARTLY_SEEN_MAX_BOX_LOG_ODDS, cube_log_odds

    sizes = np.array([[0.4, 0.1, 0.4], [0.4, 0.1, 0.4], [0.4, 0.4, 0.4]])
    odds = cube_log_odds(sizes, seen_all_round=np.array([True, False, False]))
    assert odds[0] == -EQUAL_SIDES_MAX_LOG_ODDS and odds[1] == -PARTLY_SEEN_MAX_BOX_LOG_ODDS
    assert odds[2] == EQUAL_SIDES_MAX_LOG_ODDS  # even sides still say cube


def test_a_cube_seen_from_one_side_is_left_to_its_embedding():
    """'The cube': a slab of a map box (0.4 x 0.1 x 0.4) whose embedding leans cube, and an object of
    even sides whose embedding leans a little toward box. Measured from one side only, the slab's
    uneven sides say nothing and its embedding makes it the cube; seen all round, they say box, and
    the even object is the cube."""
    from iggt_ros.perception.outline import MIN_POINTS, ShapeCues

    slab = leaning(1, 1.0, 0.9, [0.4, 0.1, 0.4], y=0.0)
    even = leaning(2, 0.8, 1.0, [0.3, 0.3, 0.3], y=1.0)
    other = leaning(3, 0.0, 0.0, [0.4, 0.4, 0.4], y=-1.0)
    for sectors, expected in ((3, 1), (8, 2)):
        slab.shape_cues = ShapeCues(1.0, 1.0, 1.0, sectors=sectors, points=MIN_POINTS * 4)
        result = answer_query("the cube left of the red sphere", [slab, even, other], ShapeAxes(), viewer=np.eye(4))
        assert result.ranked[0].instance.id == expected, (sectors, result.understood)


def test_identical_copies_tie_and_outrank_the_rest():
    """Two equal largest cubes halve each other's chance alike and both stay above a smaller cube."""
    from iggt_ros.vlm.relations import _extreme

    fit = _extreme(np.array([1.0, 1.0, 0.2]), np.ones(3), 0.1)
    assert fit[0] == pytest.approx(fit[1]) and fit[0] == pytest.approx(0.5, abs=1e-3)
    assert fit[2] < 1e-3
    # an unlikely member (weight 0.1) in front takes only a tenth of the next one's chance
    fit = _extreme(np.array([2.0, 1.0]), np.array([0.1, 1.0]), 0.1)
    assert fit[1] == pytest.approx(0.9, abs=1e-3) and fit[0] == pytest.approx(1.0, abs=1e-3)


def test_generated_answers_are_decided_among_every_seen_object():
    """The benchmark's generator: an object the map could not be matched to (not askable) is never a
    target or reference, yet still decides which object is 'the largest box'."""
    import random

    from iggt_ros.vlm.relation_queries import SceneObject, generate

    def box(iid, color, edge, y):
        return SceneObject(iid, color, "box", "large", np.array([3.0, y, edge / 2]), np.array([edge, 0.8 * edge, edge]))

    big, middle, small = box(1, "red", 0.7, 1.0), box(2, "blue", 0.5, 0.0), box(3, "green", 0.3, -1.0)

    def largest(objects, askable=None):
        qs = generate(objects, random.Random(0), per_kind=3, askable=askable)
        return {q.target for q in qs if q.kind == "largest"}

    assert largest([big, middle, small]) == {1}
    assert largest([big, middle, small], askable={2, 3}) == set()  # the largest box is not in the map
    assert largest([middle, small]) == {2}  # what leaving the object out would have asked
    asked = generate([big, middle, small], random.Random(1), per_kind=3, askable={2, 3})
    assert {q.kind for q in asked} >= {"smallest", "right_of", "nearest_to"}
    for q in asked:
        assert q.target in {2, 3} and set(q.references) <= {2, 3}, q


def test_no_shape_word_where_a_box_looks_like_a_cube():
    """A box with sides within a few per cent of each other is a cube to anyone's eye: 'the largest
    box' and 'the smallest cube' have no clear answer while it is around, nor has 'the blue box' as
    a reference; 'the red box' (the other box is blue) and colour descriptions are still asked."""
    import random

    from iggt_ros.vlm.relation_queries import SceneObject, generate

    def obj(iid, color, shape, extent, y):
        e = np.asarray(extent, float)
        return SceneObject(iid, color, shape, "large", np.array([3.0, y, e[2] / 2]), e)

    cube = obj(1, "red", "cube", [0.3, 0.3, 0.3], 1.0)
    long_box = obj(2, "red", "box", [0.7, 0.4, 0.5], 0.0)
    boxy = obj(3, "blue", "box", [0.5, 0.48, 0.46], -1.0)  # sides within 8 %
    clear = [cube, long_box, obj(3, "blue", "box", [0.5, 0.3, 0.4], -1.0)]

    def asked(objects):
        return [q for s in range(4) for q in generate(objects, random.Random(s), per_kind=3)]

    def shape_words_fitting_blue(text):
        words = text.split()
        return [words[k - 1] + " " + w for k, w in enumerate(words) if w in ("box", "cube") and words[k - 1] != "red"]

    assert any(shape_words_fitting_blue(q.text) for q in asked(clear))
    texts = [q.text for q in asked([cube, long_box, boxy])]
    assert any("red box" in t for t in texts)
    assert texts and not any(shape_words_fitting_blue(t) for t in texts), texts
