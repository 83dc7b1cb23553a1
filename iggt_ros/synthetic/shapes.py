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
    """Upright cylinder of diameter extent[0] and height extent[2], with both caps.

    `o` may hold per-ray arrays (shadow rays share a direction, not an origin), so the tests of where the
    origin lies are masks rather than branches.
    """
    r, h = extent[0] / 2, extent[2] / 2
    c = o[0] * o[0] + o[1] * o[1] - r * r
    a = dx * dx + dy * dy
    b = o[0] * dx + o[1] * dy
    disc = b * b - a * c
    with np.errstate(invalid="ignore", divide="ignore"):
        ts = c / (np.sqrt(disc) - b)
    z = o[2] + ts * dz
    # Outside the infinite cylinder (c > 0) the side can be entered.
    t = np.where((c > 0) & (disc >= 0) & (b < 0) & (np.abs(z) <= h), ts, np.inf)
    t = np.minimum(t, np.where(np.asarray(o[2]) > h, _cap(o, dx, dy, dz, h, r), np.inf))
    t = np.minimum(t, np.where(np.asarray(o[2]) < -h, _cap(o, dx, dy, dz, -h, r), np.inf))
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
    return np.minimum(t, np.where(np.asarray(o[2]) < -h, _cap(o, dx, dy, dz, -h, r), np.inf))


def intersect_ellipsoid(o: Vec, dx: np.ndarray, dy: np.ndarray, dz: np.ndarray, extent: np.ndarray) -> np.ndarray:
    """Ellipsoid with axes extent / 2: a unit sphere after scaling each axis (t is unchanged by the scaling)."""
    s = 2.0 / np.asarray(extent, np.float64)
    return intersect_sphere((o[0] * s[0], o[1] * s[1], o[2] * s[2]), dx * s[0], dy * s[1], dz * s[2],
                            np.array([2.0, 2.0, 2.0]))


def polyhedron_planes(shape: str, extent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Outward unit normals [F,3] and offsets [F] of a convex solid {p : n . p <= d}."""
    h = extent[2] / 2
    if shape == "prism":  # hexagonal prism, circumradius extent[0] / 2
        angles = np.arange(6) * np.pi / 3
        sides = np.stack([np.cos(angles), np.sin(angles), np.zeros(6)], axis=1)
        normals = np.vstack([sides, [[0, 0, 1], [0, 0, -1]]])
        offsets = np.concatenate([np.full(6, extent[0] / 2 * np.cos(np.pi / 6)), [h, h]])
        return normals, offsets
    if shape == "pyramid":  # rectangular base at z = -h, apex at z = +h
        a, b = extent[0] / 2, extent[1] / 2
        raw = np.array([[2 * h, 0, a], [-2 * h, 0, a], [0, 2 * h, b], [0, -2 * h, b]], np.float64)
        norms = np.linalg.norm(raw, axis=1)
        offsets = np.array([2 * h * a - a * h, 2 * h * a - a * h, 2 * h * b - b * h, 2 * h * b - b * h]) / norms
        return np.vstack([raw / norms[:, None], [[0, 0, -1]]]), np.append(offsets, h)
    raise ValueError(f"'{shape}' is not a polyhedron")


def _polyhedron(shape: str):
    def intersect(o: Vec, dx: np.ndarray, dy: np.ndarray, dz: np.ndarray, extent: np.ndarray) -> np.ndarray:
        """Entering parameter of a convex polyhedron: the last plane entered before the first one left."""
        normals, offsets = polyhedron_planes(shape, extent)
        near = np.full(np.shape(dx), -np.inf)
        far = np.full(np.shape(dx), np.inf)
        with np.errstate(divide="ignore", invalid="ignore"):
            for n, d in zip(normals, offsets, strict=True):
                denom = n[0] * dx + n[1] * dy + n[2] * dz
                num = d - (n[0] * o[0] + n[1] * o[1] + n[2] * o[2])
                t = num / denom
                near = np.where(denom < 0, np.maximum(near, t), near)
                far = np.where(denom > 0, np.minimum(far, t), far)
                far = np.where((denom == 0) & (num < 0), -np.inf, far)
        return np.where((near <= far) & (near > 0), near, np.inf)

    return intersect


def contains(shape: str, o: Vec, extent: np.ndarray) -> bool:
    """Whether the local point `o` lies inside the solid (the intersections above assume it does not)."""
    x, y, z = o
    h = extent / 2
    if shape in ("cube", "box"):
        return bool(abs(x) < h[0] and abs(y) < h[1] and abs(z) < h[2])
    if shape == "sphere":
        return x * x + y * y + z * z < h[0] * h[0]
    if shape == "ellipsoid":
        return (x / h[0]) ** 2 + (y / h[1]) ** 2 + (z / h[2]) ** 2 < 1.0
    if shape in ("prism", "pyramid"):
        normals, offsets = polyhedron_planes(shape, extent)
        return bool(np.all(normals @ np.array([x, y, z]) < offsets))
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
    "ellipsoid": intersect_ellipsoid,
    "prism": _polyhedron("prism"),
    "pyramid": _polyhedron("pyramid"),
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
    if shape == "ellipsoid":
        h = extent / 2
        gx, gy, gz = px / h[0] ** 2, py / h[1] ** 2, pz / h[2] ** 2
        norm = np.maximum(np.sqrt(gx * gx + gy * gy + gz * gz), 1e-12)
        return gx / norm, gy / norm, gz / norm
    if shape in ("prism", "pyramid"):
        normals, offsets = polyhedron_planes(shape, extent)
        signed = normals @ np.stack([px, py, pz]).reshape(3, -1) - offsets[:, None]
        face = np.argmax(signed, axis=0).reshape(np.shape(px))
        return normals[face, 0], normals[face, 1], normals[face, 2]
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
