"""Training windows rendered once to disk and reused with cheap augmentation.

Rendering a synthetic window costs about as much CPU as a training step of the tiny model, and on
a shared 2-core machine a render worker takes its core from the training process. A cache renders
the training scene stream once (`python -m iggt_ros.train.cache --out DIR --windows N`), into
memory-mapped arrays that several training processes share through the page cache; training then
draws windows from it and varies them on the fly (frame subsets, horizontal flips with the mirrored
geometry, colour jitter, crops), which costs milliseconds per window.

Windows are 8 views of one scene from the same stream as `SyntheticWindowSource` (training seeds
only, the full curriculum range of motion and object counts), a fixed share in the package's
default look and the rest in randomised training looks. Rendering resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from iggt_ros.train.batch import TrainWindow
from iggt_ros.train.scenes import Curriculum, SyntheticWindowSource

CACHE_FRAMES = 8
FIELDS = ("rgb", "depth", "instance_ids", "intrinsics", "world_from_camera")
CACHE_SEED_OFFSET = 7_000
"""The cache draws its scenes as step numbers of a `SyntheticWindowSource` with seed `seed + CACHE_SEED_OFFSET`
(training seeds only), so a cache never repeats the scenes of an on-the-fly run with the same `--seed`."""


class CacheError(RuntimeError):
    """A cache folder is missing, incomplete or of another size."""


@dataclass
class CacheSpec:
    """What a cache holds: window count, input size, and the share rendered in the default look."""

    windows: int
    height: int = 84
    width: int = 140
    default_look_fraction: float = 0.3
    seed: int = 0

    def shapes(self) -> dict[str, tuple[tuple[int, ...], str]]:
        n, s, h, w = self.windows, CACHE_FRAMES, self.height, self.width
        return {"rgb": ((n, s, h, w, 3), "uint8"), "depth": ((n, s, h, w), "float16"),
                "instance_ids": ((n, s, h, w), "uint16"), "intrinsics": ((n, s, 3, 3), "float32"),
                "world_from_camera": ((n, s, 4, 4), "float64")}


def render_cache(out: str | Path, spec: CacheSpec, log_every: int = 50) -> Path:
    """Render `spec.windows` windows into `out` (resuming after the last window written)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    meta_path = out / "cache.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else None
    if meta is not None and {k: meta[k] for k in ("windows", "height", "width", "default_look_fraction", "seed")} \
            != vars(spec):
        raise CacheError(f"{out} holds another cache ({meta}); choose another --out or the same settings")
    done = int(meta["done"]) if meta else 0
    cpu = float(meta.get("cpu_seconds", 0.0)) if meta else 0.0
    mode = "r+" if meta else "w+"
    arrays = {name: np.lib.format.open_memmap(out / f"{name}.npy", mode=mode, dtype=dtype, shape=shape)
              for name, (shape, dtype) in spec.shapes().items()}
    sources = {look: SyntheticWindowSource(spec.height, spec.width, seed=spec.seed + CACHE_SEED_OFFSET,
                                           curriculum=Curriculum(min_frames=2, end_max_frames=CACHE_FRAMES),
                                           domain=look) for look in (None, "train")}
    start = time.process_time()
    for i in range(done, spec.windows):
        rng = np.random.default_rng([spec.seed, i, 5])
        look = None if rng.random() < spec.default_look_fraction else "train"
        window = sources[look].window(i, 0, CACHE_FRAMES, progress=float(rng.random()))
        arrays["rgb"][i] = window.rgb
        arrays["depth"][i] = np.nan_to_num(window.depth, nan=0.0, posinf=0.0).astype(np.float16)
        arrays["instance_ids"][i] = window.instance_ids.astype(np.uint16)
        arrays["intrinsics"][i] = window.intrinsics
        arrays["world_from_camera"][i] = window.world_from_camera
        if (i + 1) % log_every == 0 or i + 1 == spec.windows:
            for array in arrays.values():
                array.flush()
            meta = {**vars(spec), "done": i + 1, "frames": CACHE_FRAMES,
                    "cpu_seconds": round(cpu + time.process_time() - start, 1)}
            meta_path.write_text(json.dumps(meta, indent=2) + "\n")
            print(f"cache: {i + 1}/{spec.windows} windows, {meta['cpu_seconds']:.0f} CPU s", flush=True)
    return out


