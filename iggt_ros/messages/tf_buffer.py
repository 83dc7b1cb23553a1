"""A small TF buffer: /tf and /tf_static in, camera poses at image stamps out.

On a robot the node uses tf2_ros; the replay, and the node where tf2_ros is missing, use this
buffer instead. It follows tf2's semantics where they matter for cameras: a tree in which each
frame has one parent, static transforms valid at every time, dynamic transforms interpolated
between the two samples around the requested stamp (linear translation, slerp rotation), lookups
through the common ancestor of two frames, and a bounded cache so memory stays flat on long runs.
Failures raise a `TransformError` subclass whose message names the frames and times involved.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from iggt_ros.messages.message import NS_PER_S, stamp_ns
from iggt_ros.spatial import interpolate_transform, invert, transform_from

log = logging.getLogger(__name__)


class TransformError(LookupError):
    """A transform cannot be looked up."""


class InvalidTransform(ValueError):
    """A received transform that cannot be used (non-finite values, a missing or repeated frame name)."""


class FrameNotFound(TransformError):
    """A frame never appeared in any transform."""


class NotConnected(TransformError):
    """Both frames exist but belong to different trees."""


class ExtrapolationError(TransformError):
    """The requested time is outside the span of the received samples (too old or not yet received)."""


@dataclass
class _Edge:
    """Transforms of one child frame in its parent: `parent_from_child` samples sorted by stamp."""

    parent: str
    static: bool
    stamps: list[int] = field(default_factory=list)
    matrices: list[np.ndarray] = field(default_factory=list)


def _seconds(ns: int) -> str:
    return f"{ns / NS_PER_S:.3f} s"


@dataclass
class TransformBuffer:
    """Stamped transforms between named frames, looked up at arbitrary stamps.

    `cache_time_s` bounds how far back dynamic transforms are kept (tf2's default is 10 s);
    `tolerance_s` lets a lookup slightly past the newest (or before the oldest) sample use that
    sample instead of failing, which absorbs the usual few-millisecond lag of /tf behind images.
    """

    cache_time_s: float = 10.0
    tolerance_s: float = 0.0
    dropped_old: int = 0
    """Dynamic samples ignored because they were older than the cache (e.g. a bag that looped)."""
    invalid: int = 0
    """Transforms refused by `add_message` (non-finite values, bad frame names)."""
    _edges: dict[str, _Edge] = field(default_factory=dict, repr=False)

    # ---------------------------------------------------------------------------------------------
    # input

    def set_transform(self, parent: str, child: str, stamp_ns: int, parent_from_child: np.ndarray,
                      static: bool = False) -> bool:
        """Add one transform; returns False when it was ignored as older than the cache."""
        parent, child = parent.lstrip("/"), child.lstrip("/")
        if not parent or not child or parent == child:
            raise InvalidTransform(f"transform needs two different, non-empty frames (got '{parent}' -> '{child}')")
        matrix = np.asarray(parent_from_child, dtype=np.float64).reshape(4, 4)
        if not np.all(np.isfinite(matrix)):
            raise InvalidTransform(f"transform '{parent}' -> '{child}' has non-finite values (NaN or infinity in "
                                   "its translation or rotation, or a zero quaternion)")
        edge = self._edges.get(child)
        if edge is None or edge.parent != parent or edge.static != static:
            edge = _Edge(parent=parent, static=static)  # a new parent replaces the old one, as in tf2
            self._edges[child] = edge
        if static:
            edge.stamps, edge.matrices = [int(stamp_ns)], [matrix]
            return True
        stamp = int(stamp_ns)
        cache_ns = int(self.cache_time_s * NS_PER_S)
        if edge.stamps and stamp < edge.stamps[-1] - cache_ns:
            self.dropped_old += 1
            return False
        i = bisect.bisect_left(edge.stamps, stamp)
        if i < len(edge.stamps) and edge.stamps[i] == stamp:
            edge.matrices[i] = matrix
        else:
            edge.stamps.insert(i, stamp)
            edge.matrices.insert(i, matrix)
        keep_from = bisect.bisect_left(edge.stamps, edge.stamps[-1] - cache_ns)
        if keep_from:
            del edge.stamps[:keep_from]
            del edge.matrices[:keep_from]
        return True

    def add_message(self, msg: Any, static: bool = False,
                    on_invalid: Callable[[InvalidTransform, int], object] | None = None) -> int:
        """Add every transform of a tf2_msgs/TFMessage (rclpy or rosbags); returns how many were kept.

        A transform that cannot be used (`InvalidTransform`) is skipped on its own, as tf2 does, and
        handed to `on_invalid(error, stamp_ns)` (the caller names the topic and counts it); without
        a callback it is logged. The other transforms of the message are kept.
        """
        kept = 0
        for t in msg.transforms:
            stamp = stamp_ns(t.header.stamp)
            try:
                tr, rot = t.transform.translation, t.transform.rotation
                with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
                    matrix = transform_from((tr.x, tr.y, tr.z), (rot.x, rot.y, rot.z, rot.w))
                kept += self.set_transform(t.header.frame_id, t.child_frame_id, stamp, matrix, static)
            except InvalidTransform as exc:
                self.invalid += 1
                if on_invalid is not None:
                    on_invalid(exc, stamp)
                else:
                    log.warning("TF at %s: %s; ignored", _seconds(stamp), exc)
        return kept

    def clear(self, dynamic_only: bool = True) -> None:
        """Forget dynamic transforms (and static ones unless `dynamic_only`), e.g. when time jumps back."""
        self._edges = {c: e for c, e in self._edges.items() if dynamic_only and e.static}
        self.dropped_old = 0

    # ---------------------------------------------------------------------------------------------
    # queries

    @property
    def frames(self) -> set[str]:
        return set(self._edges) | {e.parent for e in self._edges.values()}

    def can_transform(self, target: str, source: str, stamp_ns: int | None = None) -> bool:
        try:
            self.lookup(target, source, stamp_ns)
        except TransformError:
            return False
        return True

    def lookup(self, target: str, source: str, stamp_ns: int | None = None) -> np.ndarray:
        """4x4 `target_from_source` at `stamp_ns` (None or 0: the latest time all links share)."""
        target, source = target.lstrip("/"), source.lstrip("/")
        for frame in (target, source):
            if frame not in self.frames:
                known = ", ".join(sorted(self.frames)) or "none yet"
                raise FrameNotFound(f"frame '{frame}' does not exist in the TF tree (known frames: {known})")
        if target == source:
            return np.eye(4)
        up_source = self._path_to_root(source)
        up_target = self._path_to_root(target)
        target_chain = [target] + [self._edges[c].parent for c in up_target]
        source_chain = [source] + [self._edges[c].parent for c in up_source]
        common = next((f for f in source_chain if f in set(target_chain)), None)
        if common is None:
            raise NotConnected(f"cannot transform '{source}' to '{target}': they are in different TF trees "
                               f"(roots '{source_chain[-1]}' and '{target_chain[-1]}')")
        edges = up_source[: source_chain.index(common)] + up_target[: target_chain.index(common)]
        if stamp_ns is None or stamp_ns == 0:
            stamp_ns = self._latest_common(edges)
        common_from_source = self._compose(up_source[: source_chain.index(common)], stamp_ns, target, source)
        common_from_target = self._compose(up_target[: target_chain.index(common)], stamp_ns, target, source)
        return invert(common_from_target) @ common_from_source

    # ---------------------------------------------------------------------------------------------

    def _path_to_root(self, frame: str) -> list[str]:
        """Child frames from `frame` up to the root (each is the key of one edge)."""
        path, seen = [], {frame}
        while frame in self._edges:
            path.append(frame)
            frame = self._edges[frame].parent
            if frame in seen:
                raise TransformError(f"the TF tree has a loop through '{frame}'")
            seen.add(frame)
        return path

    def _latest_common(self, children: list[str]) -> int:
        dynamic = [self._edges[c].stamps[-1] for c in children if not self._edges[c].static]
        return min(dynamic) if dynamic else 0

    def _compose(self, children: list[str], stamp: int, target: str, source: str) -> np.ndarray:
        """`top_from_bottom` of the chain of `children` (bottom first) at `stamp`."""
        out = np.eye(4)
        for child in children:
            out = self._sample(child, stamp, target, source) @ out
        return out

    def _sample(self, child: str, stamp: int, target: str, source: str) -> np.ndarray:
        edge = self._edges[child]
        if edge.static:
            return edge.matrices[0]
        stamps = edge.stamps
        tol = int(self.tolerance_s * NS_PER_S)
        if stamp < stamps[0] - tol or stamp > stamps[-1] + tol:
            where = "before the oldest" if stamp < stamps[0] else "after the newest"
            gap = stamps[0] - stamp if stamp < stamps[0] else stamp - stamps[-1]
            raise ExtrapolationError(
                f"lookup '{source}' -> '{target}' at {_seconds(stamp)}: transform '{edge.parent}' -> '{child}' "
                f"is known from {_seconds(stamps[0])} to {_seconds(stamps[-1])}; the requested time is "
                f"{_seconds(gap)} {where} sample (cache {self.cache_time_s:g} s, tolerance {self.tolerance_s:g} s)")
        if stamp <= stamps[0]:
            return edge.matrices[0]
        if stamp >= stamps[-1]:
            return edge.matrices[-1]
        i = bisect.bisect_right(stamps, stamp)
        t0, t1 = stamps[i - 1], stamps[i]
        if t0 == stamp:
            return edge.matrices[i - 1]
        return interpolate_transform(edge.matrices[i - 1], edge.matrices[i], (stamp - t0) / (t1 - t0))
