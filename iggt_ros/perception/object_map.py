"""The object map: what the robot knows about every tracked instance, in the world frame.

Per instance: a bounded, voxel-downsampled point set with colours, its centroid, a gravity-aligned
oriented box (yaw about world z, size along the box axes), views and windows seen, first and last
seen stamps, and the label and score the query side gives it (instance embeddings live in the
query index, `iggt_ros.vlm.query_index`, not here). Sizes are in world units: metres when the frame
is metric (TF or rig), the model's unit otherwise.

Rules:

* Accumulation. Each window adds the instance's points to its voxel set (``mapping.voxel_size_m``);
  a voxel observed again takes the newest observation, so slow drift does not smear the object.
  Above ``mapping.max_points_per_object`` voxels, the ones observed longest ago are dropped first.
* Merge. Two instances are merged into the older ID when they were never detected as separate
  instances in the same window (co-visible objects are different objects: identical duplicates side
  by side stay apart) and at least half of the smaller one's voxels lie on the larger's surface
  (`near_fraction`; `reidentify` has the rule). This repairs an object that came back under a new ID
  because re-identification missed it. The merged
  instance keeps the earlier first-seen stamp, the union of the voxels and the summed counts, and
  a label when the kept instance has none.
* Split. The map never splits an instance on its own: when clustering separates what one ID covered,
  the tracker gives the new part its own ID, and the old ID keeps what it matches. Removed tracks
  (the map's bounds, `map_bounds`, or ``tracking.forget_windows``) are removed from the map with them.
* Restore. Instances of a saved map (`map_store`) come back with their voxels, counts, stamps and
  label; their voxels count as the oldest, so new observations replace them first.
* Labels. `set_label` stores a label and score; the query side writes them as instance embeddings
  change, and they survive merges.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import cKDTree

from iggt_ros.config import MappingConfig
from iggt_ros.perception import pixel_kernels
from iggt_ros.perception.outline import PendingCues, ShapeCues
from iggt_ros.perception.records import TrackState

log = logging.getLogger(__name__)

_OFFSET = 1 << 20  # voxel coordinates are packed into 21 bits per axis


@dataclass
class ObjectInstance:
    """Everything published and queried about one instance (a copy: safe to hold in any thread)."""

    id: int
    state: TrackState
    centroid: np.ndarray
    """[3] mean of the voxel points."""
    box_center: np.ndarray
    box_size: np.ndarray
    """[3] size along the box's x (yaw direction), y and world z."""
    box_yaw: float
    """Rotation of the box about world z, radians."""
    num_points: int
    views_seen: int
    windows_seen: int
    first_seen_ns: int
    last_seen_ns: int
    label: str = ""
    score: float = 0.0
    label_reason: str = ""
    """Why there is no label (empty when labelled). Not kept by the map: the reader that knows it (the
    query side) fills it in on the copy it publishes."""
    shape_cues: ShapeCues | PendingCues | None = None
    """What the voxels' outline says about the shape (`perception.outline`), for queries that name one; read it
    with `outline.measured` (it is measured at the first read)."""


@dataclass
class _Entry:
    keys: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.float32))
    colors: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.uint8))
    age: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    """Window index at which each voxel was last observed."""
    geometry: tuple[np.ndarray, np.ndarray, np.ndarray, float, PendingCues] | None = None
    """(centroid, box centre, box size, yaw, outline cues) of `points`, computed at the first read after they
    changed (the cues at the first read of them): most instances are not seen in a given window, and their box
    percentiles were most of the map's time."""
    bounds: tuple[np.ndarray, np.ndarray] | None = None
    """(min, max) corner of `points`, computed at the first read after they changed (the proximity test's filter)."""
    state: TrackState = TrackState.TENTATIVE
    views_seen: int = 0
    windows_seen: int = 0
    first_seen_ns: int = 0
    last_seen_ns: int = 0
    label: str = ""
    score: float = 0.0


def voxel_keys(points: np.ndarray, voxel: float) -> np.ndarray:
    """Packed int64 voxel index per point."""
    pts = np.asarray(points)
    if pixel_kernels.AVAILABLE and pts.dtype in (np.float32, np.float64) and pts.ndim == 2 and pts.shape[1] == 3:
        return pixel_kernels.voxel_keys(pts, float(voxel), _OFFSET)
    q = np.floor(np.asarray(points, np.float64) / voxel).astype(np.int64) + _OFFSET
    q = np.clip(q, 0, 2 * _OFFSET - 1)
    return (q[:, 0] << 42) | (q[:, 1] << 21) | q[:, 2]


