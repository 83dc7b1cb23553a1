"""`iggt-ros query`: answer a text query against the last state of a replay.

It ranks exactly as the `/iggt/query` service does (`iggt_ros.vlm.query.answer_query`), on the
snapshot a replay saved with `save_query_state`.
"""

from __future__ import annotations

import argparse
import json
import sys

from iggt_ros.config import ConfigError, load_config
from iggt_ros.vlm.encoders import EncoderUnavailable
from iggt_ros.vlm.query import QueryResult, answer_query
from iggt_ros.vlm.registry import make_text_encoder
from iggt_ros.vlm.state import QueryStateError, load_query_state


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("state", help="replay output directory, or the query_state.json a replay wrote")
    parser.add_argument("text", help="the query, e.g. 'the red cube'")
    parser.add_argument("--max-results", "-k", type=int, default=0,
                        help="return at most this many instances (0 = query.max_results)")
    parser.add_argument("--min-score", type=float, default=0.0,
                        help="drop instances scoring below this, in [0, 1] (0 = query.min_score)")
    parser.add_argument("--config", default=None, help="parameter file (YAML); default: built-in defaults")
    parser.add_argument("--json", action="store_true", help="print the answer as JSON")


def result_to_dict(result: QueryResult) -> dict:
    """A JSON-ready form of a query answer (the same fields as the service response)."""
    return {
        "success": result.success, "message": result.message, "frame_id": result.frame_id,
        "latency_ms": round(result.latency_ms, 3), "understood": result.understood,
        "instances": [{
            "id": r.instance.id, "score": round(r.score, 6),
            "centroid": [float(v) for v in r.instance.centroid],
            "box_center": [float(v) for v in r.instance.box_center],
            "box_size": [float(v) for v in r.instance.box_size],
            "box_yaw": float(r.instance.box_yaw), "label": r.instance.label,
            "attributes": dict(r.instance.attributes),
        } for r in result.ranked],
    }


def format_table(result: QueryResult) -> str:
    lines = [f"{result.message} (frame '{result.frame_id}', {result.latency_ms:.1f} ms)"]
    if result.understood:
        lines.append(f"understood: {result.understood}")
    if result.ranked:
        lines.append(f"{'rank':>4} {'id':>5} {'score':>6}  {'centroid (m)':<24} {'box size (m)':<20} attributes")
        for i, r in enumerate(result.ranked, 1):
            c = " ".join(f"{v:+.2f}" for v in r.instance.centroid)
            s = " ".join(f"{v:.2f}" for v in r.instance.box_size)
            attrs = ",".join(f"{k}={v}" for k, v in sorted(r.instance.attributes.items()))
            lines.append(f"{i:>4} {r.instance.id:>5} {r.score:6.3f}  {c:<24} {s:<20} {attrs}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.config)
        state = load_query_state(args.state)
        encoder = make_text_encoder(cfg.query)
    except (ConfigError, QueryStateError, EncoderUnavailable) as exc:
        print(f"iggt-ros query: {exc}", file=sys.stderr)
        return 2
    result = answer_query(args.text, state.instances, encoder, cfg.query, max_results=args.max_results,
                          min_score=args.min_score, frame_id=state.frame_id,
                          embedding_space=state.embedding_space or None)
    if args.json:
        print(json.dumps(result_to_dict(result), indent=1))
    elif result.success:
        print(format_table(result))
    else:
        print(f"iggt-ros query: {result.message}", file=sys.stderr)
    return 0 if result.success else 1
