"""Answering a text query from the latest snapshot of the map.

Shared by the `/iggt/query` service and `iggt-ros query`, so both rank the same way. A query
never waits for inference: it reads whatever instances and embeddings exist at that moment.

The text is first read into a target description, an optional relation and an optional
superlative (`understanding.QueryReader`); the model is asked with the canonical description
("the small red cube"), which it knows best, and relations are applied with the map's boxes
(`relations`). A text that names nothing the reader knows is embedded as typed (open vocabulary).
The result says how the text was understood.

Scores are (1 + cosine) / 2 in [0, 1] between the query's text embedding and an instance's
embedding, weighed by how surely the instance has each named attribute relative to the instance
that fits best (`attribute_fit`), so a minimum score of 0 keeps every ranked instance, as the
service promises. With a
relation or superlative, a score is the best attribute score times the instance's weight (the
chance that it is what the description names, `attribute_membership`, times its geometric fit,
`relations.relate`), so the order is the order of scores.

An instance's shape is weighed by its region embedding and, where the map measured them, by its
points' outline (`shape_geometry`: a round or square footprint, a profile that narrows or not).
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from iggt_ros.config import QueryConfig
from iggt_ros.perception.outline import MIN_SECTORS, measured
from iggt_ros.perception.records import LABEL_REASON, InstanceRecord
from iggt_ros.synthetic.attributes import COLORS, SHAPES, SIZES
from iggt_ros.vlm.encoders import TextEncoder, normalize_rows
from iggt_ros.vlm.labels import NOT_EMBEDDED_YET
from iggt_ros.vlm.relations import Geometry, cube_log_odds, heights_above_support, relate
from iggt_ros.vlm.shape_geometry import shape_log_likelihoods
from iggt_ros.vlm.understanding import Description, ParsedQuery, QueryReader, reader_for

ATTRIBUTE_VALUES: dict[str, list[str]] = {"color": list(COLORS), "shape": list(SHAPES), "size": list(SIZES)}
ATTRIBUTE_PROMPTS = {"color": "the {} object", "shape": "the {}", "size": "the {} object"}


@dataclass
class RankedInstance:
    instance: InstanceRecord
    score: float


@dataclass
class QueryResult:
    """What a query returns; `instances` and `scores` map one to one onto the Query service response."""

    success: bool
    message: str
    ranked: list[RankedInstance] = field(default_factory=list)
    frame_id: str = ""
    latency_ms: float = 0.0
    understood: str = ""
    """How the text was read: target attributes, relation and references (with their instance IDs)."""

    @property
    def instances(self) -> list[InstanceRecord]:
        return [r.instance for r in self.ranked]

    @property
    def scores(self) -> list[float]:
        return [r.score for r in self.ranked]


def answer_query(text: str, instances: Sequence[InstanceRecord], text_encoder: TextEncoder | None,
                 config: QueryConfig | None = None, max_results: int = 0, min_score: float = 0.0,
                 embeddings: Mapping[int, np.ndarray] | None = None, frame_id: str = "",
                 embedding_space: str | None = None, viewer: np.ndarray | None = None,
                 reader: QueryReader | None = None) -> QueryResult:
    """Rank `instances` by how well they match `text`.

    - `max_results` 0 means `config.max_results`; `min_score` 0 means `config.min_score`.
    - An instance's embedding is `instance.embedding`, else `embeddings[instance.id]`; instances
      without one are left out and counted in the message with the reason they carry (attribute
      `label_reason`, e.g. masks too small to embed), "not embedded yet" when they carry none.
    - `embedding_space`, when given, names the space the instance embeddings were made in; a text
      encoder of another space is refused instead of returning meaningless scores.
    - `viewer` is the robot's pose (4x4, `base_link` in the instances' frame) that directions such as
      'left of' and 'in front of' are taken from; None takes the frame's own axes (x forward, y left).
    - `reader` reads the text (default: one per text encoder, see `understanding.reader_for`).
    Failures (success=False, with the reason): empty or over-long text, no text encoder,
    no instances, no embedded instances, mismatched embedding spaces or dimensions.
    """
    t0 = time.perf_counter()
    cfg = config or QueryConfig()

    def fail(message: str) -> QueryResult:
        return QueryResult(False, message, [], frame_id, (time.perf_counter() - t0) * 1e3)

    query = (text or "").strip()
    if not query:
        return fail("empty query: give a text such as 'the red cube'")
    if len(query) > cfg.max_text_length:
        return fail(f"query is {len(query)} characters long; the limit is {cfg.max_text_length} "
                    "(query.max_text_length)")
    if text_encoder is None:
        return fail("text queries are disabled (query.text_encoder is 'none')")
    if embedding_space is not None and embedding_space != text_encoder.space:
        return fail(f"instance embeddings were made in space '{embedding_space}' but the text encoder "
                    f"'{text_encoder.name}' embeds into '{text_encoder.space}'; use matching "
                    "query.text_encoder and query.region_encoder")
    if not instances:
        return fail("no instances in the map yet")
    ids: list[int] = []
    rows: list[np.ndarray] = []
    by_id: dict[int, InstanceRecord] = {}
    missing: Counter[str] = Counter()
    for inst in instances:
        vec = inst.embedding if inst.embedding is not None else (embeddings or {}).get(inst.id)
        if vec is None:
            missing[inst.attributes.get(LABEL_REASON) or NOT_EMBEDDED_YET] += 1
            continue
        ids.append(inst.id)
        rows.append(np.asarray(vec, dtype=np.float32).ravel())
        by_id[inst.id] = inst
    if not ids:
        return fail(f"none of the {len(instances)} instances has an embedding ({_summary(missing)})")
    dims = {r.shape[0] for r in rows}
    if dims != {text_encoder.dim}:
        return fail(f"instance embeddings have dimension {sorted(dims)} but the text encoder "
                    f"'{text_encoder.name}' gives {text_encoder.dim}")
    parsed = (reader or reader_for(text_encoder)).read(query)
    boxes = [by_id[i] for i in ids]
    scores, understood = _rank(query, parsed, normalize_rows(np.stack(rows)), boxes, text_encoder, viewer)
    k = max_results if max_results > 0 else cfg.max_results
    threshold = min_score if min_score > 0 else cfg.min_score
    order = np.argsort(-scores, kind="stable")
    ranked = [RankedInstance(by_id[ids[i]], float(scores[i])) for i in order if scores[i] >= threshold][:k]
    message = f"{len(ranked)} of {len(ids)} embedded instances"
    if missing:
        message += f" ({_summary(missing)})"
    if not ranked:
        message = f"no instance scored at least {threshold:.3f}; " + message
    return QueryResult(True, message, ranked, frame_id, (time.perf_counter() - t0) * 1e3, understood)


def _mentions(parsed: ParsedQuery) -> list[Description | None]:
    """The target and each reference, None for a mention that names nothing to embed."""
    return [None if d.empty else d for d in (parsed.target, *parsed.references)]


def attribute_membership(mention: Description, vectors: np.ndarray, text_encoder: TextEncoder,
                         sizes: np.ndarray | None = None, shape_evidence: np.ndarray | None = None,
                         bottoms: np.ndarray | None = None, seen_all_round: np.ndarray | None = None
                         ) -> np.ndarray | None:
    """[N] in [0, 1]: the chance that each instance has every attribute the mention names.

    A relation or superlative chooses among the objects that fit the description, and the region
    embedding is sometimes unsure of an attribute (a cube seen badly looks like a box). A yes/no
    decision per instance drops the right object whenever the embedding leans the wrong way, and
    then no geometry can bring it back; a probability lets the geometry weigh a likely member that
    stands in the relation against a surer one that does not (`relations.relate`). Attribute by
    attribute ('is red a likely colour, is cube a likely shape?'), as a softmax over the attribute's
    values at `MEMBERSHIP_TEMPERATURE`, the temperature at which these probabilities match how often
    the instances really have the value. With the map boxes' `sizes` ([N, 3]), 'cube' and 'box' also
    weigh the box's proportions (`relations.cube_log_odds`, which also reads the boxes' `bottoms` and
    whether each was `seen_all_round`, when given); with `shape_evidence` ([N, shapes], the
    log-likelihood of each shape given the instance's points, `shape_geometry.shape_log_likelihoods`),
    the shape probabilities also weigh what the points say (`with_shape_evidence`). None when the mention names no
    attribute, or a value outside the vocabulary (then the joint score decides,
    `relations.attribute_weights`).
    """
    named = [(a, v) for a, v in (("color", mention.colors), ("shape", (mention.shape,)),
                                 ("size", (mention.size,))) if v and v[0]]
    if not named:
        return None
    log_member = np.zeros(len(vectors))
    for attribute, accepted in named:
        values = ATTRIBUTE_VALUES[attribute]
        if any(v not in values for v in accepted):
            return None
        log_p = _attribute_log_probabilities(attribute, vectors, text_encoder, MEMBERSHIP_TEMPERATURE)
        if attribute == "shape" and shape_evidence is not None:
            log_p = with_shape_evidence(log_p, shape_evidence)
        if attribute == "shape" and sizes is not None:
            log_p = _with_proportions(log_p, cube_log_odds(sizes, bottoms, seen_all_round))
        log_member += np.logaddexp.reduce(log_p[:, [values.index(v) for v in accepted]], axis=1)
    return np.exp(log_member)


def with_shape_evidence(log_p: np.ndarray, evidence: np.ndarray, weight: float | None = None) -> np.ndarray:
    """Shape log-probabilities of the embedding times the points' likelihood of each shape to the power
    `weight` (default `GEOMETRY_WEIGHT`), renormalised: Bayes' rule with the embedding as the prior,
    the weight standing for how far the two are not independent. Rows of zeros (no usable points)
    leave the embedding's probabilities as they are."""
    logits = log_p + (GEOMETRY_WEIGHT if weight is None else weight) * np.asarray(evidence, np.float64)
    return logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)