def mirror_window(window: TrainWindow) -> TrainWindow:
    """Flip every view left-right and mirror the scene so the geometry stays consistent.

    Flipping image x maps camera coordinates (x, y, z) to (-x, y, z); the same views of the
    mirrored world M X (M = diag(-1, 1, 1)) have poses M T M, still proper rotations, and
    principal points W - 1 - cx.
    """
    width = window.rgb.shape[2]
    k = window.intrinsics.copy()
    k[:, 0, 2] = (width - 1) - k[:, 0, 2]
    m = np.diag([-1.0, 1.0, 1.0, 1.0])
    return TrainWindow(np.ascontiguousarray(window.rgb[:, :, ::-1]), np.ascontiguousarray(window.depth[:, :, ::-1]),
                       np.ascontiguousarray(window.instance_ids[:, :, ::-1]), k, m @ window.world_from_camera @ m)


def crop_window(window: TrainWindow, top: int, left: int, height: int, width: int) -> TrainWindow:
    """Crop every view to (height, width) at (top, left) and scale back to the full size (a zoom).

    RGB is resized bilinearly, depth and IDs by nearest pixel centre, intrinsics accordingly.
    """
    import torch
    import torch.nn.functional as F

    _, full_h, full_w, _ = window.rgb.shape
    sy, sx = full_h / height, full_w / width
    rgb = torch.from_numpy(np.ascontiguousarray(window.rgb[:, top:top + height, left:left + width]))
    rgb = F.interpolate(rgb.permute(0, 3, 1, 2).float(), size=(full_h, full_w), mode="bilinear", align_corners=False)
    rows = top + np.minimum(((np.arange(full_h) + 0.5) / sy).astype(int), height - 1)
    cols = left + np.minimum(((np.arange(full_w) + 0.5) / sx).astype(int), width - 1)
    k = window.intrinsics.copy()
    k[:, 0, 0] *= sx
    k[:, 1, 1] *= sy
    k[:, 0, 2] = (k[:, 0, 2] - left + 0.5) * sx - 0.5
    k[:, 1, 2] = (k[:, 1, 2] - top + 0.5) * sy - 0.5
    return TrainWindow(rgb.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy(),
                       window.depth[:, rows][:, :, cols], window.instance_ids[:, rows][:, :, cols], k,
                       window.world_from_camera)