def _first_of_each(keys: np.ndarray) -> np.ndarray:
    """Ascending indices of the first occurrence of each distinct key."""
    if pixel_kernels.AVAILABLE:
        return pixel_kernels.first_of_each_key(keys)
    _, idx = np.unique(keys, return_index=True)
    return np.sort(idx)


def first_per_voxel(points: np.ndarray, voxel: float) -> np.ndarray:
    """Ascending indices of the first point in each occupied voxel."""
    return _first_of_each(voxel_keys(points, voxel))


def voxel_downsample(points: np.ndarray, voxel: float, *arrays: np.ndarray,
                     keep: str = "first") -> tuple[np.ndarray, ...]:
    """One point per voxel (the first or last occurrence), with the matching rows of `arrays`, in their order."""
    if len(points) == 0:
        return (np.zeros(0, np.int64), points, *arrays)
    keys = voxel_keys(points, voxel)
    if keep == "last":
        idx = (len(keys) - 1 - _first_of_each(np.ascontiguousarray(keys[::-1])))[::-1]
    else:
        idx = _first_of_each(keys)
    return (keys[idx], points[idx], *(a[idx] for a in arrays))


_FOOTPRINT_DIRECTIONS = np.stack([np.cos(np.linspace(0, 2 * np.pi, 32, endpoint=False)),
                                  np.sin(np.linspace(0, 2 * np.pi, 32, endpoint=False))]).astype(np.float32)
"""Directions whose extreme points outline a footprint (its convex hull, to within 360/32 degrees)."""


def _min_area_yaw(xy: np.ndarray) -> float | None:
    """Yaw of the smallest-area rectangle around centred footprint points, x along its longer side; None
    when the footprint is a line or a point.

    The smallest rectangle has a side along an edge of the convex hull, so only the hull's edge
    directions are tried. Why not the main axis of the points: the points are the surfaces seen so far,
    and their main axis follows whichever faces the cameras saw (a box seen on two faces leans its axis
    towards the larger one), which turns the box and moves its centre by centimetres; the sides of the
    smallest rectangle lie along the faces that were seen."""
    extreme = np.argmax(xy.astype(np.float32) @ _FOOTPRINT_DIRECTIONS, axis=0)  # hull vertices, in angular order
    extreme = extreme[np.r_[True, extreme[1:] != extreme[:-1]]]
    if len(extreme) > 1 and extreme[0] == extreme[-1]:
        extreme = extreme[:-1]
    if len(extreme) < 3:
        return None
    hull = xy[extreme]
    edges = np.roll(hull, -1, axis=0) - hull
    angles = np.mod(np.arctan2(edges[:, 1], edges[:, 0]), np.pi / 2)
    c, s = np.cos(angles), np.sin(angles)
    along = np.ptp(hull @ np.stack([c, s]), axis=0)
    across = np.ptp(hull @ np.stack([-s, c]), axis=0)
    k = int(np.argmin(along * across))
    return float(angles[k]) + (np.pi / 2 if across[k] > along[k] else 0.0)


