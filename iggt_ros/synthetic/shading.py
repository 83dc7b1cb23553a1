"""Surface appearance: procedural textures (albedo per surface point) and Lambertian lighting.

Object textures are solid patterns in the object's own frame, so a pattern sticks to the object
under any view, and two identical duplicates look identical. Pattern cells are offset by half a
cell so that no face of a box, or cap of a cylinder, lies on a cell boundary (which would make the
face flicker between the two tones from rounding).

Room surfaces carry texture too (floor tiles, wall panels, a skirting board in the default look; any
training texture at a random scale in randomised styles) so that image regions away from objects
still constrain geometry. Lights and the shading model come from `style.Lighting`.
"""

from __future__ import annotations

import numpy as np

from .style import Lighting, Texture

LAMP_BELOW_CEILING = 0.3
"""A lamp hangs this far below the ceiling centre; its falloff gives flat walls and floor brightness gradients."""
LAMP_FALLOFF = 2.5

PATTERN_TONE = 0.55
"""Albedo factor of the darker cells of a texture in the default look."""
FLOOR_TILE = 0.5
WALL_PANEL = 0.4
SKIRTING_HEIGHT = 0.1

Normal = tuple[np.ndarray, np.ndarray, np.ndarray]


def _unit(v: tuple[float, float, float]) -> np.ndarray:
    a = np.asarray(v, np.float64)
    return a / np.linalg.norm(a)


def brightness(lighting: Lighting, normal: Normal, point: Normal, lamp: np.ndarray,
               shadow: np.ndarray | None = None) -> np.ndarray:
    """Diffuse brightness at world points with unit normals: ambient, key and fill lights, ceiling lamp.

    `shadow` (1 where the key light is blocked) removes `lighting.shadow_strength` of the key light.
    """
    nx, ny, nz = normal
    kd, fd = _unit(lighting.key_direction), _unit(lighting.fill_direction)
    key = np.maximum(kd[0] * nx + kd[1] * ny + kd[2] * nz, 0.0)
    if shadow is not None and lighting.shadow_strength:
        key = key * (1.0 - lighting.shadow_strength * shadow)
    fill = np.maximum(fd[0] * nx + fd[1] * ny + fd[2] * nz, 0.0)
    lx, ly, lz = lamp[0] - point[0], lamp[1] - point[1], lamp[2] - point[2]
    dist2 = lx * lx + ly * ly + lz * lz
    cosine = np.maximum(nx * lx + ny * ly + nz * lz, 0.0) / np.sqrt(dist2)
    out = lighting.ambient + lighting.key * key + lighting.fill * fill + lighting.lamp * cosine / (
        1.0 + dist2 / LAMP_FALLOFF**2)
    if lighting.toon_levels:
        top = lighting.ambient + lighting.key + lighting.fill + lighting.lamp
        step = top / lighting.toon_levels
        out = (np.floor(out / step) + 0.5) * step
    return out


def specular(lighting: Lighting, normal: Normal, view: Normal) -> np.ndarray | None:
    """White highlight of the key light (Blinn-Phong) for unit view directions towards the camera; None if off."""
    if not lighting.specular:
        return None
    kd = _unit(lighting.key_direction)
    hx, hy, hz = view[0] + kd[0], view[1] + kd[1], view[2] + kd[2]
    norm = np.maximum(np.sqrt(hx * hx + hy * hy + hz * hz), 1e-12)
    cos_h = np.maximum((normal[0] * hx + normal[1] * hy + normal[2] * hz) / norm, 0.0)
    lit = (kd[0] * normal[0] + kd[1] * normal[1] + kd[2] * normal[2]) > 0
    return np.where(lit, lighting.specular * lighting.key * cos_h**lighting.shininess, 0.0)


def _cells(v: np.ndarray, cell: float, offset: float = 0.5) -> np.ndarray:
    return np.floor(v / cell + offset).astype(np.int64)


