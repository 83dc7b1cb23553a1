"""The saved query state: the last map snapshot of a run, for answering queries afterwards.

A replay calls `save_query_state` at its end; `iggt-ros query` calls `load_query_state`.
Two files with one stem:

`<stem>.json` (UTF-8)::

    {"format": "iggt_ros.query_state", "version": 1,
     "frame_id": "odom", "stamp_ns": 123,
     "embedding_space": "iggt-embedded-minilm-384",   # RegionEncoder.space, "" when none
     "instances": [{"id": 3, "centroid": [x, y, z], "box_center": [x, y, z],
                    "box_size": [sx, sy, sz], "box_yaw": 0.0, "state": 1, "label": "",
                    "score": 0.0, "point_count": 812, "views_seen": 14,
                    "first_seen_ns": 0, "last_seen_ns": 0, "attributes": {"color": "red"},
                    "shape_cues": {"fill": 0.79, "top_taper": 0.98, "bottom_taper": 1.0,
                                   "sectors": 8, "points": 812}}, ...]}

("shape_cues" only where the map measured them, `perception.outline.ShapeCues`; older files lack it.)

`<stem>.npz`: `ids` uint32 [N] and `embeddings` float32 [N, D] for the instances that have one
(N may be smaller than the instance list; missing rows mean "not embedded yet").
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from iggt_ros.perception.outline import ShapeCues, measured
from iggt_ros.perception.records import InstanceRecord

FORMAT = "iggt_ros.query_state"
VERSION = 1
DEFAULT_STEM = "query_state"


class QueryStateError(ValueError):
    """A saved query state is missing or malformed; the message names the file."""


@dataclass
class QueryState:
    instances: list[InstanceRecord]
    """With `embedding` filled in where one was saved."""
    frame_id: str = ""
    stamp_ns: int = 0
    embedding_space: str = ""


def _paths(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """(json, npz) for a directory (files named query_state.*), a .json/.npz path, or a bare stem."""
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / DEFAULT_STEM
    if p.suffix in (".json", ".npz"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".json"), p.with_name(p.name + ".npz")


def save_query_state(path: str | os.PathLike[str], instances: Sequence[InstanceRecord],
                     embeddings: Mapping[int, np.ndarray] | None = None, frame_id: str = "",
                     stamp_ns: int = 0, embedding_space: str = "") -> tuple[Path, Path]:
    """Write the snapshot; an instance's embedding is `instance.embedding`, else `embeddings[id]`.

    `path` is a directory, a stem, or either file's path. Returns the two paths written.
    """
    json_path, npz_path = _paths(path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    records, ids, rows = [], [], []
    for inst in instances:
        records.append({
            "id": int(inst.id),
            "centroid": [float(v) for v in np.asarray(inst.centroid).ravel()[:3]],
            "box_center": [float(v) for v in np.asarray(inst.box_center).ravel()[:3]],
            "box_size": [float(v) for v in np.asarray(inst.box_size).ravel()[:3]],
            "box_yaw": float(inst.box_yaw), "state": int(inst.state), "label": inst.label,
            "score": float(inst.score), "point_count": int(inst.point_count), "views_seen": int(inst.views_seen),
            "first_seen_ns": int(inst.first_seen_ns), "last_seen_ns": int(inst.last_seen_ns),
            "attributes": {str(k): str(v) for k, v in inst.attributes.items()},
        })
        cues = measured(inst.shape_cues)
        if cues is not None:  # NaN (a band too thin to measure) is written as null
            records[-1]["shape_cues"] = {k: (None if v != v else v) for k, v in cues.as_dict().items()}
        vec = inst.embedding if inst.embedding is not None else (embeddings or {}).get(inst.id)
        if vec is not None:
            ids.append(int(inst.id))
            rows.append(np.asarray(vec, dtype=np.float32).ravel())
    doc = {"format": FORMAT, "version": VERSION, "frame_id": frame_id, "stamp_ns": int(stamp_ns),
           "embedding_space": embedding_space, "instances": records}
    json_path.write_text(json.dumps(doc, indent=1))
    dim = rows[0].shape[0] if rows else 0
    emb = np.stack(rows).astype(np.float32) if rows else np.zeros((0, dim), np.float32)
    with open(npz_path, "wb") as f:
        np.savez(f, ids=np.asarray(ids, dtype=np.uint32), embeddings=emb)
    return json_path, npz_path


def _cues(doc: object) -> ShapeCues | None:
    if doc is None:
        return None
    if not isinstance(doc, dict):
        raise TypeError(f"shape_cues must be an object, not {type(doc).__name__}")
    return ShapeCues.from_dict({k: (float("nan") if v is None else v) for k, v in doc.items()})


def load_query_state(path: str | os.PathLike[str]) -> QueryState:
    """Read a snapshot written by `save_query_state` (same path forms)."""
    json_path, npz_path = _paths(path)
    if not json_path.is_file():
        raise QueryStateError(f"no saved query state at '{json_path}'; a replay writes one "
                              f"({DEFAULT_STEM}.json and .npz) into its output directory")
    try:
        doc = json.loads(json_path.read_text())
    except json.JSONDecodeError as exc:
        raise QueryStateError(f"'{json_path}' is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise QueryStateError(f"'{json_path}' is not a saved query state (format must be '{FORMAT}')")
    if int(doc.get("version", 0)) > VERSION:
        raise QueryStateError(f"'{json_path}' has version {doc.get('version')}; this reader knows up to {VERSION}")
    vectors: dict[int, np.ndarray] = {}
    if npz_path.is_file():
        with np.load(npz_path) as data:
            for iid, vec in zip(data["ids"], data["embeddings"], strict=True):
                vectors[int(iid)] = vec.astype(np.float32)
    instances = []
    try:
        for r in doc.get("instances", []):
            iid = int(r["id"])
            instances.append(InstanceRecord(
                id=iid, centroid=np.asarray(r["centroid"], np.float64),
                box_center=np.asarray(r["box_center"], np.float64),
                box_size=np.asarray(r["box_size"], np.float64), box_yaw=float(r.get("box_yaw", 0.0)),
                embedding=vectors.get(iid), state=int(r.get("state", 1)), label=str(r.get("label", "")),
                score=float(r.get("score", 0.0)), point_count=int(r.get("point_count", 0)),
                views_seen=int(r.get("views_seen", 0)), first_seen_ns=int(r.get("first_seen_ns", 0)),
                last_seen_ns=int(r.get("last_seen_ns", 0)), attributes=dict(r.get("attributes", {})),
                shape_cues=_cues(r.get("shape_cues"))))
    except (KeyError, TypeError, ValueError) as exc:
        raise QueryStateError(f"'{json_path}' has a malformed instance record: {exc}") from exc
    return QueryState(instances=instances, frame_id=str(doc.get("frame_id", "")),
                      stamp_ns=int(doc.get("stamp_ns", 0)), embedding_space=str(doc.get("embedding_space", "")))
