"""Measuring attribute queries on synthetic scenes: which queries count, and what is correct.

Rule: a query counts for accuracy only when the objects it describes, among the instances in the
map, are exactly one object or one group of identical copies (duplicates share every attribute,
so no text can tell them apart). It is correct at top-k when any of those objects is among the k
best-ranked instances. Queries that describe several distinct objects ("the red one" in a scene
with a red cube and a red ball) are ambiguous and are not scored.

Query kinds: 'canonical' (plain words: "the small red cube", "the red cube"), 'synonym'
(training phrasings: "find the little crimson block"), 'unseen_synonym' (the captions' synonyms
and templates withheld from training: "bring me the tiny scarlet dice-shaped block"), 'dev' (the
phrasing set query understanding is tuned on) and 'held_out' (the held-out phrasing set: other
synonyms, sentence forms, word orders, plurals and misspellings; see `phrasings`).
"""

from __future__ import annotations

import random
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np

from iggt_ros.config import QueryConfig
from iggt_ros.perception.records import InstanceRecord
from iggt_ros.vlm.captions import ATTRIBUTE_PATTERNS, Caption, canonical_caption, make_caption
from iggt_ros.vlm.encoders import TextEncoder
from iggt_ros.vlm.phrasings import load_phrasings
from iggt_ros.vlm.query import answer_query
from iggt_ros.vlm.understanding import QueryReader

KINDS = ("canonical", "synonym", "unseen_synonym", "dev", "held_out")


@dataclass
class QueryOutcome:
    scene: int
    kind: str
    text: str
    targets: list[int]
    ranked: list[int]
    latency_ms: float

    @property
    def top1(self) -> bool:
        return bool(self.ranked) and self.ranked[0] in self.targets

    @property
    def top3(self) -> bool:
        return any(r in self.targets for r in self.ranked[:3])


def _attrs(inst: InstanceRecord) -> tuple[str, str, str]:
    a = inst.attributes
    return a["color"], a["shape"], a["size"]


def scene_queries(instances: Sequence[InstanceRecord], rng: random.Random, per_kind: int = 1,
                  kinds: Sequence[str] = KINDS) -> list[tuple[str, Caption, list[int]]]:
    """(kind, caption, target IDs) for every attribute pattern of every instance that names it uniquely."""
    groups: dict[tuple[str, str, str], list[int]] = {}
    for inst in instances:
        groups.setdefault(_attrs(inst), []).append(inst.id)
    out = []
    for (color, shape, size), ids in sorted(groups.items()):
        for use_c, use_s, use_z in ATTRIBUTE_PATTERNS:
            key = (color if use_c else None, shape if use_s else None, size if use_z else None)
            probe = Caption("", *key)
            matching = [i for g, members in groups.items() if probe.matches(*g) for i in members]
            if sorted(matching) != sorted(ids):
                continue  # ambiguous: describes other objects too
            if "canonical" in kinds:
                out.append(("canonical", canonical_caption(*key), ids))
            for _ in range(per_kind):
                if "synonym" in kinds:
                    out.append(("synonym", make_caption(*key, rng=rng), ids))
                if "unseen_synonym" in kinds:
                    out.append(("unseen_synonym", make_caption(*key, rng=rng, held_out=True), ids))
                for name in ("dev", "held_out"):
                    if name in kinds:
                        out.append((name, load_phrasings(name).make(*key, rng=rng), ids))
    return out


def evaluate_instances(scene: int, instances: Sequence[InstanceRecord], text_encoder: TextEncoder,
                       config: QueryConfig | None = None, seed: int = 0, per_kind: int = 1,
                       kinds: Sequence[str] = KINDS, reader: QueryReader | None = None,
                       rename: str | None = None) -> list[QueryOutcome]:
    """Ask every unique attribute query of one scene.

    Queries are made from the instances that carry ground-truth attributes; every embedded instance
    is a candidate answer, so an instance the scene does not explain (a fragment, a false track)
    ranked first counts as a miss. `reader` reads the texts (default: the text encoder's); `rename`
    reports every outcome under that kind instead (a variant of the reader on the same queries).
    """
    cfg = config or QueryConfig()
    embedded = [i for i in instances if i.embedding is not None]
    labelled = [i for i in embedded if "color" in i.attributes]
    rng = random.Random(seed * 7919 + scene)
    outcomes = []
    for kind, caption, targets in scene_queries(labelled, rng, per_kind, kinds):
        t0 = time.perf_counter()
        result = answer_query(caption.text, embedded, text_encoder, cfg, max_results=max(3, cfg.max_results),
                              reader=reader)
        latency = (time.perf_counter() - t0) * 1e3
        outcomes.append(QueryOutcome(scene, rename or kind, caption.text, list(targets),
                                     [r.instance.id for r in result.ranked], latency))
    return outcomes


