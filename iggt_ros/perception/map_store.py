"""Saved maps: the object map and its tracks in one file that a restarted node loads and continues from.

File format (``FORMAT_VERSION`` 1): a numpy ``.npz`` archive read with ``allow_pickle=False``, so
loading a file never runs anything from it. Entries:

* ``header``: UTF-8 JSON (as uint8) with ``format`` ("iggt_ros.map"), ``version``, ``frame_id`` (the
  frame every coordinate is in), ``stamp_ns`` and ``window_index`` of the last window in the map,
  ``next_id`` (the next new instance ID), ``voxel_size_m``, ``saved_unix_ns``, one record per instance
  (ID, state, label and score, views and windows seen, first and last seen stamps, gravity-aligned
  box) and ``sha256``, a digest of every array below (name, dtype, shape, bytes).
* ``ids`` [K] int64, ``offsets`` [K+1] int64 (instance k's points are rows offsets[k]:offsets[k+1]),
  ``points`` [N,3] float32 and ``colors`` [N,3] uint8 (the voxel sets), ``prototypes`` [K,C] float32
  (the tracker's instance embedding: mean unit instance feature), ``track_centroids`` and
  ``track_extents`` [K,3] float64 (what the tracker matches against), ``co_visible`` [M,2] int64
  (pairs of instances detected apart in one window: never merged).

Refusals (`MapFileError`, a message that says what to do): a file that is not such an archive, is
truncated or corrupted (zip CRC, digest, inconsistent arrays, non-finite values), another format
version, or (at load, `Pipeline.load_map`) another frame than the node's world frame. Nothing of the
running map changes on a refusal.

Names: requests over DDS (anyone on the domain may call the services) name a map, never a path. A
name is letters, digits, '_', '-' and '.', without '..', at most 100 characters; the file is
``<map_directory>/<name>.npz`` and must resolve inside that directory (a link out of it is refused).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from iggt_ros.perception.object_map import ObjectMap
from iggt_ros.perception.records import TrackState
from iggt_ros.perception.tracking import InstanceTracker, Track

FORMAT = "iggt_ros.map"
FORMAT_VERSION = 1
SUFFIX = ".npz"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")
_ARRAYS = ("ids", "offsets", "points", "colors", "prototypes", "track_centroids", "track_extents", "co_visible")


class MapFileError(ValueError):
    """A map name, file or content that cannot be used; the message says why and what to do."""


@dataclass
class SavedInstance:
    """One instance of a saved map."""

    id: int
    state: TrackState
    points: np.ndarray
    """[n,3] float32 voxel points."""
    colors: np.ndarray
    """[n,3] uint8."""
    prototype: np.ndarray
    """[C] the tracker's unit mean instance feature."""
    track_centroid: np.ndarray
    track_extent: np.ndarray
    views_seen: int
    windows_seen: int
    first_seen_ns: int
    last_seen_ns: int
    label: str = ""
    score: float = 0.0
    box_center: np.ndarray = field(default_factory=lambda: np.zeros(3))
    box_size: np.ndarray = field(default_factory=lambda: np.zeros(3))
    box_yaw: float = 0.0


@dataclass
class SavedMap:
    """Everything a map file holds."""

    frame_id: str
    stamp_ns: int
    window_index: int
    next_id: int
    voxel_size_m: float
    instances: list[SavedInstance]
    co_visible: list[tuple[int, int]] = field(default_factory=list)
    version: int = FORMAT_VERSION
    saved_unix_ns: int = 0

    @property
    def ids(self) -> list[int]:
        return [i.id for i in self.instances]


# ---------------------------------------------------------------------------------------------------- names
def map_path(directory: str | os.PathLike[str], name: str, *, for_writing: bool = False) -> Path:
    """The file of map `name` in `directory`, or a `MapFileError` when the name could leave it."""
    if not isinstance(name, str) or not name:
        raise MapFileError("give a map name (letters, digits, '_', '-', '.'), e.g. 'kitchen'")
    stem = name[: -len(SUFFIX)] if name.endswith(SUFFIX) else name
    if ".." in stem or not _NAME.match(stem):
        raise MapFileError(f"map name {name!r} refused: a name is letters, digits, '_', '-' and '.' (no '/', no "
                           "'..', at most 100 characters) and names a file in mapping.map_directory, never a path")
    base = Path(os.path.expanduser(str(directory)))
    if for_writing:
        try:
            base.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise MapFileError(f"map directory '{base}' cannot be created ({exc}); set mapping.map_directory "
                               "to a writable directory") from exc
    if not base.is_dir():
        raise MapFileError(f"map directory '{base}' does not exist; save a map first or set mapping.map_directory")
    path = base / f"{stem}{SUFFIX}"
    if path.is_symlink() or path.resolve().parent != base.resolve():
        raise MapFileError(f"map {name!r} refused: '{path}' is a link; maps are plain files inside '{base}'")
    return path


