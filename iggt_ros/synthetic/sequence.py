"""Rendered camera sequences: a scene, a rig, a base trajectory and the exact views along it.

`plan_sequence` fixes everything but the pixels (cheap); `iter_steps` renders one time step at a
time, so long or large sequences can be streamed to a bag without holding every image;
`make_sequence` does both and keeps all views.

Time stamps: step t of a sequence at `rate_hz` is stamped START_NS + round(t * 1e9 / rate_hz),
START_NS being 1_700_000_000 s (Nov 2023), so stamps look like real wall-clock times. All cameras
of a step share the stamp (a hardware-triggered rig).

Seeds: the scene, the trajectory's start and direction all derive from `seed`, so the same
arguments give bit-identical sequences; the trajectory uses its own random stream, so changing
the trajectory kind or length does not change the scene.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from .camera_effects import apply_effects
from .render import SceneRenderer
from .rig import make_rig
from .scene import make_scene
from .style import SceneStyle
from .trajectory import make_trajectory
from .types import CameraRig, RenderedView, Scene, SyntheticSequence

START_NS = 1_700_000_000 * 1_000_000_000
TRAJECTORY_STREAM = 1
"""Sub-stream of the seed used for the trajectory (the scene uses the seed itself)."""


def stamp_ns(step: int, rate_hz: float) -> int:
    """Stamp of time step `step` at `rate_hz`, in nanoseconds since the epoch."""
    return START_NS + int(round(step * 1e9 / rate_hz))


@dataclass
class SequencePlan:
    """Everything of a sequence except the rendered images."""

    scene: Scene
    rig: CameraRig
    world_from_base: list[np.ndarray]
    stamps_ns: list[int]
    trajectory: str
    rate_hz: float

    def world_from_camera(self, step: int, camera: int) -> np.ndarray:
        return self.world_from_base[step] @ self.rig.base_from_camera[camera]


def plan_sequence(
    seed: int,
    num_steps: int = 60,
    cameras: int = 1,
    trajectory: str = "orbit",
    width: int = 504,
    height: int = 336,
    rate_hz: float = 10.0,
    num_objects: int | None = None,
    coverage: float = 1.0,
    room: str = "room",
    fov_deg: float = 60.0,
    style: SceneStyle | None = None,
) -> SequencePlan:
    """Scene, rig, base poses and stamps of a sequence (see `make_sequence` for the arguments)."""
    if rate_hz <= 0:
        raise ValueError(f"rate_hz must be positive, got {rate_hz}")
    scene = make_scene(seed, num_objects=num_objects, room=room, style=style)
    if style is None:
        rig = make_rig(cameras, width, height, fov_deg=fov_deg)
    else:
        cam = style.camera
        rig = make_rig(cameras, width, height, fov_deg=cam.fov_deg, mount_height=cam.mount_height,
                       tilt_deg=cam.tilt_deg)
        rig.intrinsics[0, 2] += cam.principal_offset[0] * width
        rig.intrinsics[1, 2] += cam.principal_offset[1] * height
    rng = np.random.default_rng([seed, TRAJECTORY_STREAM])
    poses = make_trajectory(scene, trajectory, num_steps, rng, coverage=coverage)
    stamps = [stamp_ns(t, rate_hz) for t in range(num_steps)]
    return SequencePlan(scene, rig, poses, stamps, trajectory, rate_hz)


def iter_steps(plan: SequencePlan, renderer: SceneRenderer | None = None) -> Iterator[list[RenderedView]]:
    """Render the plan one time step at a time: yields the views of all cameras at each step."""
    renderer = renderer or SceneRenderer(plan.scene)
    rig = plan.rig
    style = plan.scene.style
    for step, stamp in enumerate(plan.stamps_ns):
        views = []
        for camera, name in enumerate(rig.names):
            pose = plan.world_from_camera(step, camera)
            out = renderer.render(rig.intrinsics, pose, rig.width, rig.height)
            rng = np.random.default_rng([style.seed, step, camera])
            views.append(
                RenderedView(
                    camera=name,
                    stamp_ns=stamp,
                    rgb=apply_effects(out.rgb, style.effects, rng),
                    depth=out.depth,
                    instance_ids=out.instance_ids,
                    intrinsics=rig.intrinsics.copy(),
                    world_from_camera=pose,
                )
            )
        yield views


def make_sequence(
    seed: int,
    num_steps: int = 60,
    cameras: int = 1,
    trajectory: str = "orbit",
    width: int = 504,
    height: int = 336,
    rate_hz: float = 10.0,
    num_objects: int | None = None,
    coverage: float = 1.0,
    room: str = "room",
    fov_deg: float = 60.0,
    style: SceneStyle | None = None,
) -> SyntheticSequence:
    """Render `num_steps` steps of `cameras` cameras moving along `trajectory` through scene `seed`.

    trajectory: 'orbit', 'walk' or 'pan' (see `trajectory.py`); coverage: fraction of the full loop
    or sweep the sequence spans (1.0 = all of it, whatever num_steps; lower it for small motion
    between steps); room: 'room', 'hall' or 'corridor'; fov_deg: horizontal field of view of every camera;
    style: a randomised look (`style.sample_style`) that also sets the lens and mount (fov_deg is then
    ignored) and the camera's image effects; None is the default look.
    """
    plan = plan_sequence(
        seed, num_steps, cameras, trajectory, width, height, rate_hz, num_objects, coverage, room, fov_deg, style
    )
    return SyntheticSequence(
        scene=plan.scene,
        rig=plan.rig,
        world_from_base=plan.world_from_base,
        steps=list(iter_steps(plan)),
        trajectory=trajectory,
        rate_hz=rate_hz,
    )