def _smooth_noise(x: np.ndarray, y: np.ndarray, z: np.ndarray, cell: float, phase: float) -> np.ndarray:
    """A smooth pseudo-random field in [0, 1]: a few products of sines at incommensurate frequencies."""
    rng = np.random.default_rng(int(phase * 1000) % (2**31))
    acc = np.zeros(np.shape(x))
    total = 0.0
    for octave in range(3):
        f = (2.0**octave) * 2 * np.pi / cell
        w = 0.5**octave
        dirs = rng.normal(size=(2, 3))
        ph = rng.uniform(0, 2 * np.pi, 2)
        acc += w * np.sin(f * (dirs[0, 0] * x + dirs[0, 1] * y + dirs[0, 2] * z) + ph[0]) * np.sin(
            f * (dirs[1, 0] * x + dirs[1, 1] * y + dirs[1, 2] * z) + ph[1])
        total += w
    return 0.5 + 0.5 * acc / total


def pattern(texture: Texture, x: np.ndarray, y: np.ndarray, z: np.ndarray, cell: np.ndarray) -> np.ndarray:
    """Albedo factor in [tone, 1] of `texture` at points (x, y, z), with cell sizes `cell` [3] per axis.

    On objects z is the object's up axis and the points are local; rings and gradients run along it.
    """
    kind, tone = texture.kind, texture.tone
    if kind == "plain":
        return np.ones_like(x)
    if kind == "stripes":
        odd = _cells(z, cell[2]) & 1
    elif kind == "checker":
        odd = (_cells(x, cell[0]) + _cells(y, cell[1]) + _cells(z, cell[2])) & 1
    elif kind == "rings":
        shift = 0.37 * cell[0] * np.sin(texture.phase)
        odd = _cells(np.hypot(x - shift, y + shift), cell[0], 0.25) & 1
    elif kind == "diagonal":
        odd = _cells(x / cell[0] + y / cell[1] + z / cell[2], 1.0) & 1
    elif kind == "dots":
        fx = x / cell[0] - np.floor(x / cell[0]) - 0.5
        fy = y / cell[1] - np.floor(y / cell[1]) - 0.5
        fz = z / cell[2] - np.floor(z / cell[2]) - 0.5
        odd = (fx * fx + fy * fy + fz * fz) < 0.09
    elif kind == "noise":
        return tone + (1.0 - tone) * _smooth_noise(x, y, z, float(np.mean(cell)) * 2, texture.phase)
    elif kind == "gradient":
        t = z / (4 * cell[2]) + texture.phase
        return tone + (1.0 - tone) * np.abs(2.0 * (t - np.floor(t)) - 1.0)
    else:
        raise ValueError(f"unknown texture '{kind}'")
    return np.where(odd, tone, 1.0)


def object_pattern(texture: Texture, px: np.ndarray, py: np.ndarray, pz: np.ndarray, extent: np.ndarray) -> np.ndarray:
    """Albedo factor at local points of an object: cells are `texture.scale` of the object's extent per axis
    (0.25 in the default look: stripes are horizontal bands, checker a 3D checkerboard)."""
    return pattern(texture, px, py, pz, np.asarray(extent, np.float64) * texture.scale)


def room_pattern(face: int, x: np.ndarray, y: np.ndarray, z: np.ndarray, floor: Texture | None = None,
                 walls: Texture | None = None) -> np.ndarray:
    """Albedo factor of room surface `face` (0 floor, 1 ceiling, 2..5 walls) at world points.

    Without textures: floor tiles, plain ceiling, wall panels above a dark skirting board.
    """
    if face == 0:
        if floor is not None:
            return pattern(floor, x, y, np.zeros_like(x), np.full(3, floor.scale))
        odd = (np.floor(x / FLOOR_TILE).astype(np.int64) + np.floor(y / FLOOR_TILE).astype(np.int64)) & 1
        return np.where(odd == 1, 0.8, 1.0)
    if face == 1:
        return np.ones_like(x)
    along = y if face in (2, 3) else x
    if walls is not None:
        # Wall coordinates: along the wall and up; 'stripes' run horizontally, 'rings' centre on the wall.
        return pattern(walls, along, z, along, np.full(3, walls.scale))
    panel = np.where(np.floor(along / WALL_PANEL).astype(np.int64) & 1, 0.9, 1.0)
    return np.where(z < SKIRTING_HEIGHT, 0.45, panel)
