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

from .shading import LAMP_BELOW_CEILING, brightness, object_pattern, room_pattern, specular
from .shapes import INTERSECT, contains, surface_normal
from .style import Texture
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
    texture: Texture

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
            texture=spec.surface,
        )

    @property
    def symmetric(self) -> bool:
        """Rotationally symmetric about z: yaw does not change the intersection (textures still turn with yaw)."""
        return self.shape in ("sphere", "cylinder", "cone")

    def blocks(self, x: np.ndarray, y: np.ndarray, z: np.ndarray, direction: np.ndarray) -> np.ndarray:
        """Which rays from the world points (x, y, z) along one world `direction` hit this object."""
        ox, oy, oz = x - self.center[0], y - self.center[1], z - self.center[2]
        dx, dy = np.full(np.shape(x), direction[0]), np.full(np.shape(x), direction[1])
        dz = np.full(np.shape(x), direction[2])
        ox, oy = self.to_local(ox, oy)
        dx, dy = self.to_local(dx, dy)
        return np.isfinite(INTERSECT[self.shape]((ox, oy, oz), dx, dy, dz, self.extent))

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
        self.lighting = scene.style.lighting
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
        if self.lighting.shading == "toon":
            rgb = _outline(rgb, depth, ids)
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
        """Texture albedo times the diffuse brightness, plus highlights, for the surface seen at each pixel."""
        height, width = depth.shape
        color = np.empty((height, width, 3), dtype=np.float32)
        points = [origin[i] + depth * rays[i] for i in range(3)]
        shadow = self._shadows(points, ids) if self.lighting.shadow_strength else None
        ray_len = np.sqrt(rays[0] ** 2 + rays[1] ** 2 + rays[2] ** 2)
        style = self.scene.style
        room = ids == 0
        for f, normal in enumerate(ROOM_NORMALS):
            mask = room & (face == f)
            if not mask.any():
                continue
            at = (points[0][mask], points[1][mask], points[2][mask])
            lit = brightness(self.lighting, normal, at, self.lamp, None if shadow is None else shadow[mask])
            tone = room_pattern(f, *at, floor=style.floor, walls=style.walls)
            color[mask] = self.room_albedo[f] * (lit * tone).astype(np.float32)[:, None]
            self._highlight(color, mask, normal, rays, ray_len)
        by_id = {prim.id: prim for prim in self.primitives}
        for object_id, region in rects.items():
            prim = by_id[object_id]
            mask = ids[region] == object_id
            at = (points[0][region][mask], points[1][region][mask], points[2][region][mask])
            px, py = prim.to_local(at[0] - prim.center[0], at[1] - prim.center[1])
            pz = at[2] - prim.center[2]
            nx, ny, nz = surface_normal(prim.shape, px, py, pz, prim.extent)
            nx, ny = prim.to_world(nx, ny)
            lit = brightness(self.lighting, (nx, ny, nz), at, self.lamp,
                             None if shadow is None else shadow[region][mask])
            shade = lit * object_pattern(prim.texture, px, py, pz, prim.extent)
            color[region][mask] = prim.albedo * shade.astype(np.float32)[:, None]
            full = np.zeros_like(ids, dtype=bool)
            full[region] = mask
            self._highlight(color, full, (nx, ny, nz), rays, ray_len)
        return np.clip(color * 255.0 + 0.5, 0.0, 255.0).astype(np.uint8)

    def _highlight(self, color: np.ndarray, mask: np.ndarray, normal, rays: list[np.ndarray],
                   ray_len: np.ndarray) -> None:
        """Add the key light's white highlight (phong shading only) to the pixels of `mask`."""
        if not self.lighting.specular:
            return
        n = ray_len[mask]
        view = (-rays[0][mask] / n, -rays[1][mask] / n, -rays[2][mask] / n)
        spec = specular(self.lighting, normal, view)
        color[mask] += spec.astype(np.float32)[:, None]

    def _shadows(self, points: list[np.ndarray], ids: np.ndarray) -> np.ndarray:
        """[H,W] 1 where an object stands between the surface point and the (directional) key light.

        An object never shadows itself here: its own back faces already get no key light.
        """
        direction = np.asarray(self.lighting.key_direction, np.float64)
        direction = direction / np.linalg.norm(direction)
        blocked = np.zeros(ids.shape, dtype=bool)
        for prim in self.primitives:
            # Only points whose light ray passes near the object: distance from the ray to its centre.
            rel = [prim.center[i] - points[i] for i in range(3)]
            along = rel[0] * direction[0] + rel[1] * direction[1] + rel[2] * direction[2]
            d2 = rel[0] ** 2 + rel[1] ** 2 + rel[2] ** 2 - along**2
            near = (along > 0) & (d2 < prim.bound_radius**2) & (ids != prim.id) & ~blocked
            if not near.any():
                continue
            hit = prim.blocks(points[0][near], points[1][near], points[2][near], direction)
            blocked[near] = hit
        return blocked.astype(np.float64)


def _outline(rgb: np.ndarray, depth: np.ndarray, ids: np.ndarray, jump: float = 0.05) -> np.ndarray:
    """Dark outlines where depth jumps or the surface changes, as cel-shaded renderers draw them."""
    edge = np.zeros(depth.shape, dtype=bool)
    for axis in (0, 1):
        d = np.abs(np.diff(depth, axis=axis)) / np.minimum(
            np.delete(depth, -1, axis=axis), np.delete(depth, 0, axis=axis))
        e = (d > jump) | (np.diff(ids.astype(np.int32), axis=axis) != 0)
        if axis == 0:
            edge[:-1] |= e
            edge[1:] |= e
        else:
            edge[:, :-1] |= e
            edge[:, 1:] |= e
    out = rgb.copy()
    out[edge] = (out[edge] * 0.2).astype(np.uint8)
    return out


def render_view(
    scene: Scene, intrinsics: np.ndarray, world_from_camera: np.ndarray, width: int, height: int
) -> RenderResult:
    """Render one view of `scene` (convenience wrapper; reuse a SceneRenderer for many views)."""
    return SceneRenderer(scene).render(intrinsics, world_from_camera, width, height)
