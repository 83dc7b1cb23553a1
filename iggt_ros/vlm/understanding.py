"""Reading a typed query: which object it describes, and how it relates that object to others.

People and task planners do not use the words the query model was trained on. Before anything is
embedded, a query is read into a `ParsedQuery`: the target's colour, shape and size (mapped onto
the attribute vocabulary), an optional relation to other objects or to the robot ("left of the red
ball", "between the two boxes", "nearest to the robot") and an optional superlative ("largest",
"leftmost"). The ranking then embeds the canonical description ("the small red cube"), which the
model knows well, instead of the raw words, and applies relations with the map's geometry.

Words are resolved in this order, each a general rule rather than a list of expected queries:

1. the attribute vocabulary and its training synonyms (`captions`), longest phrase first;
2. the same after undoing plurals ('cubes', 'boxes') and colour suffixes ('-ish', '-colored', '-y');
3. colour names of the XKCD colour survey (matplotlib), mapped to the nearest palette colour in CIELAB;
3b. a small thesaurus of everyday size, shape and colour words (`THESAURUS`);
4. spelling slips: an edit (insert, drop, change, swap) per 5 letters against the known words;
5. the text encoder's word similarity to the attribute words, above `WORD_SIMILARITY`.

Words that carry no attribute (articles, request verbs, generic nouns) are dropped; words left
unresolved are reported, never guessed.
"""

from __future__ import annotations

import re
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from iggt_ros.synthetic.attributes import COLORS, SHAPES
from iggt_ros.vlm.captions import COLOR_WORDS, HELD_OUT_WORDS, SHAPE_WORDS, SIZE_WORDS

WORD_SIMILARITY = 0.65
"""Least cosine between 'a <word> object' and 'a <attribute word> object' (text encoder's space) to accept."""
WORD_MARGIN = 0.08
"""How much better the best attribute must match an unknown word than the best of another value."""

ATTRIBUTES = ("color", "shape", "size")


_FILLER_TEXT = """
a an the this that these those there here it its it's is are was be been being am do does did i i'm
i'd me my we us our you your please thanks thank hey hi ok okay now just also too very really some
any anything something somewhere anywhere around over out up down in into at of for to from with and
or but not no which what where who whose how why when whether could would should will shall may
might must let let's give bring fetch get got grab take pick hand pass put place move go come find
locate search searching look looking see show point highlight identify tell need want like have has
had see seen spot detect choose select return answer help robot one ones thing things object objects
item items stuff piece pieces there's what's where's that's colored coloured color colour shaped
shape sized size kind sort type looks look appear appears seems about
"""
FILLER = frozenset(_FILLER_TEXT.split())
"""Words that name no attribute; dropped (after relation phrases are taken out)."""

THESAURUS: dict[str, dict[str, list[str]]] = {
    "size": {
        "small": ["small", "little", "tiny", "wee", "minute", "mini", "miniature", "petite", "compact",
                  "smallish", "teeny", "teensy", "diminutive", "itty bitty", "smaller"],
        "medium": ["medium", "mid", "midsize", "middle", "moderate", "moderately", "average", "standard",
                   "regular", "normal", "intermediate", "ordinary"],
        "large": ["large", "big", "huge", "giant", "gigantic", "enormous", "massive", "oversized", "oversize",
                  "jumbo", "sizable", "sizeable", "hefty", "colossal", "immense", "vast", "bigger", "larger",
                  "largish", "great big"],
    },
    "shape": {
        "cube": ["cube", "block", "die", "cubic", "cubical", "brick"],
        "box": ["box", "crate", "carton", "case", "chest", "parcel", "package", "container", "bin", "shoebox",
                "trunk", "rectangular", "cuboid", "boxy"],
        "sphere": ["sphere", "ball", "orb", "globe", "marble", "bead", "bubble", "spheroid", "round",
                   "spherical"],
        "cylinder": ["cylinder", "can", "tube", "barrel", "canister", "drum", "pipe", "tin", "column", "pillar",
                     "roller", "roll", "cylindrical", "jar"],
        "cone": ["cone", "pylon", "conical", "conic", "funnel", "party hat", "witch hat"],
    },
    "color": {
        "red": ["vermilion", "vermillion"], "green": ["verdant"], "white": ["alabaster", "snowy"],
        "black": ["sable", "obsidian", "inky"], "gray": ["graphite", "pewter", "grey", "silvery"],
    },
}
"""Everyday words for the attribute values, beyond the training captions' synonyms (read after them)."""

