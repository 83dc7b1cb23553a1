"""The object map's bounds: what a map that runs for hours keeps, and what it lets go.

Policy (``mapping`` keys), applied after every window once the window's detections have joined the map:

* ``max_points_per_object``: each instance keeps at most this many voxels; the ones observed longest
  ago are dropped first (`object_map`).
* ``max_lost_age_s``: a lost instance (``tracking.lost_windows`` windows unseen) that has not been seen
  for this many seconds of input, measured on message stamps, is removed. An instance loaded from a
  saved map counts its age from the window it was loaded in, not from when it was saved, so a map
  loaded after a long stop is not emptied at once. 0 turns the age rule off.
* Unconfirmed: an instance lost before it was ever confirmed (detected in fewer than
  ``tracking.confirm_windows`` windows) is removed once it has been unseen for
  ``UNCONFIRMED_LOST_AGE_S`` seconds of input: a one-window blip (a speck of a wall, a reflection) is
  not an object to remember for an hour, but an object a panning camera glimpsed at the edge of one
  window and sees again on the way back keeps its ID (removed at once, it came back under a new
  one). Counted with the removals by age.
* ``max_instances``: when the map holds more, instances are removed until it fits: never one detected
  in the current window (a confirmed instance in view always stays), tentative ones before confirmed
  ones, and among them the least recently seen first. When every instance is in view, the map stays
  above the bound for that window rather than remove an object in view.
* ``tracking.forget_windows`` (0 by default) can in addition forget lost instances after a number of
  windows; it is the tracker's rule, kept for short sequences.

Removed instances leave the tracker and the map together, and their IDs may be handed out again
later (IDs are uint16).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from iggt_ros.config import MappingConfig
from iggt_ros.perception.records import TrackState

UNCONFIRMED_LOST_AGE_S = 10.0
"""Seconds of input an instance lost before it was confirmed stays in the map (see the module policy)."""


@dataclass(frozen=True)
class Candidate:
    """What the policy needs to know about one instance."""

    id: int
    state: TrackState
    last_seen_ns: int
    in_view: bool
    """Detected in the current window."""
    confirmed: bool = True
    """Confirmed at some point (a lost instance may have been tentative when it was lost)."""


@dataclass(frozen=True)
class MapSize:
    """The map's size, for /diagnostics and the soak benchmark."""

    instances: int
    confirmed: int
    lost: int
    points: int
    removed_by_age: int
    removed_by_count: int


def select_removals(candidates: Iterable[Candidate], config: MappingConfig, now_ns: int,
                    age_from_ns: dict[int, int] | None = None) -> tuple[list[int], list[int]]:
    """IDs to remove: (by age, by count), by the module's policy.

    age_from_ns: per instance, a stamp its age counts from when later than its last sighting (loaded maps).
    """
    items = list(candidates)
    age_from_ns = age_from_ns or {}
    grace_ns = int(UNCONFIRMED_LOST_AGE_S * 1e9)
    by_age = [c.id for c in items if c.state == TrackState.LOST and not c.in_view and not c.confirmed
              and now_ns - max(c.last_seen_ns, age_from_ns.get(c.id, 0)) > grace_ns]
    if config.max_lost_age_s > 0:
        limit_ns = int(config.max_lost_age_s * 1e9)
        for c in items:
            seen = max(c.last_seen_ns, age_from_ns.get(c.id, 0))
            if c.state == TrackState.LOST and not c.in_view and c.confirmed and now_ns - seen > limit_ns:
                by_age.append(c.id)
    gone = set(by_age)
    remaining = [c for c in items if c.id not in gone]
    excess = len(remaining) - config.max_instances
    by_count: list[int] = []
    if excess > 0:
        removable = [c for c in remaining if not c.in_view]
        removable.sort(key=lambda c: (c.confirmed, max(c.last_seen_ns, age_from_ns.get(c.id, 0)), c.id))
        by_count = [c.id for c in removable[:excess]]
    return by_age, by_count


class MapBounds:
    """Applies the policy to a tracker and its object map; counts what it removed."""

    def __init__(self, config: MappingConfig) -> None:
        self.config = config
        self.age_from_ns: dict[int, int] = {}
        self.removed_by_age = 0
        self.removed_by_count = 0

    def loaded(self, ids: Iterable[int], stamp_ns: int) -> None:
        """Instances of a saved map joined the map at `stamp_ns`: their age counts from there."""
        for i in ids:
            self.age_from_ns[int(i)] = int(stamp_ns)

    def apply(self, tracker, omap, in_view: set[int], now_ns: int) -> list[int]:
        """Remove what the policy selects from `tracker` (an `InstanceTracker`) and `omap`; return the IDs."""
        confirm = tracker.config.confirm_windows
        candidates = [Candidate(t.id, t.state, t.last_seen_ns, t.id in in_view,
                                t.state == TrackState.CONFIRMED or t.hits >= confirm)
                      for t in tracker.tracks.values()]
        by_age, by_count = select_removals(candidates, self.config, now_ns, self.age_from_ns)
        removed = by_age + by_count
        if removed:
            tracker.forget(removed)
            for i in removed:
                omap.remove(i)
                self.age_from_ns.pop(i, None)
            self.removed_by_age += len(by_age)
            self.removed_by_count += len(by_count)
        for i in [i for i in self.age_from_ns if i not in tracker.tracks]:
            del self.age_from_ns[i]
        return removed
