"""Exact ray casting of a scene into RGB, metric z-depth and instance IDs, vectorised with numpy.

One ray per pixel centre (no anti-aliasing: IDs and depth are exact at each pixel centre, which is
what the geometric ground truth needs). A render runs in three passes over whole pixel arrays:

1. the room: the camera is inside a closed box, so every ray hits exactly one wall, floor or
   ceiling; this gives every pixel a finite depth;
2. the objects: each object is intersected only with the pixels inside the screen rectangle of its
   bounding sphere (culling), and wins the pixels where it is nearer than what is there;
3. shading: albedo from the winning surface's texture times a Lambertian brightness, evaluated only
   once per pixel for the surface that won.

Ray directions are camera rays K^-1 [u, v, 1] rotated into the world frame, so their optical-axis
component is 1 and the ray parameter t of a hit is directly its z-depth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .shading import LAMP_BELOW_CEILING, lambert, object_pattern, room_pattern
from .shapes import INTERSECT, contains, surface_normal
from .types import ObjectSpec, Scene

ROOM_NORMALS = ((0.0, 0.0, 1.0), (0.0, 0.0, -1.0), (1.0, 0.0, 0.0), (-1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, -1.0, 0.0))
"""Inward normals of the room faces: floor, ceiling, walls at x = -X/2, x = +X/2, y = -Y/2, y = +Y/2."""


@dataclass
class RenderResult:
    rgb: np.ndarray
    """[H,W,3] uint8."""
    depth: np.ndarray
    """[H,W] float32 z-depth in metres, finite and > 0 everywhere."""
    instance_ids: np.ndarray
    """[H,W] uint16, 0 = room."""


@dataclass
class _Primitive:
    """An object prepared for ray casting."""

    id: int
    shape: str
    center: np.ndarray
    cos: float
    sin: float
    extent: np.ndarray
    bound_radius: float
    albedo: np.ndarray
    texture: str

    @classmethod
    def from_spec(cls, spec: ObjectSpec) -> _Primitive:
        extent = np.asarray(spec.extent, dtype=np.float64)
        return cls(
            id=spec.id,
            shape=spec.shape,
            center=np.asarray(spec.center, dtype=np.float64),
            cos=float(np.cos(spec.yaw)),
            sin=float(np.sin(spec.yaw)),
            extent=extent,
            bound_radius=0.5 * float(np.linalg.norm(extent)),
            albedo=np.asarray(spec.color_rgb, dtype=np.float32),
            texture=spec.texture,
        )

    @property
    def symmetric(self) -> bool:
        """Rotationally symmetric about z: yaw does not change the intersection."""
        return self.shape in ("sphere", "cylinder", "cone")

    def to_local(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rotate world-axis x, y components into the object's frame (inverse yaw)."""
        return self.cos * x + self.sin * y, -self.sin * x + self.cos * y

    def to_world(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.cos * x - self.sin * y, self.sin * x + self.cos * y


def screen_rect(
    center_cam: np.ndarray, radius: float, intrinsics: np.ndarray, width: int, height: int
) -> tuple[int, int, int, int] | None:
    """Pixel rows v0:v1 and columns u0:u1 covering a sphere given in camera coordinates; None if off-screen.

    Bounds x/z and y/z over the sphere by their values at the sphere's nearest and farthest depth,
    which is conservative; a sphere reaching behind the image plane gets the whole image.
    """
    x, y, z = center_cam
    if z + radius <= 0:
        return None
    if z - radius <= 1e-6 or intrinsics[0, 1] != 0:
        return 0, height, 0, width
    z_near, z_far = z - radius, z + radius
    fx, fy, cx, cy = intrinsics[0, 0], intrinsics[1, 1], intrinsics[0, 2], intrinsics[1, 2]
    u_lo = fx * min((x - radius) / z_near, (x - radius) / z_far) + cx
    u_hi = fx * max((x + radius) / z_near, (x + radius) / z_far) + cx
    v_lo = fy * min((y - radius) / z_near, (y - radius) / z_far) + cy
    v_hi = fy * max((y + radius) / z_near, (y + radius) / z_far) + cy
    u0, u1 = max(int(np.floor(u_lo)), 0), min(int(np.ceil(u_hi)) + 1, width)
    v0, v1 = max(int(np.floor(v_lo)), 0), min(int(np.ceil(v_hi)) + 1, height)
    if u0 >= u1 or v0 >= v1:
        return None
    return v0, v1, u0, u1


class SceneRenderer:
    """Renders one scene from any camera; building it is cheap, so make one per scene."""

    def __init__(self, scene: Scene, cull: bool = True) -> None:
        self.scene = scene
        self.cull = cull
        size = np.asarray(scene.room_size, dtype=np.float64)
        self.room_lo = np.array([-size[0] / 2, -size[1] / 2, 0.0])
        self.room_hi = np.array([size[0] / 2, size[1] / 2, size[2]])
        colors = list(scene.wall_colors) or [(0.6, 0.6, 0.6)]
        colors += [colors[-1]] * (6 - len(colors))
        self.room_albedo = np.asarray(colors[:6], dtype=np.float32)
        self.lamp = np.array([0.0, 0.0, size[2] - LAMP_BELOW_CEILING])
        self.primitives = [_Primitive.from_spec(spec) for spec in scene.objects]

    def render(self, intrinsics: np.ndarray, world_from_camera: np.ndarray, width: int, height: int) -> RenderResult:
        """Render the view of a pinhole camera (K `intrinsics`, optical-frame pose `world_from_camera`)."""
        origin = np.asarray(world_from_camera, dtype=np.float64)[:3, 3]
        if np.any(origin <= self.room_lo) or np.any(origin >= self.room_hi):
            raise ValueError(f"camera at {origin.round(3).tolist()} is outside the room")
        rays = self._rays(np.asarray(intrinsics, dtype=np.float64), world_from_camera, width, height)
        depth, face = self._room(origin, rays)
        ids = np.zeros((height, width), dtype=np.uint16)
        rects = self._objects(origin, rays, intrinsics, world_from_camera, depth, ids)
        rgb = self._shade(origin, rays, depth, face, ids, rects)
        return RenderResult(rgb=rgb, depth=depth.astype(np.float32), instance_ids=ids)

    @staticmethod
    def _rays(intrinsics: np.ndarray, world_from_camera: np.ndarray, width: int, height: int) -> list[np.ndarray]:
        """World-frame directions (dx, dy, dz), each [H,W], of the rays through the pixel centres."""
        k_inv = np.linalg.inv(intrinsics)
        u = np.arange(width, dtype=np.float64)[None, :]
        v = np.arange(height, dtype=np.float64)[:, None]
        xc = k_inv[0, 0] * u + k_inv[0, 1] * v + k_inv[0, 2]
        yc = k_inv[1, 1] * v + k_inv[1, 2]
        rot = np.asarray(world_from_camera, dtype=np.float64)[:3, :3]
        return [rot[i, 0] * xc + rot[i, 1] * yc + rot[i, 2] for i in range(3)]

    def _room(self, origin: np.ndarray, rays: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Depth to the room's inside and the index of the face hit (floor, ceiling, 4 walls)."""
        depth = None
        face = None
        face_of_axis = ((2, 3), (4, 5), (0, 1))  # (negative, positive) direction along x, y, z
        with np.errstate(divide="ignore", invalid="ignore"):
            for axis, d in enumerate(rays):
                t = np.abs(np.where(d >= 0, self.room_hi[axis] - origin[axis], self.room_lo[axis] - origin[axis]) / d)
                f = np.where(d >= 0, face_of_axis[axis][1], face_of_axis[axis][0]).astype(np.int8)
                if depth is None:
                    depth, face = t, f
                else:
                    nearer = t < depth
                    depth = np.where(nearer, t, depth)
                    face = np.where(nearer, f, face)
        return depth, face

    def _objects(
        self,
        origin: np.ndarray,
        rays: list[np.ndarray],
        intrinsics: np.ndarray,
        world_from_camera: np.ndarray,
        depth: np.ndarray,
        ids: np.ndarray,
    ) -> dict[int, tuple[slice, slice]]:
        """Cast the pixel rays against every object, keeping the nearest hit; returns the rectangle per object."""
        height, width = depth.shape
        rot = np.asarray(world_from_camera, dtype=np.float64)[:3, :3]
        rects: dict[int, tuple[slice, slice]] = {}
        for prim in self.primitives:
            if self.cull:
                rect = screen_rect(rot.T @ (prim.center - origin), prim.bound_radius, intrinsics, width, height)
                if rect is None:
                    continue
                region = (slice(rect[0], rect[1]), slice(rect[2], rect[3]))
            else:
                region = (slice(0, height), slice(0, width))
            dx, dy, dz = (d[region] for d in rays)
            ox, oy, oz = (float(v) for v in origin - prim.center)
            if not prim.symmetric:
                ox, oy = prim.to_local(ox, oy)
                dx, dy = prim.to_local(dx, dy)
            if contains(prim.shape, (ox, oy, oz), prim.extent):
                raise ValueError(f"camera at {origin.round(3).tolist()} is inside object {prim.id} ({prim.shape})")
            t = INTERSECT[prim.shape]((ox, oy, oz), dx, dy, dz, prim.extent)
            sub_depth = depth[region]
            nearer = t < sub_depth
            if not nearer.any():
                continue
            np.copyto(sub_depth, t, where=nearer)
            ids[region][nearer] = prim.id
            rects[prim.id] = region
        return rects

    def _shade(
        self,
        origin: np.ndarray,
        rays: list[np.ndarray],
        depth: np.ndarray,
        face: np.ndarray,
        ids: np.ndarray,
        rects: dict[int, tuple[slice, slice]],
    ) -> np.ndarray:
        """Texture albedo times Lambertian brightness for the surface seen at each pixel."""
        height, width = depth.shape
        color = np.empty((height, width, 3), dtype=np.float32)
        points = [origin[i] + depth * rays[i] for i in range(3)]
        room = ids == 0
        for f, normal in enumerate(ROOM_NORMALS):
            mask = room & (face == f)
            if not mask.any():
                continue
            at = (points[0][mask], points[1][mask], points[2][mask])
            brightness = lambert(normal, at, self.lamp)
            pattern = room_pattern(f, *at)
            color[mask] = self.room_albedo[f] * (brightness * pattern).astype(np.float32)[:, None]
        by_id = {prim.id: prim for prim in self.primitives}
        for object_id, region in rects.items():
            prim = by_id[object_id]
            mask = ids[region] == object_id
            at = (points[0][region][mask], points[1][region][mask], points[2][region][mask])
            px, py = prim.to_local(at[0] - prim.center[0], at[1] - prim.center[1])
            pz = at[2] - prim.center[2]
            nx, ny, nz = surface_normal(prim.shape, px, py, pz, prim.extent)
            nx, ny = prim.to_world(nx, ny)
            shade = lambert((nx, ny, nz), at, self.lamp) * object_pattern(prim.texture, px, py, pz, prim.extent)
            color[region][mask] = prim.albedo * shade.astype(np.float32)[:, None]
        return np.clip(color * 255.0 + 0.5, 0.0, 255.0).astype(np.uint8)


def render_view(
    scene: Scene, intrinsics: np.ndarray, world_from_camera: np.ndarray, width: int, height: int
) -> RenderResult:
    """Render one view of `scene` (convenience wrapper; reuse a SceneRenderer for many views)."""
    return SceneRenderer(scene).render(intrinsics, world_from_camera, width, height)