ROBOT_WORDS = frozenset({"robot", "me", "you", "us", "base", "camera", "myself", "yourself"})
"""A relation's reference that is the robot itself ('nearest to me')."""

MODIFIERS = frozenset({"light", "dark", "bright", "pale", "deep", "dull", "vivid", "pure"})
"""Colour modifiers: 'light blue' is blue; a modifier alone names no colour ('medium' is a size)."""

_SUPERLATIVES: dict[str, str] = {
    "largest": "largest", "biggest": "largest", "smallest": "smallest", "littlest": "smallest",
    "tallest": "tallest", "highest": "tallest", "leftmost": "leftmost", "rightmost": "rightmost",
    "nearest": "nearest", "closest": "nearest", "farthest": "farthest", "furthest": "farthest",
}

# Relation phrases (token sequences), longest first when matched.
_RELATIONS: list[tuple[str, str]] = [
    ("to the left of", "left_of"), ("on the left of", "left_of"), ("on the left side of", "left_of"),
    ("left of", "left_of"), ("to the right of", "right_of"), ("on the right of", "right_of"),
    ("on the right side of", "right_of"), ("right of", "right_of"), ("in front of", "in_front_of"),
    ("behind", "behind"), ("in back of", "behind"), ("at the back of", "behind"), ("next to", "next_to"),
    ("beside", "next_to"), ("besides", "next_to"), ("near", "next_to"), ("close to", "next_to"),
    ("adjacent to", "next_to"), ("by", "next_to"), ("in between", "between"), ("between", "between"),
    ("on top of", "on_top_of"), ("on", "on_top_of"), ("atop", "on_top_of"), ("above", "on_top_of"),
    ("resting on", "on_top_of"), ("sitting on", "on_top_of"), ("nearest to", "nearest_to"),
    ("closest to", "nearest_to"), ("nearest the", "nearest_to"), ("closest the", "nearest_to"),
    ("farthest from", "farthest_from"), ("furthest from", "farthest_from"),
    ("farthest away from", "farthest_from"), ("furthest away from", "farthest_from"),
]
RELATIONS = ("left_of", "right_of", "in_front_of", "behind", "next_to", "between", "on_top_of",
             "nearest_to", "farthest_from")
SUPERLATIVES = ("largest", "smallest", "tallest", "leftmost", "rightmost", "nearest", "farthest")
_SIDE_WORDS = {("on", "the", "left"): "leftmost", ("on", "the", "right"): "rightmost",
               ("left",): "leftmost", ("right",): "rightmost"}
"""'the cube on the left' and 'the left cube': the leftmost, when no 'of' follows."""


