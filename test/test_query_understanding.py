"""Reading typed queries: words onto the attribute vocabulary, relations, superlatives, what is reported.

These use the reader's rules only (no word-similarity encoder), so every case is decided by the
vocabulary, the thesaurus, plural and suffix forms, colour names and the edit distance.
"""

from __future__ import annotations

import random

import pytest

from iggt_ros.vlm.phrasings import load_phrasings, misspell, plural
from iggt_ros.vlm.understanding import QueryReader, edit_distance, singular


@pytest.fixture(scope="module")
def reader():
    return QueryReader(None)


def attrs(reader, text):
    d = reader.read(text).target
    return d.color, d.shape, d.size


@pytest.mark.parametrize("text, expected", [
    ("the small red cube", ("red", "cube", "small")),
    ("could you find the crimson blocks?", ("red", "cube", None)),          # training synonym, plural
    ("the box which is large and blue", ("blue", "box", "large")),          # relative clause
    ("blue large box", ("blue", "box", "large")),                           # word order
    ("where are the pinky spheres", ("pink", "sphere", None)),              # colour suffix
    ("grab the greeen cilinder", ("green", "cylinder", None)),              # misspellings
    ("the one that is wee and pink", ("pink", None, "small")),              # thesaurus
    ("a sky blue crate please", ("blue", "box", None)),                     # colour compound: last word
    ("hand me the midnight blue can", ("blue", "cylinder", None)),
    ("can you find the orange cone", ("orange", "cone", None)),             # 'can you' is no cylinder
    ("the light grey ball", ("gray", "sphere", None)),
])
def test_words_map_onto_the_vocabulary(reader, text, expected):
    assert attrs(reader, text) == expected


def test_unknown_words_are_reported_not_guessed(reader):
    parsed = reader.read("the red zorblax")
    assert (parsed.target.color, parsed.target.shape) == ("red", None)
    assert parsed.target.unknown == ("zorblax",)
    assert "not understood: zorblax" in parsed.summary()
    assert not reader.read("zorblax").understood  # then the text is embedded as typed


@pytest.mark.parametrize("text, relation, target, refs", [
    ("the cube left of the red ball", "left_of", ("cube",), [("red", "sphere")]),
    ("the green cone to the right of the box", "right_of", ("green", "cone"), [(None, "box")]),
    ("the ball in front of the blue cylinder", "in_front_of", ("sphere",), [("blue", "cylinder")]),
    ("the crate behind the yellow cube", "behind", ("box",), [("yellow", "cube")]),
    ("the sphere next to the box", "next_to", ("sphere",), [(None, "box")]),
    ("the cylinder between the red cube and the blue ball", "between", ("cylinder",),
     [("red", "cube"), ("blue", "sphere")]),
    ("the cube on top of the box", "on_top_of", ("cube",), [(None, "box")]),
    ("the cone closest to the white box", "nearest_to", ("cone",), [("white", "box")]),
    ("the cube farthest from the pink ball", "farthest_from", ("cube",), [("pink", "sphere")]),
])
def test_relations(reader, text, relation, target, refs):
    p = reader.read(text)
    assert p.relation == relation
    assert tuple(v for v in (p.target.color, p.target.shape) if v) == target
    assert [(r.color, r.shape) for r in p.references] == refs


def test_between_two_of_a_kind(reader):
    p = reader.read("the cylinder between the two boxes")
    assert p.relation == "between" and len(p.references) == 1
    assert p.references[0].shape == "box" and p.references[0].count == 2


@pytest.mark.parametrize("text, superlative, shape", [
    ("the biggest box", "largest", "box"), ("the smallest cube", "smallest", "cube"),
    ("the tallest cylinder", "tallest", "cylinder"), ("the leftmost ball", "leftmost", "sphere"),
    ("the cone on the right", "rightmost", "cone"), ("the closest box", "nearest", "box"),
    ("the ball nearest to the robot", "nearest", "sphere"), ("the cube farthest from me", "farthest", "cube"),
])
def test_superlatives(reader, text, superlative, shape):
    p = reader.read(text)
    assert p.superlative == superlative and p.relation is None and p.target.shape == shape


def test_summary_says_how_words_were_read(reader):
    s = reader.read("the crimson cubes left of the blue ball").summary()
    assert "target: the red cube" in s and "crimson->red" in s and "cubes->cube" in s
    assert "relation: left_of the blue sphere" in s


def test_edit_distance_and_plurals():
    assert edit_distance("cube", "cbue") == 1 and edit_distance("cylinder", "cilinder") == 1
    assert edit_distance("red", "green") == 3  # capped at the limit
    assert [singular(w) for w in ("cubes", "boxes", "dice", "spheres", "glass")] == ["cube", "box", "die", "sphere",
                                                                                      "glass"]
    assert [plural(w) for w in ("box", "cube", "die", "round ball")] == ["boxes", "cubes", "dice", "round balls"]


def test_phrasing_sets_are_disjoint_and_make_queries():
    dev, held = load_phrasings("dev"), load_phrasings("held_out")
    for table in ("colors", "shapes", "sizes"):
        a, b = getattr(dev, table), getattr(held, table)
        for value in a:
            assert not set(a[value]) & set(b[value]), (table, value)
    assert not set(dev.templates) & set(held.templates)
    rng = random.Random(0)
    caption = held.make("red", None, "small", rng)
    assert caption.key == ("red", None, "small") and caption.text
    with pytest.raises(ValueError, match="unknown phrasing set"):
        load_phrasings("train")
    word = misspell("cylinder", random.Random(3))
    assert word != "cylinder" and edit_distance(word, "cylinder") == 1


@pytest.mark.parametrize("text, color", [
    ("the teal blue box", "cyan"),            # the vocabulary knows the first word: it names the colour
    ("the turquoise green ball", "cyan"),
    ("the navy blue box", "blue"),            # a colour name of appearance only shades the last word
    ("the midnight blakc cube", "black"),     # also when the last word is misspelt
    ("the mifnight black cube", "black"),     # or the first
    ("the pea grern cone", "green"),
])
def test_two_colour_words_name_one_colour(reader, text, color):
    assert reader.read(text).target.color == color


@pytest.mark.parametrize("text, expected", [
    ("the blackened cube", ("black", "cube", None)),     # '-ened' colour adjective
    ("the rred ccan", ("red", "cylinder", None)),         # doubled letters
    ("the cuebs that are mocha", ("brown", "cube", None)),  # slip in the singular form
])
def test_word_forms_and_slips_in_plain_forms(reader, text, expected):
    assert attrs(reader, text) == expected


def test_a_colour_name_between_palette_colours_keeps_both():
    """'saffron' is nearly as close to yellow as to orange: both stay candidates and the ranking takes
    the best; a vocabulary word or a plain colour never has alternatives."""
    reader = QueryReader(None)
    saffron = reader.read("the saffron ball").target
    assert set(saffron.colors) == {"orange", "yellow"} and saffron.canonicals() == [
        f"the {c} sphere" for c in saffron.colors]
    assert saffron.matches("yellow", "sphere", "small") and not saffron.matches("blue", "sphere", "small")
    assert reader.read("the red ball").target.colors == ("red",)
    assert reader.read("the crimson ball").target.other_colors == ()
    assert "(or " in reader.read("the saffron ball").summary()