def summarize(outcomes: Sequence[QueryOutcome]) -> dict[str, dict[str, float]]:
    """Per kind and overall: number of queries, top-1 and top-3 accuracy, latency median and p95 (ms)."""
    table = {}
    extra = sorted({o.kind for o in outcomes} - set(KINDS))
    for kind in (*KINDS, *extra, "all"):
        rows = [o for o in outcomes if kind == "all" or o.kind == kind]
        if not rows:
            continue
        lat = np.array([o.latency_ms for o in rows])
        table[kind] = {
            "queries": len(rows),
            "top1": float(np.mean([o.top1 for o in rows])),
            "top3": float(np.mean([o.top3 for o in rows])),
            "latency_median_ms": float(np.median(lat)),
            "latency_p95_ms": float(np.percentile(lat, 95)),
        }
    return table


def match_objects(instances: Sequence[InstanceRecord], objects, max_distance_m: float = 0.35) -> dict[int, int]:
    """Scene object ID -> map instance ID, one to one by floor-plane centroid distance.

    For runs where instance IDs are the tracker's, not the renderer's (a replay through the
    pipeline): a minimum-cost assignment between instance centroids and object centres, keeping
    pairs at most `max_distance_m` apart.
    """
    from scipy.optimize import linear_sum_assignment

    objects = list(objects)
    if not instances or not objects:
        return {}
    a = np.array([np.asarray(i.centroid, float)[:2] for i in instances])
    b = np.array([np.asarray(o.center, float)[:2] for o in objects])
    cost = np.linalg.norm(a[:, None] - b[None], axis=2)
    rows, cols = linear_sum_assignment(cost)
    return {int(objects[c].id): int(instances[r].id) for r, c in zip(rows, cols, strict=True)
            if cost[r, c] <= max_distance_m}


def label_from_scene(instances: Sequence[InstanceRecord], objects, max_distance_m: float = 0.35) -> int:
    """Give map instances the attributes of the scene object they are (`match_objects`); returns how many.

    Unmatched instances keep no attributes and are not asked about.
    """
    objects = list(objects)
    by_id = {int(o.id): o for o in objects}
    inst = {int(i.id): i for i in instances}
    matched = match_objects(instances, objects, max_distance_m)
    for oid, iid in matched.items():
        inst[iid].attributes = dict(by_id[oid].attributes)
    return len(matched)


def evaluate_relations(scene: int, instances: Sequence[InstanceRecord], text_encoder: TextEncoder,
                       objects, viewer: np.ndarray, object_to_instance: dict[int, int],
                       config: QueryConfig | None = None, seed: int = 0, per_kind: int = 3,
                       seen: Collection[int] | None = None) -> list[QueryOutcome]:
    """Relation and superlative queries made from the true geometry of the objects the map holds.

    `objects` are the scene's true objects; only those with an embedded instance
    (`object_to_instance`) are asked about or used as references. The right answer is decided
    among those and the `seen` object IDs (what the cameras saw), so that an object whose map
    instance could not be matched to it (a centroid too far off, two objects merged) still counts
    when the generator decides which object is, say, the largest box. A query is correct when the
    instance of its target object ranks first. Outcomes carry the relation as their kind.
    """
    from iggt_ros.vlm.relation_queries import generate, scene_objects

    cfg = config or QueryConfig()
    embedded = [i for i in instances if i.embedding is not None]
    have = {i.id for i in embedded}
    keep = {oid for oid, iid in object_to_instance.items() if iid in have}
    rng = random.Random(seed * 104729 + scene)
    outcomes = []
    for q in generate(scene_objects(objects, viewer, keep | set(seen or ())), rng, per_kind, askable=keep):
        t0 = time.perf_counter()
        result = answer_query(q.text, embedded, text_encoder, cfg, max_results=max(3, cfg.max_results),
                              viewer=viewer)
        latency = (time.perf_counter() - t0) * 1e3
        outcomes.append(QueryOutcome(scene, q.kind, q.text, [object_to_instance[q.target]],
                                     [r.instance.id for r in result.ranked], latency))
    return outcomes