def list_maps(directory: str | os.PathLike[str]) -> list[str]:
    """Names of the maps in `directory` (plain files only)."""
    base = Path(os.path.expanduser(str(directory)))
    if not base.is_dir():
        return []
    return sorted(p.name[: -len(SUFFIX)] for p in base.glob(f"*{SUFFIX}")
                  if p.is_file() and not p.is_symlink() and _NAME.match(p.name[: -len(SUFFIX)]))


# ---------------------------------------------------------------------------------------------------- capture
def capture(tracker: InstanceTracker, omap: ObjectMap, frame_id: str, stamp_ns: int, window_index: int,
            voxel_size_m: float) -> SavedMap:
    """A copy of the tracks and the map (the caller keeps both still while this runs)."""
    instances = []
    for tid in sorted(tracker.tracks):
        if tid not in omap:
            continue
        track = tracker.tracks[tid]
        points, colors = omap.points(tid)
        desc = omap.instance(tid)
        instances.append(SavedInstance(
            id=tid, state=track.state, points=points, colors=colors,
            prototype=np.asarray(track.prototype, np.float32), track_centroid=np.asarray(track.centroid, float),
            track_extent=np.asarray(track.extent, float), views_seen=desc.views_seen, windows_seen=desc.windows_seen,
            first_seen_ns=desc.first_seen_ns, last_seen_ns=desc.last_seen_ns, label=desc.label, score=desc.score,
            box_center=desc.box_center, box_size=desc.box_size, box_yaw=desc.box_yaw))
    kept = {i.id for i in instances}
    pairs = sorted({(min(a, b), max(a, b)) for a in kept for b in tracker.tracks[a].co_visible if b in kept})
    used = max(kept, default=0)
    return SavedMap(frame_id, int(stamp_ns), int(window_index), max(tracker.next_id, used + 1), float(voxel_size_m),
                    instances, pairs, saved_unix_ns=time.time_ns())


def restore(saved: SavedMap, tracker: InstanceTracker, omap: ObjectMap, lost_windows: int) -> list[int]:
    """Add the saved instances to `tracker` and `omap` as lost (re-identifiable) instances; return their IDs.

    An instance's ID stays; new IDs continue after the largest one. A loaded instance counts as
    confirmed once seen again (it was an object of the saved map), whatever its saved state.
    """
    confirm = max(tracker.config.confirm_windows, 1)
    tracks = []
    ids = []
    for inst in saved.instances:
        if inst.id in tracker.tracks:  # cannot happen on a fresh tracker; never overwrite a live track
            continue
        proto = np.asarray(inst.prototype, np.float64)
        tracks.append(Track(inst.id, TrackState.LOST, proto / max(float(np.linalg.norm(proto)), 1e-12),
                            np.asarray(inst.track_centroid, float).copy(), np.asarray(inst.track_extent, float).copy(),
                            hits=confirm, misses=lost_windows, first_seen_ns=inst.first_seen_ns,
                            last_seen_ns=inst.last_seen_ns))
        omap.restore(inst.id, inst.points, inst.colors, TrackState.LOST, views_seen=inst.views_seen,
                     windows_seen=inst.windows_seen, first_seen_ns=inst.first_seen_ns, last_seen_ns=inst.last_seen_ns,
                     label=inst.label, score=inst.score)
        ids.append(inst.id)
    by_id = {t.id: t for t in tracks}
    for a, b in saved.co_visible:
        if a in by_id and b in by_id:
            by_id[a].co_visible.add(b)
            by_id[b].co_visible.add(a)
    tracker.restore(tracks, saved.next_id)
    return ids


# ---------------------------------------------------------------------------------------------------- files
def _arrays(saved: SavedMap) -> dict[str, np.ndarray]:
    insts = saved.instances
    counts = [len(i.points) for i in insts]
    dim = max((len(i.prototype) for i in insts), default=0)
    protos = np.zeros((len(insts), dim), np.float32)
    for k, inst in enumerate(insts):
        protos[k, : len(inst.prototype)] = inst.prototype
    return {
        "ids": np.array([i.id for i in insts], np.int64),
        "offsets": np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        "points": (np.concatenate([np.asarray(i.points, np.float32).reshape(-1, 3) for i in insts])
                   if insts else np.zeros((0, 3), np.float32)),
        "colors": (np.concatenate([np.asarray(i.colors, np.uint8).reshape(-1, 3) for i in insts])
                   if insts else np.zeros((0, 3), np.uint8)),
        "prototypes": protos,
        "track_centroids": np.array([i.track_centroid for i in insts], np.float64).reshape(-1, 3),
        "track_extents": np.array([i.track_extent for i in insts], np.float64).reshape(-1, 3),
        "co_visible": np.array(saved.co_visible, np.int64).reshape(-1, 2),
    }


