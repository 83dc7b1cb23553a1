"""Domain randomisation: how a scene looks and how the camera sees it, drawn from named factor pools.

A model trained on one look of the world learns that look (its textures, its light, its lens) rather
than objects. Every factor a real camera or another renderer would change is therefore a random
variable here: surface textures and their scale, albedos, shapes and sizes, light direction and
intensity, the shading model (with or without cast shadows and highlights), field of view, principal
point, camera height and tilt, and the image pipeline (exposure, white balance, blur, noise, JPEG).

Factor values are split between two domains so that quality can be measured on what training never
saw (`DOMAINS`):

- ``train``: what `SyntheticWindowSource` draws from;
- ``foreign``: whole factor values that ``train`` never contains (textures, a shape, the corridor
  layout, a band of fields of view, cel shading with outlines, vignetting), for validation only.

`SceneStyle.default()` is the plain look of the package's sample bags and demo (fixed lights,
Lambertian shading, the original textures, no image effects); a style is a frozen value, so a
sequence is still a pure function of its arguments.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Texture:
    """A procedural albedo pattern: factor 1 on the light phase, `tone` on the dark phase.

    kinds: 'plain', 'stripes', 'checker', 'rings', 'noise', 'gradient' (training), 'dots' and
    'diagonal' (held out). `scale` is the cell size: a fraction of the object's extent on objects,
    metres on room surfaces.
    """

    kind: str = "plain"
    scale: float = 0.25
    tone: float = 0.55
    phase: float = 0.0
    """Offset of the pattern (noise seed, ring centre shift), so equal kinds still differ between surfaces."""


@dataclass(frozen=True)
class Lighting:
    """Lights and the shading model.

    shading: 'lambert' (diffuse only), 'phong' (diffuse + specular highlights), 'shadow' (diffuse with
    cast shadows of the key light), 'toon' (held out: brightness quantised into bands, dark outlines
    at depth edges).
    """

    key_direction: tuple[float, float, float] = (0.40, 0.30, 0.87)
    fill_direction: tuple[float, float, float] = (-0.55, -0.65, 0.35)
    ambient: float = 0.25
    key: float = 0.40
    fill: float = 0.12
    lamp: float = 0.45
    shading: str = "lambert"
    specular: float = 0.0
    shininess: float = 16.0
    shadow_strength: float = 0.0
    """Fraction of the key light a cast shadow removes (1 = hard black shadow)."""
    toon_levels: int = 0


@dataclass(frozen=True)
class ImageEffects:
    """The camera's image pipeline, applied to the rendered RGB (never to depth or IDs)."""

    gain: float = 1.0
    gamma: float = 1.0
    white_balance: tuple[float, float, float] = (1.0, 1.0, 1.0)
    blur_sigma: float = 0.0
    """Gaussian blur in pixels of the camera image (defocus, motion)."""
    noise_sigma: float = 0.0
    """Gaussian sensor noise, in 8-bit grey levels."""
    jpeg_quality: int = 0
    """0 = no compression."""
    vignette: float = 0.0
    """Brightness lost at the image corners (held out)."""

    @property
    def identity(self) -> bool:
        return self == ImageEffects()


@dataclass(frozen=True)
class CameraStyle:
    """Lens and mount of every camera of the rig."""

    fov_deg: float = 60.0
    principal_offset: tuple[float, float] = (0.0, 0.0)
    """Principal point shift as a fraction of the image width and height."""
    mount_height: float = 1.1
    tilt_deg: float = 20.0


@dataclass(frozen=True)
class SceneStyle:
    """One concrete draw of every appearance factor of a sequence."""

    object_textures: tuple[str, ...] = ("plain", "stripes", "checker")
    texture_weights: tuple[float, ...] | None = (0.4, 0.3, 0.3)
    texture_scale: tuple[float, float] = (0.25, 0.25)
    texture_tone: tuple[float, float] = (0.55, 0.55)
    shapes: tuple[str, ...] = ("cube", "box", "sphere", "cylinder", "cone")
    random_colors: bool = False
    """True: object albedos drawn from the whole colour space (colour words name the nearest palette colour)."""
    size_scale: float = 1.0
    """Multiplies every object's size class range."""
    floor: Texture | None = None
    walls: Texture | None = None
    """None: the fixed floor tiles, wall panels and skirting of the default look."""
    room_colors: tuple[tuple[float, float, float], ...] | None = None
    """Albedos of floor, ceiling and four walls; None draws them from the default palette."""
    lighting: Lighting = field(default_factory=Lighting)
    effects: ImageEffects = field(default_factory=ImageEffects)
    camera: CameraStyle = field(default_factory=CameraStyle)
    duplicate_pairs: int | None = None
    """Identical pairs placed side by side; None draws 0 to 3 of them (the scene's own rule)."""
    seed: int = 0
    """Stream for per-view image noise."""

    @classmethod
    def default(cls) -> SceneStyle:
        return cls()


@dataclass(frozen=True)
class Domain:
    """The values each factor may take in one domain."""

    name: str
    object_textures: tuple[str, ...]
    room_textures: tuple[str, ...]
    shapes: tuple[str, ...]
    rooms: tuple[str, ...]
    fov_ranges: tuple[tuple[float, float], ...]
    shadings: tuple[str, ...]
    vignette: tuple[float, float] = (0.0, 0.0)


TRAIN_TEXTURES = ("plain", "stripes", "checker", "rings", "noise", "gradient")
HELD_OUT_TEXTURES = ("dots", "diagonal")
TRAIN_SHAPES = ("cube", "box", "sphere", "cylinder", "cone", "ellipsoid", "prism")
HELD_OUT_SHAPES = ("pyramid",)