def _with_proportions(log_p: np.ndarray, cube_odds: np.ndarray) -> np.ndarray:
    """Shape log-probabilities with the embedding's share between 'cube' and 'box' re-weighed by the
    map box's proportions (`cube_odds`, `relations.cube_log_odds`); the pair's total and the other
    shapes are left as they are."""
    cube, box = ATTRIBUTE_VALUES["shape"].index("cube"), ATTRIBUTE_VALUES["shape"].index("box")
    pair = np.logaddexp(log_p[:, cube], log_p[:, box])
    log_odds = log_p[:, cube] - log_p[:, box] + cube_odds
    out = log_p.copy()
    out[:, cube] = pair - np.logaddexp(0.0, -log_odds)
    out[:, box] = pair - np.logaddexp(0.0, log_odds)
    return out


def _attribute_log_probabilities(attribute: str, vectors: np.ndarray, text_encoder: TextEncoder,
                                 temperature: float | None = None) -> np.ndarray:
    """[N, values] log-softmax of the cosines to each value's prompt, at `temperature`
    (default `ATTRIBUTE_TEMPERATURE`)."""
    values = ATTRIBUTE_VALUES[attribute]
    cosines = vectors @ text_encoder.encode([ATTRIBUTE_PROMPTS[attribute].format(v) for v in values]).T
    logits = cosines.astype(np.float64) / (temperature or ATTRIBUTE_TEMPERATURE)
    logits -= logits.max(axis=1, keepdims=True)
    return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))