def _digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in _ARRAYS:
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def write_map(saved: SavedMap, path: str | os.PathLike[str]) -> Path:
    """Write `saved` to `path` atomically (a partly written file never replaces a good one)."""
    path = Path(path)
    arrays = _arrays(saved)
    header = {
        "format": FORMAT, "version": FORMAT_VERSION, "frame_id": saved.frame_id, "stamp_ns": int(saved.stamp_ns),
        "window_index": int(saved.window_index), "next_id": int(saved.next_id),
        "voxel_size_m": float(saved.voxel_size_m), "saved_unix_ns": int(saved.saved_unix_ns or time.time_ns()),
        "instances": [{"id": i.id, "state": i.state.name.lower(), "label": i.label, "score": float(i.score),
                       "views_seen": int(i.views_seen), "windows_seen": int(i.windows_seen),
                       "first_seen_ns": int(i.first_seen_ns), "last_seen_ns": int(i.last_seen_ns),
                       "box_center": [float(v) for v in i.box_center], "box_size": [float(v) for v in i.box_size],
                       "box_yaw": float(i.box_yaw)} for i in saved.instances],
        "sha256": _digest(arrays),
    }
    payload = {"header": np.frombuffer(json.dumps(header).encode(), np.uint8), **arrays}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_map(path: str | os.PathLike[str]) -> SavedMap:
    """Read and check a map file; `MapFileError` says why one cannot be used."""
    path = Path(path)
    if not path.is_file():
        raise MapFileError(f"no map file '{path}'; save one first (/iggt/save_map or `iggt-ros map save`)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            names = set(archive.files)
            missing = {"header", *_ARRAYS} - names
            if missing:
                raise MapFileError(f"'{path}' is not an iggt_ros map (missing {', '.join(sorted(missing))})")
            header_bytes = archive["header"]
            arrays = {name: archive[name] for name in _ARRAYS}
    except MapFileError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError, zipfile.LargeZipFile) as exc:
        raise MapFileError(f"'{path}' is corrupted or truncated ({type(exc).__name__}: {exc}); the running map "
                           "is kept; load another map or save this one again") from exc
    try:
        header = json.loads(bytes(header_bytes.astype(np.uint8)).decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MapFileError(f"'{path}' has a corrupted header ({exc}); the running map is kept") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise MapFileError(f"'{path}' is not an iggt_ros map (format {header.get('format')!r})"
                           if isinstance(header, dict) else f"'{path}' is not an iggt_ros map")
    version = header.get("version")
    if version != FORMAT_VERSION:
        raise MapFileError(f"'{path}' is map format version {version}; this iggt_ros reads version "
                           f"{FORMAT_VERSION}: save the map again with this version")
    if header.get("sha256") != _digest(arrays):
        raise MapFileError(f"'{path}' is corrupted: its content does not match the digest in its header; "
                           "the running map is kept")
    try:
        return _decode(header, arrays)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise MapFileError(f"'{path}' is inconsistent ({exc}); the running map is kept") from exc


def _decode(header: dict, arrays: dict[str, np.ndarray]) -> SavedMap:
    records = header["instances"]
    ids, offsets = arrays["ids"], arrays["offsets"]
    points, colors = arrays["points"], arrays["colors"]
    k = len(records)
    if (len(ids) != k or len(offsets) != k + 1 or offsets[0] != 0 or np.any(np.diff(offsets) < 0)
            or offsets[-1] != len(points) or points.shape[1:] != (3,) or colors.shape != points.shape
            or len(arrays["prototypes"]) != k or arrays["track_centroids"].shape != (k, 3)
            or arrays["track_extents"].shape != (k, 3)):
        raise ValueError("array sizes do not agree with the instance records")
    if not (np.isfinite(points).all() and np.isfinite(arrays["prototypes"]).all()
            and np.isfinite(arrays["track_centroids"]).all() and np.isfinite(arrays["track_extents"]).all()):
        raise ValueError("non-finite coordinates")
    if len(set(ids.tolist())) != k or (k and (ids.min() < 1 or ids.max() > 65535)):
        raise ValueError("instance IDs must be distinct, 1..65535")
    instances = []
    for j, rec in enumerate(records):
        if int(rec["id"]) != int(ids[j]):
            raise ValueError(f"record {j} has ID {rec['id']}, the arrays {ids[j]}")
        a, b = int(offsets[j]), int(offsets[j + 1])
        instances.append(SavedInstance(
            id=int(ids[j]), state=TrackState[str(rec["state"]).upper()], points=points[a:b].astype(np.float32),
            colors=colors[a:b].astype(np.uint8), prototype=arrays["prototypes"][j].astype(np.float32),
            track_centroid=arrays["track_centroids"][j].astype(float),
            track_extent=arrays["track_extents"][j].astype(float),
            views_seen=int(rec["views_seen"]), windows_seen=int(rec["windows_seen"]),
            first_seen_ns=int(rec["first_seen_ns"]), last_seen_ns=int(rec["last_seen_ns"]), label=str(rec["label"]),
            score=float(rec["score"]), box_center=np.array(rec["box_center"], float),
            box_size=np.array(rec["box_size"], float), box_yaw=float(rec["box_yaw"])))
    pairs = [(int(a), int(b)) for a, b in arrays["co_visible"].tolist()]
    return SavedMap(str(header["frame_id"]), int(header["stamp_ns"]), int(header["window_index"]),
                    int(header["next_id"]), float(header["voxel_size_m"]), instances, pairs,
                    int(header["version"]), int(header.get("saved_unix_ns", 0)))