DOMAINS: dict[str, Domain] = {
    "train": Domain(
        name="train",
        object_textures=TRAIN_TEXTURES,
        room_textures=TRAIN_TEXTURES,
        shapes=TRAIN_SHAPES,
        rooms=("room", "room", "hall"),
        fov_ranges=((40.0, 60.0), (70.0, 100.0)),
        shadings=("lambert", "phong", "shadow"),
    ),
    "foreign": Domain(
        name="foreign",
        object_textures=HELD_OUT_TEXTURES + ("plain", "checker"),
        room_textures=HELD_OUT_TEXTURES,
        shapes=HELD_OUT_SHAPES + ("cube", "cylinder", "sphere"),
        rooms=("corridor", "room"),
        fov_ranges=((60.0, 70.0),),
        shadings=("toon",),
        vignette=(0.25, 0.45),
    ),
}
"""Training and foreign factor pools. Foreign keeps a few training values (plain and checker textures,
common shapes) so that its scenes are not all unusual at once, but every foreign scene has held-out
room textures, cel shading, vignetting and a held-out field of view, and a held-out shape or layout."""


def _unit(v: np.ndarray) -> tuple[float, float, float]:
    v = np.asarray(v, np.float64)
    return tuple(float(x) for x in v / np.linalg.norm(v))


def _direction(rng: np.random.Generator, elevation_deg: tuple[float, float]) -> tuple[float, float, float]:
    az = rng.uniform(0, 2 * np.pi)
    el = np.radians(rng.uniform(*elevation_deg))
    return _unit([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])


def random_albedo(rng: np.random.Generator, saturation: tuple[float, float] = (0.0, 1.0),
                  value: tuple[float, float] = (0.1, 0.95)) -> tuple[float, float, float]:
    """An albedo drawn uniformly in hue, and in the given saturation and value ranges."""
    r, g, b = colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(*saturation), rng.uniform(*value))
    return float(r), float(g), float(b)


def sample_style(domain: str | Domain, rng: np.random.Generator) -> SceneStyle:
    """One random style of `domain` ('train' or 'foreign')."""
    dom = DOMAINS[domain] if isinstance(domain, str) else domain
    if not isinstance(dom, Domain):
        raise ValueError(f"unknown domain {domain!r}; choose from {', '.join(DOMAINS)}")

    def room_texture() -> Texture:
        return Texture(kind=str(rng.choice(dom.room_textures)), scale=float(np.exp(rng.uniform(np.log(0.15),
                                                                                              np.log(1.2)))),
                       tone=float(rng.uniform(0.45, 0.9)), phase=float(rng.uniform(0, 100)))

    fov_range = dom.fov_ranges[int(rng.integers(len(dom.fov_ranges)))]
    shading = str(rng.choice(dom.shadings))
    lighting = Lighting(
        key_direction=_direction(rng, (25.0, 85.0)),
        fill_direction=_direction(rng, (10.0, 60.0)),
        ambient=float(rng.uniform(0.08, 0.45)),
        key=float(rng.uniform(0.2, 0.75)),
        fill=float(rng.uniform(0.0, 0.3)),
        lamp=float(rng.uniform(0.0, 0.6)),
        shading=shading,
        specular=float(rng.uniform(0.15, 0.5)) if shading == "phong" else 0.0,
        shininess=float(rng.uniform(6.0, 60.0)),
        shadow_strength=float(rng.uniform(0.5, 0.95)) if shading == "shadow" else 0.0,
        toon_levels=int(rng.integers(3, 5)) if shading == "toon" else 0,
    )
    effects = ImageEffects(
        gain=float(np.exp(rng.uniform(np.log(0.6), np.log(1.5)))),
        gamma=float(rng.uniform(0.75, 1.3)),
        white_balance=tuple(float(x) for x in rng.uniform(0.85, 1.15, 3)),
        blur_sigma=float(rng.choice([0.0, rng.uniform(0.3, 1.5)], p=[0.5, 0.5])),
        noise_sigma=float(rng.choice([0.0, rng.uniform(1.0, 8.0)], p=[0.4, 0.6])),
        jpeg_quality=int(rng.choice([0, int(rng.integers(30, 95))], p=[0.5, 0.5])),
        vignette=float(rng.uniform(*dom.vignette)),
    )
    camera = CameraStyle(
        fov_deg=float(rng.uniform(*fov_range)),
        principal_offset=(float(rng.uniform(-0.05, 0.05)), float(rng.uniform(-0.05, 0.05))),
        mount_height=float(rng.uniform(0.45, 1.6)),
        tilt_deg=float(rng.uniform(5.0, 35.0)),
    )
    colors = (random_albedo(rng, (0.0, 0.5), (0.2, 0.8)),) + tuple(
        random_albedo(rng, (0.0, 0.4), (0.35, 0.95)) for _ in range(5))
    lo = float(rng.uniform(0.1, 0.3))
    tone_lo = float(rng.uniform(0.3, 0.7))
    return SceneStyle(
        object_textures=dom.object_textures,
        texture_weights=None,
        texture_scale=(lo, lo + float(rng.uniform(0.05, 0.35))),
        texture_tone=(tone_lo, min(0.9, tone_lo + 0.3)),
        shapes=dom.shapes,
        random_colors=True,
        size_scale=float(rng.uniform(0.7, 1.4)),
        floor=room_texture(),
        walls=room_texture(),
        room_colors=colors,
        lighting=lighting,
        effects=effects,
        camera=camera,
        seed=int(rng.integers(2**31)),
    )