def gravity_aligned_box(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(center, size, yaw) of a box upright in z: yaw of the smallest rectangle around the points' footprint
    (`_min_area_yaw`; their main horizontal axis when the footprint is a line), x along its longer side."""
    if len(points) == 0:
        return np.zeros(3), np.zeros(3), 0.0
    pts = np.asarray(points, np.float64)
    xy = pts[:, :2] - pts[:, :2].mean(0)
    yaw = _min_area_yaw(xy) if len(pts) >= 3 else 0.0
    if yaw is None:
        cov = xy.T @ xy / len(pts)
        evals, evecs = np.linalg.eigh(cov)
        major = evecs[:, int(np.argmax(evals))]
        yaw = float(np.arctan2(major[1], major[0]))
    yaw = (yaw + np.pi / 2) % np.pi - np.pi / 2  # a box is symmetric: keep yaw in [-pi/2, pi/2)
    c, s = np.cos(yaw), np.sin(yaw)
    rot = np.array([[c, s], [-s, c]])  # world xy -> box xy
    box = np.empty((len(pts), 3))  # box-frame x, y and world z: one percentile call for all three axes
    box[:, :2] = pts[:, :2] @ rot.T
    box[:, 2] = pts[:, 2]
    if len(pts) > 50:
        (lo_x, lo_y, z_lo), (hi_x, hi_y, z_hi) = np.percentile(box, [1, 99], axis=0)
    else:
        (lo_x, lo_y, z_lo), (hi_x, hi_y, z_hi) = box.min(0), box.max(0)
    lo, hi = np.array([lo_x, lo_y]), np.array([hi_x, hi_y])
    centre_local = (lo + hi) / 2
    centre_xy = centre_local @ rot  # back to world
    center = np.array([centre_xy[0], centre_xy[1], (z_lo + z_hi) / 2])
    size = np.array([hi[0] - lo[0], hi[1] - lo[1], z_hi - z_lo])
    return center, size, yaw


class ObjectMap:
    """Per-instance point sets and attributes; all methods are thread-safe."""

    def __init__(self, config: MappingConfig, seed: int = 0) -> None:
        self.config = config
        self._entries: dict[int, _Entry] = {}
        self._lock = threading.RLock()
        self._rng = np.random.default_rng(seed)
        self.merges = 0

    def __contains__(self, instance_id: int) -> bool:
        return instance_id in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def reset(self) -> None:
        with self._lock:
            self._entries.clear()

    # ------------------------------------------------------------------ writes
    def update(self, instance_id: int, points: np.ndarray, colors: np.ndarray, views: int, stamp_ns: int,
               window: int, state: TrackState = TrackState.TENTATIVE) -> None:
        """Fold one window's observation of an instance into its voxel set."""
        pts = np.asarray(points, np.float32).reshape(-1, 3)
        cols = np.asarray(colors, np.uint8).reshape(-1, 3)
        ok = np.isfinite(pts).all(1)
        pts, cols = pts[ok], cols[ok]
        with self._lock:
            entry = self._entries.get(instance_id)
            if entry is None:
                entry = self._entries[instance_id] = _Entry(first_seen_ns=stamp_ns)
            entry.state = state
            entry.views_seen += int(views)
            entry.windows_seen += 1
            entry.first_seen_ns = min(entry.first_seen_ns, stamp_ns) if entry.first_seen_ns else stamp_ns
            entry.last_seen_ns = max(entry.last_seen_ns, stamp_ns)
            if len(pts) == 0:
                return
            self._store(entry, np.concatenate([entry.points, pts]), np.concatenate([entry.colors, cols]),
                        np.concatenate([entry.age, np.full(len(pts), window, np.int64)]))

    def _store(self, entry: _Entry, pts: np.ndarray, cols: np.ndarray, age: np.ndarray) -> None:
        """Voxel-downsample (later rows win) and bound, dropping the oldest voxels first."""
        cfg = self.config
        keys, pts, cols, age = voxel_downsample(pts, cfg.voxel_size_m, cols, age, keep="last")
        if len(keys) > cfg.max_points_per_object:
            order = np.argsort(-age - self._rng.random(len(age)) * 0.5, kind="stable")
            keep = np.sort(order[: cfg.max_points_per_object])
            keys, pts, cols, age = keys[keep], pts[keep], cols[keep], age[keep]
        entry.keys, entry.points, entry.colors, entry.age = keys, pts, cols, age
        entry.geometry = None
        entry.bounds = None

    def restore(self, instance_id: int, points: np.ndarray, colors: np.ndarray, state: TrackState, *,
                views_seen: int, windows_seen: int, first_seen_ns: int, last_seen_ns: int, label: str = "",
                score: float = 0.0) -> None:
        """Put back an instance of a saved map (replaces one of the same ID)."""
        pts = np.asarray(points, np.float32).reshape(-1, 3)
        cols = np.asarray(colors, np.uint8).reshape(-1, 3)
        with self._lock:
            entry = self._entries[instance_id] = _Entry(
                state=state, views_seen=int(views_seen), windows_seen=int(windows_seen),
                first_seen_ns=int(first_seen_ns), last_seen_ns=int(last_seen_ns), label=label, score=float(score))
            self._store(entry, pts, cols, np.zeros(len(pts), np.int64))

    def total_points(self) -> int:
        """Voxels held over all instances (the map's memory is about 30 bytes per voxel)."""
        with self._lock:
            return sum(len(e.points) for e in self._entries.values())

    def set_state(self, instance_id: int, state: TrackState) -> None:
        with self._lock:
            if instance_id in self._entries:
                self._entries[instance_id].state = state

    def remove(self, instance_id: int) -> None:
        with self._lock:
            self._entries.pop(instance_id, None)

    def set_label(self, instance_id: int, label: str, score: float) -> None:
        with self._lock:
            if instance_id in self._entries:
                self._entries[instance_id].label = label
                self._entries[instance_id].score = float(score)

    def overlap(self, a: int, b: int) -> float:
        """Shared voxels over the smaller instance's voxel count (0 when either is empty)."""
        with self._lock:
            ea, eb = self._entries.get(a), self._entries.get(b)
            if ea is None or eb is None or len(ea.keys) == 0 or len(eb.keys) == 0:
                return 0.0
            shared = np.intersect1d(ea.keys, eb.keys, assume_unique=True).size
            return shared / min(len(ea.keys), len(eb.keys))

    def near_fraction(self, a: int, b: int, distance: float) -> float:
        """Share of the smaller instance's voxels within `distance` of the other's (0 when either is empty).

        Two views of one object from different places give surface points a voxel or two apart, rarely
        in the very same voxel (`overlap`); this counts them as the same surface."""
        with self._lock:
            ea, eb = self._entries.get(a), self._entries.get(b)
            if ea is None or eb is None or len(ea.points) == 0 or len(eb.points) == 0:
                return 0.0
            (lo_a, hi_a), (lo_b, hi_b) = self._bounds(ea), self._bounds(eb)
            if np.any(lo_a > hi_b + distance) or np.any(lo_b > hi_a + distance):
                return 0.0
            small, large = (ea, eb) if len(ea.points) <= len(eb.points) else (eb, ea)
            near = cKDTree(large.points).query(small.points, k=1, distance_upper_bound=distance)[0]
            return float(np.count_nonzero(np.isfinite(near))) / len(small.points)

    @staticmethod
    def _bounds(entry: _Entry) -> tuple[np.ndarray, np.ndarray]:
        if entry.bounds is None:
            entry.bounds = (entry.points.min(0), entry.points.max(0))
        return entry.bounds

    def merge(self, keep: int, drop: int) -> None:
        """Fold instance `drop` into `keep` (see the module rules)."""
        with self._lock:
            ek, ed = self._entries.get(keep), self._entries.pop(drop, None)
            if ek is None or ed is None:
                return
            first = min(ek.first_seen_ns, ed.first_seen_ns)
            views, windows = ek.views_seen + ed.views_seen, ek.windows_seen + ed.windows_seen
            # drop's voxels first so that keep's observation wins where they coincide
            self._store(ek, np.concatenate([ed.points, ek.points]), np.concatenate([ed.colors, ek.colors]),
                        np.concatenate([ed.age, ek.age]))
            ek.first_seen_ns, ek.views_seen, ek.windows_seen = first, views, windows
            ek.last_seen_ns = max(ek.last_seen_ns, ed.last_seen_ns)
            if not ek.label and ed.label:
                ek.label, ek.score = ed.label, ed.score
            self.merges += 1
            log.info("instance %d merged into %d (same voxels, never seen apart)", drop, keep)

    # ------------------------------------------------------------------ reads
    def points(self, instance_id: int) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            e = self._entries[instance_id]
            return e.points.copy(), e.colors.copy()

    def extent(self, instance_id: int) -> tuple[np.ndarray, np.ndarray]:
        """(centre, size) of the instance's voxels as the tracker measures a detection: the median point and
        the 5th to 95th percentile range along each world axis."""
        with self._lock:
            pts = self._entries[instance_id].points
            if len(pts) == 0:
                return np.zeros(3), np.zeros(3)
            lo, mid, hi = np.percentile(pts[:: max(1, len(pts) // 2000)], [5, 50, 95], axis=0)
            return mid.astype(np.float64), (hi - lo).astype(np.float64)

    def instance(self, instance_id: int) -> ObjectInstance:
        with self._lock:
            return self._describe(instance_id, self._entries[instance_id])

    def instances(self) -> list[ObjectInstance]:
        """Copies of all instances, sorted by ID."""
        with self._lock:
            return [self._describe(i, e) for i, e in sorted(self._entries.items())]

    @staticmethod
    def _describe(instance_id: int, e: _Entry) -> ObjectInstance:
        if e.geometry is None:  # points are only replaced (in _store), never changed in place
            centroid = e.points.mean(0).astype(np.float64) if len(e.points) else np.zeros(3)
            e.geometry = (centroid, *gravity_aligned_box(e.points), PendingCues(e.points))
        centroid, center, size, yaw, cues = e.geometry
        return ObjectInstance(
            id=int(instance_id), state=e.state, centroid=centroid.copy(), box_center=center.copy(),
            box_size=size.copy(), box_yaw=yaw,
            num_points=int(len(e.points)), views_seen=e.views_seen, windows_seen=e.windows_seen,
            first_seen_ns=e.first_seen_ns, last_seen_ns=e.last_seen_ns,
            label=e.label, score=e.score, shape_cues=cues)
