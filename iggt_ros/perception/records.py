"""One tracked instance as every consumer outside the object map sees it.

The message layouts (one row of InstanceArray, a Detection3D, a marker), the query side (text
queries, saved query state) and the replay all take the same few numbers of a map instance:
its ID, box, centroid, state code and bookkeeping. One record and one converter keep them from
drifting apart; all of them import it from here under this one name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from iggt_ros.perception.object_map import ObjectInstance
    from iggt_ros.perception.outline import PendingCues, ShapeCues

class TrackState(IntEnum):
    """State of a tracked instance: the tracker, the object map and Instance.state (msg/Instance.msg) share it."""

    TENTATIVE = 0
    """Seen in fewer than tracking.confirm_windows windows."""
    CONFIRMED = 1
    LOST = 2
    """Not seen for tracking.lost_windows windows; kept (and re-identifiable) until forgotten."""


STATE_TENTATIVE = TrackState.TENTATIVE
STATE_CONFIRMED = TrackState.CONFIRMED
STATE_LOST = TrackState.LOST

LABEL_REASON = "label_reason"
"""Attribute key of an unlabelled instance: why it has no label (e.g. "not embedded yet")."""


@dataclass
class InstanceRecord:
    """One tracked instance in the output frame (one row of InstanceArray)."""

    id: int
    centroid: np.ndarray
    """[3] metres."""
    box_center: np.ndarray
    """[3] metres."""
    box_size: np.ndarray
    """[3] full extents along the box axes, metres."""
    box_yaw: float = 0.0
    """Box rotation about the output frame's z axis, radians (boxes are gravity-aligned)."""
    state: int = STATE_CONFIRMED
    """STATE_TENTATIVE, STATE_CONFIRMED or STATE_LOST (as the Instance message)."""
    label: str = ""
    score: float = 0.0
    point_count: int = 0
    views_seen: int = 0
    first_seen_ns: int = 0
    last_seen_ns: int = 0
    attributes: dict[str, str] = field(default_factory=dict)
    embedding: np.ndarray | None = None
    """[D] unit vector from the region encoder; None until the instance has been embedded (query side only)."""
    shape_cues: ShapeCues | PendingCues | None = None
    """What the instance's points say about its shape (`perception.outline`; read it with
    `outline.measured`); None when unknown."""


def instance_record(inst: ObjectInstance, embedding: np.ndarray | None = None) -> InstanceRecord:
    """The record of one object-map instance.

    An instance without a label carries the reason as the `label_reason` attribute when one is known.
    """
    reason = "" if inst.label else inst.label_reason
    return InstanceRecord(
        id=int(inst.id), centroid=np.asarray(inst.centroid, np.float64),
        box_center=np.asarray(inst.box_center, np.float64), box_size=np.asarray(inst.box_size, np.float64),
        box_yaw=float(inst.box_yaw), state=int(inst.state), label=inst.label,
        score=float(inst.score), point_count=int(inst.num_points), views_seen=int(inst.views_seen),
        first_seen_ns=int(inst.first_seen_ns), last_seen_ns=int(inst.last_seen_ns), embedding=embedding,
        shape_cues=inst.shape_cues, attributes={LABEL_REASON: reason} if reason else {})
