"""Surface appearance: procedural textures (albedo per surface point) and Lambertian lighting.

Object textures are solid patterns in the object's own frame, so a pattern sticks to the object
under any view, and two identical duplicates look identical. Pattern cells are offset by half a
cell so that no face of a box, or cap of a cylinder, lies on a cell boundary (which would make the
face flicker between the two tones from rounding).

Room surfaces carry texture too (floor tiles, wall panels, a skirting board) so that image regions
away from objects still constrain geometry.
"""

from __future__ import annotations

import numpy as np

KEY_LIGHT = np.array([0.40, 0.30, 0.87]) / np.linalg.norm([0.40, 0.30, 0.87])
"""Direction towards the main light (from above, slightly off-axis so box faces differ in brightness)."""
FILL_LIGHT = np.array([-0.55, -0.65, 0.35]) / np.linalg.norm([-0.55, -0.65, 0.35])
LAMP_BELOW_CEILING = 0.3
"""A lamp hangs this far below the ceiling centre; its falloff gives flat walls and floor brightness gradients."""
LAMP_FALLOFF = 2.5
AMBIENT, KEY, FILL, LAMP = 0.25, 0.40, 0.12, 0.45

PATTERN_TONE = 0.55
"""Albedo factor of the darker cells of a texture."""
FLOOR_TILE = 0.5
WALL_PANEL = 0.4
SKIRTING_HEIGHT = 0.1


def lambert(
    normal: tuple[np.ndarray, np.ndarray, np.ndarray],
    point: tuple[np.ndarray, np.ndarray, np.ndarray],
    lamp: np.ndarray,
) -> np.ndarray:
    """Brightness of surfaces with unit normals at world points: ambient, key and fill lights, ceiling lamp."""
    nx, ny, nz = normal
    key = np.maximum(KEY_LIGHT[0] * nx + KEY_LIGHT[1] * ny + KEY_LIGHT[2] * nz, 0.0)
    fill = np.maximum(FILL_LIGHT[0] * nx + FILL_LIGHT[1] * ny + FILL_LIGHT[2] * nz, 0.0)
    lx, ly, lz = lamp[0] - point[0], lamp[1] - point[1], lamp[2] - point[2]
    dist2 = lx * lx + ly * ly + lz * lz
    cosine = np.maximum(nx * lx + ny * ly + nz * lz, 0.0) / np.sqrt(dist2)
    return AMBIENT + KEY * key + FILL * fill + LAMP * cosine / (1.0 + dist2 / LAMP_FALLOFF**2)


def object_pattern(texture: str, px: np.ndarray, py: np.ndarray, pz: np.ndarray, extent: np.ndarray) -> np.ndarray:
    """Albedo factor (1 or PATTERN_TONE) at local points of an object with `texture`.

    Cells are a quarter of the object's extent along each axis: stripes are horizontal bands,
    checker is a 3D checkerboard.
    """
    cell = extent / 4
    if texture == "plain":
        return np.ones_like(px)
    if texture == "stripes":
        odd = np.floor(pz / cell[2] + 0.5).astype(np.int64) & 1
    elif texture == "checker":
        odd = (
            np.floor(px / cell[0] + 0.5).astype(np.int64)
            + np.floor(py / cell[1] + 0.5).astype(np.int64)
            + np.floor(pz / cell[2] + 0.5).astype(np.int64)
        ) & 1
    else:
        raise ValueError(f"unknown texture '{texture}'")
    return np.where(odd == 1, PATTERN_TONE, 1.0)


def room_pattern(face: int, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Albedo factor of room surface `face` (0 floor, 1 ceiling, 2..5 walls) at world points."""
    if face == 0:
        odd = (np.floor(x / FLOOR_TILE).astype(np.int64) + np.floor(y / FLOOR_TILE).astype(np.int64)) & 1
        return np.where(odd == 1, 0.8, 1.0)
    if face == 1:
        return np.ones_like(x)
    along = y if face in (2, 3) else x
    panel = np.where(np.floor(along / WALL_PANEL).astype(np.int64) & 1, 0.9, 1.0)
    return np.where(z < SKIRTING_HEIGHT, 0.45, panel)
