"""A long walk through several rooms, rendered on the fly: an hour of input without an hour of files.

The building: ``rooms`` rooms, each a closed box with its own objects (4 to 8, drawn from the seed;
no object is in two rooms), and one corridor without objects that connects them. Each space sits at
its own place in the world frame (space k's origin at x = k * SPACING_M), so a place keeps its
coordinates whenever the robot comes back to it.

The route: corridor, a room, corridor, another room, ... with the next room drawn at random among
the others, so every room is visited again and again (revisits). In each space the robot walks part
of the walkway loop (`trajectory` 'walk' motion: looking ahead, swaying) at ``speed_m_s``: a room
visit covers 0.6 to 1.4 loops, a corridor visit a fifth of one. The renderer draws one closed space
at a time, so a doorway is a cut: the last step in one space is followed by the first in the next
(the poses jump; TF still gives every pose).

Streaming: `iter_long_walk` yields one time step (the views of all cameras) at a time and keeps only
the current visit's poses, so 36,000 steps need no more memory than 100. Instance IDs are global:
room k's objects are numbered after those of rooms 0..k-1 (0 = no object). Stamps follow
`sequence.stamp_ns` at ``rate_hz``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from .render import SceneRenderer
from .rig import make_rig
from .scene import make_scene, walkway_axes
from .sequence import stamp_ns
from .trajectory import make_trajectory
from .types import CameraRig, ObjectSpec, RenderedView, Scene

SPACING_M = 20.0
"""Distance between the origins of neighbouring spaces along world x (no two spaces overlap)."""
CORRIDOR_LOOPS = 0.2
ROOM_LOOPS = (0.6, 1.4)


@dataclass(frozen=True)
class LongWalkSpec:
    """Seed, building, rig and length of a long walk."""

    seed: int = 0
    frames: int = 36_000
    """Time steps (one image per camera each): 36,000 at 10 Hz is one hour."""
    cameras: int = 1
    width: int = 168
    height: int = 112
    rate_hz: float = 10.0
    rooms: int = 4
    speed_m_s: float = 0.3


@dataclass(frozen=True)
class Visit:
    """One stay in one space: steps [start, start + steps)."""

    space: int
    """Room index, or `LongWalk.corridor` for the corridor."""
    start: int
    steps: int
    loops: float


class LongWalk:
    """The building and route of a `LongWalkSpec` (cheap: nothing is rendered until iterated)."""

    def __init__(self, spec: LongWalkSpec) -> None:
        if spec.frames < 1 or spec.rooms < 2 or spec.rate_hz <= 0 or spec.speed_m_s <= 0:
            raise ValueError(f"a long walk needs frames >= 1, rooms >= 2, positive rate and speed: {spec}")
        self.spec = spec
        rng = np.random.default_rng([spec.seed, 22])
        self.spaces: list[Scene] = []
        self.id_offsets: list[int] = []
        offset = 0
        for k in range(spec.rooms):
            scene = make_scene(spec.seed * 100 + k, num_objects=int(rng.integers(4, 9)), room="room")
            self.spaces.append(scene)
            self.id_offsets.append(offset)
            offset += len(scene.objects)
        self.spaces.append(make_scene(spec.seed * 100 + spec.rooms, num_objects=0, room="corridor"))
        self.id_offsets.append(offset)
        self.corridor = spec.rooms
        self.num_objects = offset
        self.rig: CameraRig = make_rig(spec.cameras, spec.width, spec.height)
        self.visits = self._route(rng)

    def _loop_length(self, space: int) -> float:
        a, b = walkway_axes(self.spaces[space].room_size)
        return float(np.pi * (3 * (a + b) - np.sqrt((3 * a + b) * (a + 3 * b))))  # Ramanujan's ellipse perimeter

    def _route(self, rng: np.random.Generator) -> list[Visit]:
        spec = self.spec
        step_m = spec.speed_m_s / spec.rate_hz
        visits: list[Visit] = []
        start, room = 0, -1
        while start < spec.frames:
            if not visits or visits[-1].space != self.corridor:
                space, loops = self.corridor, CORRIDOR_LOOPS
            else:
                choices = [r for r in range(spec.rooms) if r != room]
                room = space = int(rng.choice(choices))
                loops = float(rng.uniform(*ROOM_LOOPS))
            steps = max(2, int(round(loops * self._loop_length(space) / step_m)))
            steps = min(steps, spec.frames - start)
            visits.append(Visit(space, start, steps, loops))
            start += steps
        return visits

    def world_from_space(self, space: int) -> np.ndarray:
        out = np.eye(4)
        out[0, 3] = SPACING_M * space
        return out

    def objects(self) -> list[tuple[int, int, ObjectSpec]]:
        """(global ID, room, object) of every object of the building."""
        return [(self.id_offsets[k] + o.id, k, o) for k in range(self.spec.rooms) for o in self.spaces[k].objects]

    def room_of(self, global_id: int) -> int:
        for gid, room, _ in self.objects():
            if gid == global_id:
                return room
        raise KeyError(global_id)


def iter_long_walk(walk: LongWalk, start_step: int = 0) -> Iterator[list[RenderedView]]:
    """Render the walk step by step from `start_step`: yields the views of every camera at each step."""
    spec = walk.spec
    renderers: dict[int, SceneRenderer] = {}
    rig = walk.rig
    for index, visit in enumerate(walk.visits):
        if visit.start + visit.steps <= start_step:
            continue
        scene = walk.spaces[visit.space]
        rng = np.random.default_rng([spec.seed, index, 5])
        local = make_trajectory(scene, "walk", visit.steps, rng, coverage=visit.loops)
        place = walk.world_from_space(visit.space)
        renderer = renderers.get(visit.space)
        if renderer is None:
            renderer = renderers[visit.space] = SceneRenderer(scene)
        offset = walk.id_offsets[visit.space]
        for j in range(max(0, start_step - visit.start), visit.steps):
            step = visit.start + j
            stamp = stamp_ns(step, spec.rate_hz)
            views = []
            for c, name in enumerate(rig.names):
                local_pose = local[j] @ rig.base_from_camera[c]
                out = renderer.render(rig.intrinsics, local_pose, rig.width, rig.height)
                ids = out.instance_ids.astype(np.uint16)
                ids = np.where(ids > 0, ids + offset, 0).astype(np.uint16)
                views.append(RenderedView(camera=name, stamp_ns=stamp, rgb=out.rgb, depth=out.depth, instance_ids=ids,
                                          intrinsics=rig.intrinsics.copy(), world_from_camera=place @ local_pose))
            yield views


def base_pose_of(views: list[RenderedView], rig: CameraRig) -> np.ndarray:
    """world_from_base of a step (the odom -> base_link transform a robot publishes)."""
    return views[0].world_from_camera @ np.linalg.inv(rig.base_from_camera[0])