def jitter_colours(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brightness, contrast, saturation and per-channel gain, the same for every view of a window."""
    x = rgb.astype(np.float32) / 255.0
    x = x * rng.uniform(0.9, 1.1, size=3).astype(np.float32) * np.float32(rng.uniform(0.75, 1.25))
    mean = x.mean()
    x = (x - mean) * np.float32(rng.uniform(0.75, 1.25)) + mean
    grey = x.mean(axis=-1, keepdims=True)
    x = (x - grey) * np.float32(rng.uniform(0.6, 1.4)) + grey
    return (np.clip(x, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _grey_axis_turn(angle: np.ndarray) -> np.ndarray:
    """Rotation matrices (N, 3, 3) about RGB's grey axis: a hue turn that keeps every pixel's brightness."""
    k = np.full(3, 1.0 / np.sqrt(3.0))
    cross = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    c, s = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    return c * np.eye(3) + s * cross + (1.0 - c) * np.outer(k, k)


def recolour_instances(rgb: np.ndarray, instance_ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Give every instance (and the background, ID 0) its own hue turn, saturation and brightness.

    A window's objects keep their shading, texture and outline and look the same in every view, but
    their colours are drawn afresh, so the instance features cannot lean on the few colours that the
    training looks happen to give an object: what makes an instance is that its pixels belong together.
    """
    ids, inverse = np.unique(instance_ids, return_inverse=True)
    n = len(ids)
    saturation = rng.uniform(0.3, 1.5, size=n)[:, None, None]
    grey = np.full((3, 3), 1.0 / 3.0)
    matrices = rng.uniform(0.7, 1.3, size=n)[:, None, None] * (
        (1.0 - saturation) * grey + saturation * np.eye(3)) @ _grey_axis_turn(rng.uniform(-np.pi, np.pi, size=n))
    x = rgb.reshape(-1, 3).astype(np.float32)
    out = np.einsum("nij,nj->ni", matrices.astype(np.float32)[inverse.reshape(-1)], x)
    return (np.clip(out, 0.0, 255.0) + 0.5).astype(np.uint8).reshape(rgb.shape)


@dataclass
class Augment:
    """Probabilities and ranges of the on-the-fly augmentation."""

    flip: float = 0.5
    crop: float = 0.4
    crop_scale: tuple[float, float] = (0.7, 1.0)
    colour: float = 0.8
    recolour: float = 0.0
    """Share of windows whose instances each get new colours (`recolour_instances`)."""


@dataclass
class CachedWindowSource:
    """Batches from a rendered cache, augmented on the fly; batch `step` is a pure function of (seed, step)."""

    root: str | Path
    height: int
    width: int
    min_frames: int = 2
    max_frames: int = 8
    seed: int = 0
    augment: Augment | None = field(default_factory=Augment)
    arrays: dict = field(init=False, repr=False)

    def __post_init__(self) -> None:
        root = Path(self.root)
        meta_path = root / "cache.json"
        if not meta_path.exists():
            raise CacheError(f"{root} is not a window cache: render one with "
                             f"`python -m iggt_ros.train.cache --out {root} --windows N`")
        meta = json.loads(meta_path.read_text())
        if (meta["height"], meta["width"]) != (self.height, self.width):
            raise CacheError(f"{root} holds {meta['width']}x{meta['height']} windows; the model trains at "
                             f"{self.width}x{self.height}: render a cache at that size")
        if not 2 <= self.min_frames <= self.max_frames <= CACHE_FRAMES:
            raise CacheError(f"frames {self.min_frames}:{self.max_frames} must lie in 2:{CACHE_FRAMES}")
        self.done = int(meta["done"])
        if self.done < 1:
            raise CacheError(f"{root} holds no rendered window yet")
        self.arrays = {name: np.load(root / f"{name}.npy", mmap_mode="r") for name in FIELDS}

    def __getstate__(self) -> dict:  # memory maps do not pickle; a worker process reopens them
        state = dict(self.__dict__)
        state.pop("arrays", None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.arrays = {name: np.load(Path(self.root) / f"{name}.npy", mmap_mode="r") for name in FIELDS}

    def batch(self, step: int, batch_size: int, progress: float) -> list[TrainWindow]:
        rng = np.random.default_rng([self.seed, step, 11])
        frames = int(rng.integers(self.min_frames, self.max_frames + 1))
        return [self.window(rng, frames) for _ in range(batch_size)]

    def window(self, rng: np.random.Generator, frames: int) -> TrainWindow:
        i = int(rng.integers(self.done))
        start = int(rng.integers(0, CACHE_FRAMES - frames + 1))
        if start % 2 and frames % 2 == 0:
            start -= 1  # two-camera windows interleave the cameras: keep whole rig steps
        views = slice(start, start + frames)
        a = self.arrays
        window = TrainWindow(np.array(a["rgb"][i, views]), np.array(a["depth"][i, views], dtype=np.float32),
                             np.array(a["instance_ids"][i, views], dtype=np.int64),
                             np.array(a["intrinsics"][i, views]), np.array(a["world_from_camera"][i, views]))
        aug = self.augment
        if aug is None:
            return window
        if rng.random() < aug.flip:
            window = mirror_window(window)
        if rng.random() < aug.crop:
            scale = rng.uniform(*aug.crop_scale)
            h, w = max(8, int(round(self.height * scale))), max(8, int(round(self.width * scale)))
            window = crop_window(window, int(rng.integers(0, self.height - h + 1)),
                                 int(rng.integers(0, self.width - w + 1)), h, w)
        # no draw when off: the windows of a run without recolouring stay what they were (exact resume, same study)
        if aug.recolour > 0 and rng.random() < aug.recolour:
            window.rgb = recolour_instances(window.rgb, window.instance_ids, rng)
        if rng.random() < aug.colour:
            window.rgb = jitter_colours(window.rgb, rng)
        return window


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Render training windows once into a cache folder.")
    parser.add_argument("--out", required=True, help="cache folder (resumes when it holds the same cache)")
    parser.add_argument("--windows", type=int, default=2000)
    parser.add_argument("--size", default="84x140", metavar="HxW")
    parser.add_argument("--default-look", type=float, default=0.3, help="share of windows in the default look")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    h, w = (int(v) for v in args.size.lower().split("x"))
    render_cache(args.out, CacheSpec(args.windows, h, w, args.default_look, args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
