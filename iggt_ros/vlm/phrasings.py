"""Phrasing sets for the query benchmark: how people actually type a request, from a data file.

A phrasing set (`iggt_ros/data/phrasings/<name>.json`) lists synonyms per colour, shape and size,
generic nouns and sentence templates, and a misspelling rate. `dev` is for tuning query
understanding; `held_out` is read only by the benchmark, so its numbers measure phrasings that
neither training nor any tuned choice has seen.

Template slots: `{p}` the adjective phrase ("small red cube"), `{pl}` its plural ("small red
cubes"), `{r}` the adjectives in the other order ("red small cube"), `{n}` the noun and `{a}` the
adjectives as a clause ("small and red"). A template with `{a}` needs an adjective, and one with
`{a}` but no `{n}` ("the one that is {a}") only fits queries that name no shape.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from iggt_ros.vlm.captions import Caption

PHRASING_DIR = Path(__file__).resolve().parent.parent / "data" / "phrasings"
PHRASING_SETS = ("dev", "held_out")

_KEYBOARD_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")


@dataclass(frozen=True)
class PhrasingSet:
    name: str
    colors: dict[str, list[str]]
    shapes: dict[str, list[str]]
    sizes: dict[str, list[str]]
    generic_nouns: list[str]
    templates: list[str]
    misspelling_rate: float

    def make(self, color: str | None, shape: str | None, size: str | None, rng: random.Random) -> Caption:
        """One phrasing naming exactly the given attributes."""
        c = rng.choice(self.colors[color]) if color else None
        s = rng.choice(self.shapes[shape]) if shape else None
        z = rng.choice(self.sizes[size]) if size else None
        if self.misspelling_rate > 0 and rng.random() < self.misspelling_rate:
            slots = [i for i, w in enumerate((c, s, z)) if w and len(w) >= 4]
            if slots:
                words = [c, s, z]
                i = rng.choice(slots)
                words[i] = misspell(words[i], rng)
                c, s, z = words
        noun = s or rng.choice(self.generic_nouns)
        adjectives = [w for w in (z, c) if w]
        fits = [t for t in self.templates
                if ("{a}" not in t or adjectives) and ("{a}" not in t or "{n}" in t or shape is None)]
        template = rng.choice(fits)
        text = template.format(p=" ".join([*adjectives, noun]), pl=" ".join([*adjectives, plural(noun)]),
                               r=" ".join([*adjectives[::-1], noun]), n=noun, a=" and ".join(adjectives))
        return Caption(text=text, color=color, shape=shape, size=size)


def misspell(word: str, rng: random.Random) -> str:
    """One typing slip in one letter of a word: a swap, a dropped, doubled or neighbouring key."""
    positions = [i for i, ch in enumerate(word) if ch.isalpha() and i > 0]
    if not positions:
        return word
    i = rng.choice(positions)
    kind = rng.choice(("swap", "drop", "double", "neighbour"))
    if kind == "swap" and i + 1 < len(word) and word[i + 1].isalpha():
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if kind == "drop":
        return word[:i] + word[i + 1:]
    if kind == "double":
        return word[:i] + word[i] + word[i:]
    for row in _KEYBOARD_ROWS:
        j = row.find(word[i])
        if j >= 0:
            near = [row[k] for k in (j - 1, j + 1) if 0 <= k < len(row)]
            return word[:i] + rng.choice(near) + word[i + 1:]
    return word[:i] + word[i + 1:]


def plural(noun: str) -> str:
    """Regular English plural of a noun phrase's last word ('box' -> 'boxes', 'die' -> 'dice')."""
    head, _, last = noun.rpartition(" ")
    if last == "die":
        word = "dice"
    elif last.endswith(("s", "x", "z", "ch", "sh")):
        word = last + "es"
    elif last.endswith("y") and len(last) > 1 and last[-2] not in "aeiou":
        word = last[:-1] + "ies"
    else:
        word = last + "s"
    return f"{head} {word}" if head else word


@cache
def load_phrasings(name: str) -> PhrasingSet:
    """The phrasing set `name` ('dev' or 'held_out'); a clear error for any other name."""
    if name not in PHRASING_SETS:
        raise ValueError(f"unknown phrasing set '{name}'; expected one of {', '.join(PHRASING_SETS)}")
    raw = json.loads((PHRASING_DIR / f"{name}.json").read_text())
    return PhrasingSet(name=name, colors=raw["colors"], shapes=raw["shapes"], sizes=raw["sizes"],
                       generic_nouns=raw["generic_nouns"], templates=raw["templates"],
                       misspelling_rate=float(raw["misspelling_rate"]))