ATTRIBUTE_TEMPERATURE = 0.02
"""Softmax temperature over one attribute's values (cosines of the attribute prompts)."""
ATTRIBUTE_FIT_POWER = 0.5
"""How strongly `attribute_fit` weighs a score: 0 ignores it."""
MEMBERSHIP_TEMPERATURE = 0.04
"""Softmax temperature of `attribute_membership`: the one at which the probabilities of the embedded
region encoder are calibrated (mean log-likelihood of the true shape and size of replayed instances,
scenes outside every benchmark; the sharper ATTRIBUTE_TEMPERATURE is overconfident: a value it gives
0.1 to 0.5 is the true one about a third of the time)."""
GEOMETRY_WEIGHT = 0.5
"""Weight of the points' shape log-likelihood (`shape_geometry`) against the embedding's shape
log-probabilities: the one that ranked relation queries best on oracle replays of scenes outside every
benchmark (seeds 52000-52039; 0.35 to 0.6 within 0.15 points); at 1 the two sources counted as independent
overrule the embedding too often, since both err on the same badly seen instances."""


def attribute_fit(mention: Description | None, vectors: np.ndarray, text_encoder: TextEncoder,
                  shape_evidence: np.ndarray | None = None) -> np.ndarray:
    """[N] in (0, 1]: how surely each instance has every attribute the mention names, one attribute at a
    time, relative to the instance that fits best (1).

    The joint score of 'the medium box' also rewards an instance for a colour or size close to what
    the text happens to embed near; asking attribute by attribute (probability of 'box' among the
    shapes, of 'medium' among the sizes) keeps the unnamed attributes out of the choice. Relative to
    the best fit, so the best-fitting instance keeps its plain cosine score. With `shape_evidence`, the
    shape probabilities also weigh what the points say, as in `attribute_membership`.
    """
    log_fit = np.zeros(len(vectors))
    if mention is None:
        return np.ones(len(vectors))
    for attribute, accepted in (("color", mention.colors), ("shape", (mention.shape,)), ("size", (mention.size,))):
        values = ATTRIBUTE_VALUES[attribute]
        if not accepted or not accepted[0] or any(v not in values for v in accepted):
            continue
        log_p = _attribute_log_probabilities(attribute, vectors, text_encoder)
        if attribute == "shape" and shape_evidence is not None:
            log_p = with_shape_evidence(log_p, shape_evidence)
        log_fit += np.logaddexp.reduce(log_p[:, [values.index(v) for v in accepted]], axis=1)
    return np.exp(ATTRIBUTE_FIT_POWER * (log_fit - log_fit.max()))