@dataclass(frozen=True)
class Description:
    """What one mention says about an object: attribute values (None = not said) and how each was read."""

    color: str | None = None
    shape: str | None = None
    size: str | None = None
    terms: tuple[str, ...] = ()
    """How words were read, e.g. 'scarlet->red', 'cubes->cube', 'biue->blue'."""
    unknown: tuple[str, ...] = ()
    """Words kept that matched nothing."""
    count: int = 1
    """2 for 'the two boxes' (a 'between' reference)."""
    other_colors: tuple[str, ...] = ()
    """Palette colours a colour name is nearly as close to as `color` ('umber': orange, or brown); the
    ranking takes the best of them, so a name between two palette colours finds an object of either."""

    @property
    def empty(self) -> bool:
        return self.color is None and self.shape is None and self.size is None

    @property
    def colors(self) -> tuple[str, ...]:
        return () if self.color is None else (self.color, *self.other_colors)

    def canonical(self, color: str | None = None) -> str:
        """The plain phrase the model knows best ('the small red cube', 'the red object')."""
        words = [w for w in (self.size, color or self.color) if w]
        words.append(self.shape or "object")
        return "the " + " ".join(words)

    def canonicals(self) -> list[str]:
        """The canonical phrase for each colour the words may mean (one phrase without a colour)."""
        return [self.canonical(c) for c in self.colors] or [self.canonical()]

    def matches(self, color: str, shape: str, size: str) -> bool:
        return ((self.color is None or color in self.colors) and (self.shape is None or self.shape == shape)
                and (self.size is None or self.size == size))


@dataclass(frozen=True)
class ParsedQuery:
    """A query as understood: the target, an optional relation with its references, an optional superlative."""

    text: str
    target: Description
    relation: str | None = None
    references: tuple[Description, ...] = ()
    """The objects the relation refers to; empty with a relation means the robot."""
    superlative: str | None = None

    @property
    def understood(self) -> bool:
        return not self.target.empty or self.relation is not None or self.superlative is not None

    def summary(self) -> str:
        """'target: the red cube [scarlet->red]; relation: left_of the blue sphere' for the response."""
        parts = [f"target: {_describe(self.target)}"]
        if self.superlative:
            parts.append(f"superlative: {self.superlative}")
        if self.relation:
            refs = " and ".join(_describe(r) for r in self.references) or "the robot"
            parts.append(f"relation: {self.relation} {refs}")
        unknown = [w for d in (self.target, *self.references) for w in d.unknown]
        if unknown:
            parts.append("not understood: " + ", ".join(unknown))
        return "; ".join(parts)


def _describe(d: Description) -> str:
    text = d.canonical() if not d.empty or d.unknown else "any object"
    if d.other_colors:
        text += f" (or {' or '.join(d.other_colors)})"
    if d.count > 1:
        text += f" (x{d.count})"
    return text + (f" [{', '.join(d.terms)}]" if d.terms else "")


# ---------------------------------------------------------------------- lexicon

@lru_cache(maxsize=1)
def lexicon(exclude: frozenset[str] = frozenset()) -> dict[tuple[str, ...], tuple[str, str]]:
    """Token sequence -> (attribute, value): the vocabulary, its training synonyms and the thesaurus.

    `exclude` leaves thesaurus words out (the benchmark measures phrasings whose words it does not list).
    """
    table: dict[tuple[str, ...], tuple[str, str]] = {}
    for attribute, words in (("color", COLOR_WORDS), ("shape", SHAPE_WORDS), ("size", SIZE_WORDS)):
        for value, synonyms in words.items():
            for word in [value, *synonyms]:
                if word in HELD_OUT_WORDS:
                    continue
                toks = tuple(tokenize(word))
                if toks and toks[-1] in FILLER and len(toks) > 1:
                    toks = toks[:-1]  # 'cube-shaped object' -> 'cube shaped' is still the shape
                table.setdefault(toks, (attribute, value))
    for attribute, values in THESAURUS.items():
        for value, words in values.items():
            for word in words:
                if word not in exclude:
                    table.setdefault(tuple(tokenize(word)), (attribute, value))
    return table


