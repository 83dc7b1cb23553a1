"""Data types of the synthetic scenes: what is in a scene, how a rig is built, what a render gives.

Conventions shared by the whole package:
- World frame: metres, z up (gravity along -z), as ROS `odom`/`map`.
- Camera frames: OpenCV optical frames (x right, y down, z forward).
- Poses are 4x4 float64 homogeneous transforms named `<to>_from_<from>`: `world_from_camera`
  maps camera coordinates to world coordinates.
- Instance IDs: uint16, 0 = background (room walls, floor, ceiling), objects 1..N.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .style import SceneStyle, Texture


@dataclass
class ObjectSpec:
    """One object of a scene, with the attributes that text queries refer to."""

    id: int
    shape: str
    """'cube', 'box', 'sphere', 'cylinder' or 'cone'."""
    color_name: str
    """A plain colour word ('red', 'green', 'blue', 'yellow', ...)."""
    color_rgb: tuple[float, float, float]
    """Albedo in [0, 1]."""
    size_name: str
    """'small', 'medium' or 'large' (relative to the scene's objects)."""
    center: np.ndarray
    """[3] world position of the object's centre, metres."""
    extent: np.ndarray
    """[3] full size along the object's own x, y, z axes, metres."""
    yaw: float = 0.0
    """Rotation about world z, radians (objects stand upright)."""
    texture: str = "plain"
    """Surface pattern kind ('plain', 'stripes', 'checker', ... see `style.Texture`), so views carry image texture."""
    duplicate_of: int = 0
    """ID of the object this one is an identical copy of (0 = not a duplicate)."""
    texture_scale: float = 0.25
    """Pattern cell size as a fraction of the object's extent."""
    texture_tone: float = 0.55
    texture_phase: float = 0.0

    @property
    def surface(self) -> Texture:
        return Texture(self.texture, self.texture_scale, self.texture_tone, self.texture_phase)

    @property
    def attributes(self) -> dict[str, str]:
        return {"shape": self.shape, "color": self.color_name, "size": self.size_name}


@dataclass
class Scene:
    """A room with objects standing on its floor."""

    seed: int
    room_size: np.ndarray
    """[3] room extent along x, y, z (metres); the room spans [-x/2, x/2] x [-y/2, y/2] x [0, z]."""
    objects: list[ObjectSpec]
    wall_colors: list[tuple[float, float, float]] = field(default_factory=list)
    """Albedo of floor, ceiling, and the four walls (in that order; walls at x = -X/2, x = +X/2, y = -Y/2, y = +Y/2)."""
    style: SceneStyle = field(default_factory=SceneStyle)
    """Room textures, lights and shading model (the camera and image parts apply to sequences)."""

    def object(self, object_id: int) -> ObjectSpec:
        for obj in self.objects:
            if obj.id == object_id:
                return obj
        raise KeyError(f"scene {self.seed} has no object {object_id}")


@dataclass
class CameraRig:
    """Cameras rigidly mounted on the robot base, with one shared image size and intrinsics."""

    names: list[str]
    base_from_camera: list[np.ndarray]
    """[4,4] pose of each camera's optical frame in the base frame (fixed extrinsics)."""
    width: int
    height: int
    intrinsics: np.ndarray
    """[3,3] pinhole K shared by all cameras."""


@dataclass
class RenderedView:
    """One exactly rendered image with its ground truth."""

    camera: str
    stamp_ns: int
    rgb: np.ndarray
    """[H,W,3] uint8."""
    depth: np.ndarray
    """[H,W] float32 z-depth in metres (> 0 everywhere: the room is closed)."""
    instance_ids: np.ndarray
    """[H,W] uint16, 0 = background."""
    intrinsics: np.ndarray
    """[3,3] float64."""
    world_from_camera: np.ndarray
    """[4,4] float64 optical-frame pose."""


@dataclass
class SyntheticSequence:
    """A rendered camera trajectory through a scene: steps[t][c] is camera c at time step t."""

    scene: Scene
    rig: CameraRig
    world_from_base: list[np.ndarray]
    """[4,4] robot base pose per time step (the odom -> base_link transform)."""
    steps: list[list[RenderedView]]
    trajectory: str = "orbit"
    rate_hz: float = 10.0

    @property
    def num_steps(self) -> int:
        return len(self.steps)

    def views(self) -> list[RenderedView]:
        return [v for step in self.steps for v in step]