def _rank(query: str, parsed: ParsedQuery, vectors: np.ndarray, boxes: Sequence[InstanceRecord],
          text_encoder: TextEncoder, viewer: np.ndarray | None) -> tuple[np.ndarray, str]:
    """Scores of every embedded instance (same order as `vectors`) and how the text was understood."""
    if not parsed.understood:
        q = text_encoder.encode([query])[0]
        return np.clip((1.0 + vectors @ q) / 2.0, 0.0, 1.0), parsed.summary() + "; ranked by the text as typed"
    note = ""
    if any(r.empty for r in parsed.references):
        # 'left of the zorblax': no object to relate to; answer the target alone rather than guess one
        words = " ".join(w for r in parsed.references for w in r.unknown) or "nothing"
        note = f"; the reference of '{parsed.relation}' ('{words}') names no known object, so the relation is ignored"
        parsed = dataclasses.replace(parsed, relation=None, references=())
        if not parsed.understood:
            q = text_encoder.encode([query])[0]
            return np.clip((1.0 + vectors @ q) / 2.0, 0.0, 1.0), parsed.summary() + note
    mentions = _mentions(parsed)
    texts = [t for m in mentions if m is not None for t in m.canonicals()]
    encoded = iter(text_encoder.encode(texts)) if texts else iter(())
    # a mention whose colour word may mean several palette colours scores as the best of them
    per_mention = [None if m is None else
                   np.clip((1.0 + np.max(vectors @ np.stack([next(encoded) for _ in m.canonicals()]).T, axis=1))
                           / 2.0, 0.0, 1.0)
                   for m in mentions]
    target = per_mention[0]
    # the points' outline only weighs a named shape: measuring it (the first read after an instance's points
    # change, about a millisecond each) is left to the queries that name one
    cues = [measured(b.shape_cues) for b in boxes] if any(m is not None and m.shape for m in mentions) else None
    evidence = None if cues is None else shape_log_likelihoods(cues)
    if parsed.relation is None and parsed.superlative is None:
        return target * attribute_fit(mentions[0], vectors, text_encoder, evidence), parsed.summary() + note
    centers, sizes = np.stack([b.box_center for b in boxes]), np.stack([b.box_size for b in boxes])
    geometry = Geometry.from_boxes(centers, sizes, viewer)
    bottoms = heights_above_support(centers, sizes)  # map frame: z = 0 floor
    # unmeasured outlines (no cues) count as seen all round: the proportions keep their full say, as before
    seen_all_round = None if cues is None else np.array([c is None or c.sectors >= MIN_SECTORS for c in cues])
    members = [None if m is None else attribute_membership(m, vectors, text_encoder, sizes, evidence, bottoms,
                                                           seen_all_round) for m in mentions]
    result = relate(parsed, geometry, target, per_mention[1:], target_membership=members[0],
                    reference_membership=members[1:])
    best = float(target.max()) if target is not None else 1.0
    understood = parsed.summary()
    if result.references:
        understood += "; reference IDs " + ", ".join(str(boxes[i].id) for i in result.references)
    if viewer is None and (parsed.relation or parsed.superlative):
        understood += "; directions from the map frame's axes (robot pose unknown)"
    return best * result.weights, understood + note


def _summary(missing: Counter[str], most: int = 3) -> str:
    """'2 not embedded yet; 1 not embedded: ...' for the commonest reasons."""
    parts = [f"{n} {why}" for why, n in missing.most_common(most)]
    if len(missing) > most:
        parts.append(f"{sum(missing.values()) - sum(n for _, n in missing.most_common(most))} for other reasons")
    return "; ".join(parts)