def _srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB (D65) of sRGB rows in [0, 1]."""
    rgb = np.asarray(rgb, np.float64)
    lin = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
    xyz = lin @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], axis=1)


COLOR_NAME_AMBIGUITY = 1.3
"""A colour name also means a second palette colour when that colour's nearest shade is at most this
many times farther (CIELAB) than the nearest one: 'umber' lies between orange and brown."""


@lru_cache(maxsize=1)
def _color_name_table() -> dict[tuple[str, ...], tuple[str, ...]]:
    """Colour names of the XKCD survey and CSS -> palette colours they may mean, the nearest first."""
    try:
        from matplotlib import colors as mcolors
    except ImportError:
        return {}
    names = {**{k: v for k, v in mcolors.CSS4_COLORS.items()},
             **{k.split(":", 1)[1]: v for k, v in mcolors.XKCD_COLORS.items()}}
    palette = list(COLORS)
    # Prototypes are the survey's own colours for each basic word and its light/dark/pale/bright/deep
    # shades, so a name goes to the basic word people would use for it (the rendered albedos differ).
    survey = {k.split(":", 1)[1]: v for k, v in mcolors.XKCD_COLORS.items()}
    protos, labels = [], []
    for c in palette:
        for shade in ("", "light ", "dark ", "pale ", "bright ", "deep "):
            name = shade + ("grey" if c == "gray" else c)
            if name in survey:
                protos.append(mcolors.to_rgb(survey[name]))
                labels.append(c)
    ref = _srgb_to_lab(np.array(protos))
    out: dict[tuple[str, ...], tuple[str, ...]] = {}
    keys = list(names)
    lab = _srgb_to_lab(np.array([mcolors.to_rgb(names[k]) for k in keys]))
    distance = np.linalg.norm(lab[:, None] - ref[None], axis=2)
    sizes = {w for value, words in SIZE_WORDS.items() for w in (value, *words)}
    heads = {w: c for c in palette for w in (c, *COLOR_WORDS[c]) if " " not in w and "-" not in w}
    heads["grey"] = "gray"
    vocabulary = lexicon()
    for key, row in zip(keys, distance, strict=True):
        toks = tuple(tokenize(key))
        if not toks or set(toks) & set(SHAPES) or toks[0] in sizes or toks in out:
            continue  # 'medium pink' is a size and a colour, not one colour name
        if toks[-1] in heads:
            # English colour compounds take the colour of their last word ('midnight blue' is blue),
            # whatever its shade, unless the vocabulary names the first word's colour ('teal blue' is teal)
            first = vocabulary.get(toks[:-1])
            out[toks] = (first[1] if first and first[0] == "color" else heads[toks[-1]],)
            continue
        # a name without a basic colour word goes by its appearance: the nearest palette colour, and
        # any other whose nearest shade is almost as close
        best: dict[str, float] = {}
        for label, d in zip(labels, row, strict=True):
            best[label] = min(best.get(label, np.inf), float(d))
        ranked = sorted(best, key=best.__getitem__)
        out[toks] = tuple(c for c in ranked if best[c] <= COLOR_NAME_AMBIGUITY * best[ranked[0]])
    return out


def color_names() -> dict[tuple[str, ...], str]:
    """Colour names of the XKCD survey and CSS -> nearest palette colour (CIELAB); empty without matplotlib."""
    return {k: v[0] for k, v in _color_name_table().items()}


def tokenize(text: str) -> list[str]:
    """Lower-case word tokens; hyphens and punctuation separate words, apostrophes stay inside them."""
    text = text.lower().replace("\u2019", "'")
    return re.findall(r"[a-z0-9]+(?:'[a-z]+)?", text)


def edit_distance(a: str, b: str, limit: int = 3) -> int:
    """Optimal string alignment distance (insert, delete, substitute, swap neighbours), capped at `limit`."""
    if abs(len(a) - len(b)) >= limit:
        return limit
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
        if min(prev) >= limit:
            return limit
    return min(prev[-1], limit)


def _letters(word: str) -> int:
    """The set of letters of a word as a bit mask (for a cheap lower bound on edit distance)."""
    mask = 0
    for ch in word:
        if "a" <= ch <= "z":
            mask |= 1 << (ord(ch) - 97)
    return mask


def singular(word: str) -> str:
    """'cubes' -> 'cube', 'boxes' -> 'box', 'dice' -> 'die': a regular plural undone (else the word)."""
    if word == "dice":
        return "die"
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("xes", "ches", "shes", "sses", "zes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def _stems(word: str) -> list[str]:
    """Forms a word may take the vocabulary word from: its singular, colour adjectives ('bluish',
    'blackened'), and the word with doubled letters made single ('rred', 'ccan')."""
    out = [singular(word)]
    for suffix in ("ish", "y", "ey", "ie", "ened", "en"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            stem = word[: -len(suffix)]
            out += [stem, stem + "e"]
            if len(stem) > 3 and stem[-1] == stem[-2]:
                out.append(stem[:-1])  # 'reddish' -> 'red'
    single = re.sub(r"(.)\1+", r"\1", word)
    if single != word and len(single) >= 3:
        out += [single, singular(single)]
    return list(dict.fromkeys(out))


# ---------------------------------------------------------------------- parser

_FILLER_VALUE = ("filler", "")
"""What a misspelt filler word resolves to: dropped like the word itself."""

WordEmbedder = Callable[[Sequence[str]], np.ndarray]
"""Unit embeddings of short texts (the text encoder's own space), for word similarity."""


class QueryReader:
    """Reads query texts into `ParsedQuery`; `embed` (optional) resolves words the rules do not know."""

    def __init__(self, embed: WordEmbedder | None = None, word_similarity: float = WORD_SIMILARITY,
                 word_margin: float = WORD_MARGIN, cache_size: int = 512,
                 exclude: frozenset[str] = frozenset()) -> None:
        self._embed = embed
        self.word_similarity = word_similarity
        self.word_margin = word_margin
        self._lex = lexicon(frozenset(exclude))
        self._colors = color_names()
        self._color_table = _color_name_table()
        self._word_source: dict[str, tuple[tuple[str, ...], bool]] = {}
        """A word resolved through another known word: that word, and whether the vocabulary holds it."""
        self._single = {k[0]: v for k, v in self._lex.items() if len(k) == 1}
        self._longest = max(max(len(k) for k in self._lex), max((len(k) for k in self._colors), default=1))
        self._anchor: tuple[np.ndarray, list[tuple[str, str]]] | None = None
        self._word_cache: dict[str, tuple[str, str] | None] = {}
        self._fuzzy: list[tuple[str, tuple[str, str], int]] | None = None
        self._by_similarity: set[str] = set()
        """Words resolved only by the encoder's word similarity: they never override a known word."""
        self._cache: dict[str, ParsedQuery] = {}
        self._cache_size = cache_size
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ public
    def warm(self) -> QueryReader:
        """Build the word tables and encode the attribute words now (hundreds of ms), not on the first query."""
        self._fuzzy_words()
        if self._embed is not None:
            self._anchors()
        return self

    def read(self, text: str) -> ParsedQuery:
        with self._lock:
            hit = self._cache.get(text)
        if hit is not None:
            return hit
        parsed = self._read(text)
        with self._lock:
            if len(self._cache) >= self._cache_size:
                self._cache.pop(next(iter(self._cache)))
            self._cache[text] = parsed
        return parsed

    def _read(self, text: str) -> ParsedQuery:
        tokens = tokenize(text)
        self._prefetch(tokens)
        relation, at, length = self._find_relation(tokens)
        superlative = None
        if relation is None:
            tokens, superlative = self._take_superlative(tokens)
            return ParsedQuery(text, self.describe(tokens), superlative=superlative)
        before, after = tokens[:at], tokens[at + length:]
        before, superlative = self._take_superlative(before)
        target = self.describe(before)
        references: tuple[Description, ...] = ()
        if relation in ("nearest_to", "farthest_from") and (not after or set(after) <= FILLER | ROBOT_WORDS):
            # 'the ball nearest to the robot', 'the closest ball': a superlative about the robot
            superlative = "nearest" if relation == "nearest_to" else "farthest"
            return ParsedQuery(text, target, superlative=superlative)
        if relation == "between":
            references = self._between(after)
        elif not (set(after) & ROBOT_WORDS) or self._has_attribute(after):
            references = (self.describe(after),)
        return ParsedQuery(text, target, relation, references, superlative)

    # ------------------------------------------------------------------ relations
    def _find_relation(self, tokens: list[str]) -> tuple[str | None, int, int]:
        """The first relation phrase (longest at a position) with a mention after it."""
        phrases = sorted(((tuple(p.split()), r) for p, r in _RELATIONS), key=lambda x: -len(x[0]))
        for i in range(len(tokens)):
            for words, relation in phrases:
                n = len(words)
                if tuple(tokens[i:i + n]) != words or i + n >= len(tokens):
                    continue
                if relation == "on_top_of" and words == ("on",) and tokens[i + 1:i + 3] in (["the", "left"],
                                                                                          ["the", "right"]):
                    continue  # 'on the left' is a side, not a support
                return relation, i, n
        return None, 0, 0

    def _take_superlative(self, tokens: list[str]) -> tuple[list[str], str | None]:
        found = None
        out: list[str] = []
        i = 0
        while i < len(tokens):
            side = next(((k, v) for k, v in _SIDE_WORDS.items() if tuple(tokens[i:i + len(k)]) == k), None)
            if tokens[i] in _SUPERLATIVES and found is None:
                found = _SUPERLATIVES[tokens[i]]
                i += 1
            elif side is not None and found is None:
                found = side[1]
                i += len(side[0])
            elif tokens[i] == "most" and i + 1 < len(tokens) and tokens[i + 1] in ("left", "right"):
                found = "leftmost" if tokens[i + 1] == "left" else "rightmost"
                i += 2
            else:
                out.append(tokens[i])
                i += 1
        return out, found

    def _between(self, tokens: list[str]) -> tuple[Description, ...]:
        """'the red cube and the blue ball' -> two mentions; 'the two boxes' -> one mention counted twice."""
        if "and" in tokens:
            k = tokens.index("and")
            return self.describe(tokens[:k]), self.describe(tokens[k + 1:])
        d = self.describe([t for t in tokens if t not in ("two", "both", "2")])
        return (Description(d.color, d.shape, d.size, d.terms, d.unknown, count=2, other_colors=d.other_colors),)

    def _has_attribute(self, tokens: list[str]) -> bool:
        return not self.describe(tokens).empty

    # ------------------------------------------------------------------ attributes
    def describe(self, tokens: Sequence[str]) -> Description:
        """Attribute values named by a run of tokens (the first value of each attribute wins).

        In a run of two colour words one names the colour: a word of the vocabulary ('teal blue' is
        teal, so cyan); otherwise the last ('azure blue' is blue, 'bone white' white), also when one of
        them is misspelt ('midnight blakc' is black).
        """
        found: dict[str, str] = {}
        terms: list[str] = []
        unknown: list[str] = []
        tokens = list(tokens)
        weak: dict[str, str] = {}
        weak_words: dict[str, str] = {}
        other_colors: tuple[str, ...] = ()
        color_from_vocabulary = False
        i = 0
        last_color = -1

        def take_color(value: str, words: str, key: tuple[str, ...], vocabulary: bool, start: int, how: str) -> None:
            nonlocal terms, other_colors, color_from_vocabulary
            compound = "color" in found and last_color == start
            if "color" in found and not compound:
                return
            if compound:
                if color_from_vocabulary and not vocabulary:
                    return
                terms = [t for t in terms if "->" + found["color"] not in t]
                words = f"{tokens[start - 1]} {words}"
            found["color"] = value
            other_colors = () if vocabulary else self._color_table.get(key, (value,))[1:]
            color_from_vocabulary = vocabulary
            if words != value or how:
                terms.append(f"{words}->{value}")

        while i < len(tokens):
            hit = self._phrase(tokens, i)
            if hit is not None:
                n, (attribute, value), how = hit
                words = " ".join(tokens[i:i + n])
                if attribute == "color":
                    take_color(value, words, tuple(tokens[i:i + n]), not how, i, how)
                elif attribute not in found:
                    found[attribute] = value
                    if words != value:
                        terms.append(f"{words}->{value}")
                i += n
                last_color = i if attribute == "color" else -1
                continue
            word = tokens[i]
            i += 1
            if word in FILLER or word in MODIFIERS or word.isdigit() or (word == "can" and i < len(tokens)
                                                                        and tokens[i] in FILLER):
                continue
            resolved = self._word(word)
            if resolved == _FILLER_VALUE:
                continue
            if resolved is None:
                nxt = self._phrase(tokens, i) if i < len(tokens) else None
                if nxt is None or nxt[1][0] != "color":
                    unknown.append(word)  # (a word before a colour word only shades it: 'bone white')
                continue
            attribute, value = resolved
            if word not in self._by_similarity:
                if attribute == "color":
                    key, vocabulary = self._word_source.get(word, ((word,), False))
                    take_color(value, word, key, vocabulary, i - 1, "")
                    last_color = i
                elif attribute not in found:
                    found[attribute] = value
                    terms.append(f"{word}->{value}")
                continue
            if attribute not in found and attribute not in weak:
                weak[attribute], weak_words[attribute] = value, word
                terms.append(f"{word}~>{value}")
        for attribute, value in weak.items():  # word similarity never overrides a known word
            if attribute in found:
                terms = [t for t in terms if t != f"{weak_words[attribute]}~>{value}"]
            else:
                found[attribute] = value
        return Description(found.get("color"), found.get("shape"), found.get("size"), tuple(terms), tuple(unknown),
                           other_colors=other_colors)

    def _phrase(self, tokens: list[str], i: int) -> tuple[int, tuple[str, str], str] | None:
        """Longest vocabulary or colour-name phrase starting at token i: (length, (attribute, value), how)."""
        for n in range(min(self._longest, len(tokens) - i), 0, -1):
            key = tuple(tokens[i:i + n])
            if n == 1 and (key[0] in FILLER or key[0] in MODIFIERS):
                return None
            if key in self._lex:
                if key == ("can",) and i + 1 < len(tokens) and tokens[i + 1] in FILLER:
                    continue  # 'can you ...'
                return n, self._lex[key], ""
            if n > 1 and key[-1] in SHAPES + ("one",):
                continue  # a colour name never swallows a shape ('orange cone')
            if key in self._colors:
                return n, ("color", self._colors[key]), "colour name"
        return None

    def _prefetch(self, tokens: list[str]) -> None:
        """Resolve every new word the rules do not know with one call of the encoder (not one per word)."""
        if self._embed is None:
            return
        pending = [t for t in dict.fromkeys(tokens)
                   if t not in self._word_cache and t not in FILLER and t not in MODIFIERS and not t.isdigit()
                   and (t,) not in self._lex and (t,) not in self._colors]
        pending = [t for t in pending if self._resolve_word(t, similarity=False) is None]
        if not pending:
            return
        self._anchors()
        vecs = np.asarray(self._embed([f"a {w} object" for w in pending]), np.float32)
        for word, vec in zip(pending, vecs, strict=True):
            self._word_cache[word] = self._nearest(word, vec)

    def _word(self, word: str) -> tuple[str, str] | None:
        """One word the phrase tables do not hold: plural/suffix forms, spelling, then similarity."""
        if word in self._word_cache:
            return self._word_cache[word]
        result = self._resolve_word(word)
        self._word_cache[word] = result
        return result

    def _resolve_word(self, word: str, similarity: bool = True) -> tuple[str, str] | None:
        stems = _stems(word)
        for stem in stems:
            if stem in self._single:
                self._word_source[word] = ((stem,), True)
                return self._single[stem]
            if (stem,) in self._colors:
                self._word_source[word] = ((stem,), False)
                return "color", self._colors[(stem,)]
        for form in dict.fromkeys((word, *stems)):  # a slip in the word, then in its plain form ('cuebs')
            hit = self._misspelt(form)
            if hit is not None:
                known, value = hit
                if value != _FILLER_VALUE:
                    self._word_source[word] = ((known,), known in self._single)
                return value
        return self._similar(word) if similarity else None

    def _misspelt(self, word: str) -> tuple[str, tuple[str, str]] | None:
        """The one known word `word` is a slip of (known word, value), if exactly one is that close.

        One slip per word of 5-8 letters, two from 9; 4-letter words only by swapped letters (any other slip
        turns too many everyday words into attribute words); shorter words never.
        """
        if len(word) < 4:
            return None
        limit = 1 if len(word) < 9 else 2
        mask = _letters(word)
        best, best_word, best_d, tie = None, "", limit + 1, False
        for known, value, known_mask in self._fuzzy_words():
            # cheap bounds first: each slip changes the length by at most one and the letter set by two
            if abs(len(known) - len(word)) > limit or (mask ^ known_mask).bit_count() > 2 * limit:
                continue
            if len(word) == 4 and sorted(known) != sorted(word):
                continue
            d = edit_distance(word, known, limit + 1)
            if d < best_d:
                best, best_word, best_d, tie = value, known, d, False
            elif d == best_d and best is not None and value != best:
                tie = True
        if best is not None and best_d <= limit and not tie:
            return best_word, best
        return None

    def _fuzzy_words(self) -> list[tuple[str, tuple[str, str], int]]:
        """Single words a misspelling may stand for: attribute words, and filler ('thiing' is no noun)."""
        if self._fuzzy is None:
            names = [(k[0], ("color", v)) for k, v in self._colors.items() if len(k) == 1 and len(k[0]) >= 5]
            words = [*((w, v) for w, v in self._single.items() if len(w) >= 3), *names,
                     *((w, _FILLER_VALUE) for w in FILLER if len(w) >= 4)]
            self._fuzzy = [(w, v, _letters(w)) for w, v in words]
        return self._fuzzy

    def _anchors(self) -> tuple[np.ndarray, list[tuple[str, str]]]:
        if self._anchor is None:
            assert self._embed is not None
            words = list(self._lex.items())
            vecs = np.asarray(self._embed([f"a {' '.join(t)} object" for t, _ in words]), np.float32)
            self._anchor = (vecs, [av for _, av in words])
        return self._anchor

    def _similar(self, word: str) -> tuple[str, str] | None:
        if self._embed is None:
            return None
        self._anchors()
        return self._nearest(word, np.asarray(self._embed([f"a {word} object"]), np.float32)[0])

    def _nearest(self, word: str, q: np.ndarray) -> tuple[str, str] | None:
        """The attribute value whose words are most similar to `word` (embedded as `q`), if clearly so."""
        vecs, values = self._anchors()
        sims = vecs @ q
        order = np.argsort(-sims)
        best = values[int(order[0])]
        if sims[order[0]] < self.word_similarity:
            return None
        other = next((sims[j] for j in order[1:] if values[int(j)] != best), -1.0)
        if sims[order[0]] - other < self.word_margin:
            return None
        self._by_similarity.add(word)
        return best


_READERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_PLAIN_READER: list[QueryReader] = []
_READERS_LOCK = threading.Lock()


def reader_for(text_encoder) -> QueryReader:
    """One reader per text encoder (its word similarities are cached), built on first use."""
    with _READERS_LOCK:
        if text_encoder is None:
            if not _PLAIN_READER:
                _PLAIN_READER.append(QueryReader(None))
            return _PLAIN_READER[0]
        reader = _READERS.get(text_encoder)
        if reader is None:
            reader = _READERS[text_encoder] = QueryReader(getattr(text_encoder, "encode_base", text_encoder.encode))
        return reader
