"""Robot base trajectories through a scene: 'orbit', 'walk' and 'pan'.

All three keep the base on the scene's walkway ellipse (see `scene.walkway_axes`), which no object
enters, so cameras on the rig never start inside an object. The base stays on the floor (planar
x, y, yaw), as `odom -> base_link` of a ground robot.

- orbit: drives around the walkway looking at the room centre: the centre island's objects occlude
  each other as the view angle changes, and objects along the far walls pass behind them.
- walk: drives around the walkway looking ahead (20 degrees towards the room centre), with a slow
  side-to-side head sway: objects leave the view to the side as the robot passes them and come
  back into view later in the loop.
- pan: stands almost still (a short drift along the walkway, for parallax) and turns left and right
  by up to 100 degrees around the inward direction: objects leave the view and come back.

`coverage` scales how much of the loop (orbit, walk) or of the pan sweep one sequence covers: 1.0
is a full loop / a full left-right-back sweep whatever the number of steps; smaller values give
smaller motion between steps.
"""

from __future__ import annotations

import numpy as np

from .rig import pose, rot_z
from .scene import walkway_axes
from .types import Scene

TRAJECTORIES: tuple[str, ...] = ("orbit", "walk", "pan")


def base_pose(x: float, y: float, yaw: float) -> np.ndarray:
    """world_from_base of a planar base at (x, y) on the floor, heading `yaw`."""
    return pose(rot_z(yaw), np.array([x, y, 0.0]))


def make_trajectory(
    scene: Scene, kind: str, num_steps: int, rng: np.random.Generator, coverage: float = 1.0
) -> list[np.ndarray]:
    """`num_steps` world_from_base poses of trajectory `kind`; start and direction are drawn from `rng`."""
    if kind not in TRAJECTORIES:
        raise ValueError(f"unknown trajectory '{kind}'; choose from {', '.join(TRAJECTORIES)}")
    if num_steps < 1:
        raise ValueError(f"num_steps must be at least 1, got {num_steps}")
    a, b = walkway_axes(scene.room_size)
    phase0 = rng.uniform(0.0, 2.0 * np.pi)
    direction = rng.choice([-1.0, 1.0])
    s = coverage * np.arange(num_steps) / max(num_steps - 1, 1)  # progress through the cycle, 0..coverage
    loop = 0.15 if kind == "pan" else 2.0 * np.pi  # angle along the walkway covered by the whole cycle
    phi = phase0 + direction * loop * s
    x, y = a * np.cos(phi), b * np.sin(phi)
    inward = np.arctan2(-y, -x)
    if kind == "orbit":
        yaw = inward + np.radians(8.0) * np.sin(4.0 * np.pi * s)
    elif kind == "walk":
        tangent = np.arctan2(direction * b * np.cos(phi), -direction * a * np.sin(phi))
        # Looking ahead and a little towards the room centre, where the centre island stands.
        yaw = tangent + direction * np.radians(20.0) + np.radians(25.0) * np.sin(6.0 * np.pi * s)
    else:
        yaw = inward + direction * np.radians(100.0) * np.sin(2.0 * np.pi * s)
    return [base_pose(float(xi), float(yi), float(w)) for xi, yi, w in zip(x, y, yaw, strict=True)]
