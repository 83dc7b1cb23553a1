"""Exact ray intersections and surface normals of the object primitives, vectorised over rays.

Everything is in the object's local frame: origin at the object's centre (half-way up), axes along
the object's own x, y, z. All rays of one call share one origin `o` (the camera centre, a 3-tuple of
floats) and have per-ray directions (dx, dy, dz) of any length; the returned ray parameter t is in
units of that length, +inf where the ray misses. The camera is always outside the solids, so the
first hit is the smallest positive root of the entering surface.

Quadratics use the cancellation-free root forms, so grazing rays and distant objects stay exact to
float64 rounding.
"""

from __future__ import annotations

import numpy as np

Vec = tuple[float, float, float]


def _stable_roots(b: np.ndarray, a: np.ndarray | float, c: float, disc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both roots of a t^2 + 2 b t + c = 0 (disc = b^2 - a c >= 0), without subtracting close numbers."""
    q = -(b + np.copysign(np.sqrt(disc), b))
    with np.errstate(divide="ignore", invalid="ignore"):
        return q / a, c / q


def intersect_box(o: Vec, dx: np.ndarray, dy: np.ndarray, dz: np.ndarray, extent: np.ndarray) -> np.ndarray:
    """Slab test against the axis-aligned box [-extent/2, extent/2]."""
    near = np.full(dx.shape, -np.inf)
    far = np.full(dx.shape, np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        for oi, di, hi in zip(o, (dx, dy, dz), extent / 2, strict=True):
            inv = 1.0 / di
            t0 = (-hi - oi) * inv
            t1 = (hi - oi) * inv
            np.maximum(near, np.minimum(t0, t1), out=near)
            np.minimum(far, np.maximum(t0, t1), out=far)
    hit = (near <= far) & (near > 0)
    return np.where(hit, near, np.inf)


def intersect_sphere(o: Vec, dx: np.ndarray, dy: np.ndarray, dz: np.ndarray, extent: np.ndarray) -> np.ndarray:
    """Sphere of diameter extent[0] centred at the origin."""
    r = extent[0] / 2
    c = o[0] * o[0] + o[1] * o[1] + o[2] * o[2] - r * r
    a = dx * dx + dy * dy + dz * dz
    b = o[0] * dx + o[1] * dy + o[2] * dz
    disc = b * b - a * c
    hit = (disc >= 0) & (b < 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        t = c / (np.sqrt(disc) - b)  # entering root; b < 0 on hits, so no cancellation
    return np.where(hit, t, np.inf)


def _cap(o: Vec, dx: np.ndarray, dy: np.ndarray, dz: np.ndarray, z: float, radius: float) -> np.ndarray:
    """Disc of `radius` in the plane at height z, centred on the z axis."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (z - o[2]) / dz
    x = o[0] + t * dx
    y = o[1] + t * dy
    hit = (t > 0) & (x * x + y * y <= radius * radius)
    return np.where(hit, t, np.inf)


def intersect_cylinder(o: Vec, dx: np.ndarray, dy: np.ndarray, dz: np.ndarray, extent: np.ndarray) -> np.ndarray:
    """Upright cylinder of diameter extent[0] and height extent[2], with both caps."""
    r, h = extent[0] / 2, extent[2] / 2
    t = np.full(dx.shape, np.inf)
    c = o[0] * o[0] + o[1] * o[1] - r * r
    if c > 0:  # outside the infinite cylinder: the side can be entered
        a = dx * dx + dy * dy
        b = o[0] * dx + o[1] * dy
        disc = b * b - a * c
        with np.errstate(invalid="ignore", divide="ignore"):
            ts = c / (np.sqrt(disc) - b)
        z = o[2] + ts * dz
        t = np.where((disc >= 0) & (b < 0) & (np.abs(z) <= h), ts, t)
    if o[2] > h:
        t = np.minimum(t, _cap(o, dx, dy, dz, h, r))
    elif o[2] < -h:
        t = np.minimum(t, _cap(o, dx, dy, dz, -h, r))
    return t


def intersect_cone(o: Vec, dx: np.ndarray, dy: np.ndarray, dz: np.ndarray, extent: np.ndarray) -> np.ndarray:
    """Upright cone, base of diameter extent[0] at z = -h, apex at z = +h (h = extent[2] / 2), with base cap."""
    r, h = extent[0] / 2, extent[2] / 2
    k2 = (r / (2 * h)) ** 2
    q = h - o[2]  # height of the apex above the origin
    a = dx * dx + dy * dy - k2 * dz * dz
    b = o[0] * dx + o[1] * dy + k2 * q * dz
    c = o[0] * o[0] + o[1] * o[1] - k2 * q * q
    disc = b * b - a * c
    t = np.full(dx.shape, np.inf)
    ok = disc >= 0
    t1, t2 = _stable_roots(b, a, c, np.where(ok, disc, 0.0))
    for root in (t1, t2):
        z = o[2] + root * dz
        valid = ok & (root > 0) & (z >= -h) & (z <= h)
        t = np.where(valid & (root < t), root, t)
    if o[2] < -h:
        t = np.minimum(t, _cap(o, dx, dy, dz, -h, r))
    return t


def contains(shape: str, o: Vec, extent: np.ndarray) -> bool:
    """Whether the local point `o` lies inside the solid (the intersections above assume it does not)."""
    x, y, z = o
    h = extent / 2
    if shape in ("cube", "box"):
        return bool(abs(x) < h[0] and abs(y) < h[1] and abs(z) < h[2])
    if shape == "sphere":
        return x * x + y * y + z * z < h[0] * h[0]
    rho = float(np.hypot(x, y))
    if shape == "cylinder":
        return rho < h[0] and abs(z) < h[2]
    if shape == "cone":
        return abs(z) < h[2] and rho < h[0] * (h[2] - z) / (2 * h[2])
    raise ValueError(f"unknown shape '{shape}'")


INTERSECT = {
    "cube": intersect_box,
    "box": intersect_box,
    "sphere": intersect_sphere,
    "cylinder": intersect_cylinder,
    "cone": intersect_cone,
}


def surface_normal(
    shape: str, px: np.ndarray, py: np.ndarray, pz: np.ndarray, extent: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Outward unit normal at local surface points; the nearest face decides on edges."""
    if shape in ("cube", "box"):
        h = extent / 2
        closeness = np.stack([np.abs(px) / h[0], np.abs(py) / h[1], np.abs(pz) / h[2]])
        axis = np.argmax(closeness, axis=0)
        n = [np.where(axis == i, np.sign(p), 0.0) for i, p in enumerate((px, py, pz))]
        return n[0], n[1], n[2]
    if shape == "sphere":
        r = extent[0] / 2
        return px / r, py / r, pz / r
    r, h = extent[0] / 2, extent[2] / 2
    rho = np.maximum(np.hypot(px, py), 1e-12)
    zero = np.zeros_like(px)
    if shape == "cylinder":
        cap = (h - np.abs(pz)) < (r - rho)
        return np.where(cap, 0.0, px / rho), np.where(cap, 0.0, py / rho), np.where(cap, np.sign(pz), zero)
    if shape == "cone":
        k = r / (2 * h)
        norm = np.sqrt(1 + k * k)
        base = (pz + h) < (k * (h - pz) - rho) / norm
        return (
            np.where(base, 0.0, px / rho / norm),
            np.where(base, 0.0, py / rho / norm),
            np.where(base, -1.0, k / norm),
        )
    raise ValueError(f"unknown shape '{shape}'")
