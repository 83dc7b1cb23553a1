"""Text descriptions of objects from their attributes (colour, shape, size), with phrasings.

The embedded model is trained on these captions and the query benchmark asks with them. Some
synonyms and sentence templates are held out of training (`held_out=True`), so the benchmark can
measure how queries phrased in ways the model never saw are answered.

A caption may name only some attributes ("the red one", "the small cube"); `Caption.matches`
tells which objects it fits, which training uses for multi-positive contrastive targets and the
benchmark uses to decide whether a query names a unique object.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

COLOR_WORDS: dict[str, list[str]] = {
    "red": ["red", "crimson", "cherry red", "ruby", "scarlet"],
    "green": ["green", "emerald", "leaf-green", "forest green", "grass-green"],
    "blue": ["blue", "cobalt", "sapphire", "deep blue", "royal blue"],
    "yellow": ["yellow", "lemon", "canary yellow", "sunflower yellow", "golden"],
    "orange": ["orange", "tangerine", "pumpkin", "carrot-colored", "amber"],
    "purple": ["purple", "violet", "grape-colored", "amethyst", "plum"],
    "white": ["white", "snow-white", "milky white", "cream", "ivory"],
    "black": ["black", "jet-black", "coal-black", "pitch-black", "ebony"],
    "cyan": ["cyan", "turquoise", "teal", "sea-blue", "aqua"],
    "pink": ["pink", "rose", "rosy", "blush pink", "bubblegum pink"],
    "brown": ["brown", "chocolate", "coffee-colored", "dark brown", "chestnut"],
    "gray": ["gray", "grey", "ash-gray", "slate", "silver"],
}
SHAPE_WORDS: dict[str, list[str]] = {
    "cube": ["cube", "block", "cubic block", "square block", "cube-shaped object", "dice-shaped block"],
    "box": ["box", "crate", "cuboid", "carton", "rectangular block", "rectangular box"],
    "sphere": ["sphere", "ball", "orb", "round ball", "spherical object", "globe"],
    "cylinder": ["cylinder", "can", "tube", "barrel", "canister", "drum"],
    "cone": ["cone", "conical object", "traffic cone", "pylon", "cone-shaped object", "pointed cone"],
}
SIZE_WORDS: dict[str, list[str]] = {
    "small": ["small", "little", "mini", "smaller", "tiny"],
    "medium": ["medium", "medium-sized", "average-sized", "middle-sized", "mid-sized"],
    "large": ["large", "big", "enormous", "giant", "huge"],
}

HELD_OUT_WORDS: frozenset[str] = frozenset({
    "scarlet", "grass-green", "royal blue", "golden", "amber", "plum", "ivory", "ebony", "aqua",
    "bubblegum pink", "chestnut", "silver", "dice-shaped block", "rectangular box", "globe", "drum",
    "pointed cone", "tiny", "mid-sized", "huge",
})
"""Synonyms never used in training (the last word of each list); only held-out benchmark queries use them."""

TEMPLATES: list[str] = [
    "the {p}", "a {p}", "{p}", "the {p} object", "find the {p}", "where is the {p}", "pick up the {p}",
    "show me the {p}", "that {p}", "the {p} over there", "go to the {p}", "grab a {p}", "locate the {p}",
    "I need the {p}", "can you find the {p}", "move to the {p}", "the {p} in the room", "look at the {p}",
    "there is a {p}", "point at the {p}", "take the {p}", "which one is the {p}", "highlight the {p}",
]
HELD_OUT_TEMPLATES: list[str] = ["could you locate the {p}", "I am looking for a {p}", "bring me the {p}"]

# Phrases that name no shape use one of these nouns.
GENERIC_NOUNS = ["one", "object", "thing", "item"]


@dataclass(frozen=True)
class Caption:
    """A text and the attributes it constrains (None = not mentioned)."""

    text: str
    color: str | None = None
    shape: str | None = None
    size: str | None = None

    def matches(self, color: str, shape: str, size: str) -> bool:
        return ((self.color is None or self.color == color) and (self.shape is None or self.shape == shape)
                and (self.size is None or self.size == size))

    @property
    def key(self) -> tuple[str | None, str | None, str | None]:
        return (self.color, self.shape, self.size)


def _words(table: dict[str, list[str]], value: str, held_out: bool) -> list[str]:
    words = table[value]
    return [w for w in words if w in HELD_OUT_WORDS] if held_out else [w for w in words if w not in HELD_OUT_WORDS]


def phrase(color_word: str | None, shape_word: str | None, size_word: str | None, generic: str = "object") -> str:
    """'small red cube', 'red one', ... in the usual English adjective order (size, colour, noun)."""
    parts = [w for w in (size_word, color_word) if w]
    parts.append(shape_word or generic)
    return " ".join(parts)


def make_caption(color: str | None, shape: str | None, size: str | None, rng: random.Random,
                 held_out: bool = False, template: str | None = None) -> Caption:
    """One random phrasing naming exactly the given attributes.

    held_out=True draws synonyms and templates only from the held-out sets, except for an attribute
    that has no held-out synonym, which keeps its training words (so every attribute can be asked).
    """
    def pick(table: dict[str, list[str]], value: str | None) -> str | None:
        if value is None:
            return None
        pool = _words(table, value, held_out) or _words(table, value, False)
        return rng.choice(pool)

    templates = HELD_OUT_TEMPLATES if held_out else TEMPLATES
    t = template or rng.choice(templates)
    text = t.format(p=phrase(pick(COLOR_WORDS, color), pick(SHAPE_WORDS, shape), pick(SIZE_WORDS, size),
                             rng.choice(GENERIC_NOUNS)))
    return Caption(text=text, color=color, shape=shape, size=size)


def canonical_caption(color: str | None, shape: str | None, size: str | None) -> Caption:
    """The plainest phrasing: 'the small red cube', 'the red object'."""
    return Caption(text="the " + phrase(color, shape, size), color=color, shape=shape, size=size)


ATTRIBUTE_PATTERNS: list[tuple[bool, bool, bool]] = [
    (True, True, True), (True, True, False), (False, True, True), (True, False, True),
    (True, False, False), (False, True, False),
]
"""Which of (colour, shape, size) a caption names; every pattern names colour or shape."""


def constraint_keys(colors, shapes, sizes) -> list[tuple[str | None, str | None, str | None]]:
    """Every (colour, shape, size) constraint, with None for unnamed attributes, over the patterns."""
    keys = []
    for use_c, use_s, use_z in ATTRIBUTE_PATTERNS:
        for c, s, z in itertools.product(colors if use_c else [None], shapes if use_s else [None],
                                         sizes if use_z else [None]):
            keys.append((c, s, z))
    return keys


def caption_bank(colors, shapes, sizes, per_key: int, seed: int = 0) -> list[Caption]:
    """`per_key` distinct training phrasings (or as many as exist) for every constraint key."""
    rng = random.Random(seed)
    bank: list[Caption] = []
    for key in constraint_keys(colors, shapes, sizes):
        seen: set[str] = set()
        for _ in range(per_key * 4):
            cap = make_caption(*key, rng=rng)
            if cap.text not in seen:
                seen.add(cap.text)
                bank.append(cap)
            if len(seen) >= per_key:
                break
    return bank
