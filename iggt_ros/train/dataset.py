"""Training windows read from a dataset folder of scenes, for fine-tuning on real or external data.

Layout (documented in README.md next to this file)::

    <root>/<scene>/images/<frame>.png|.jpg      RGB (any size; all frames of a scene the same size)
    <root>/<scene>/depth/<frame>.npy|.png       z-depth: float metres (.npy) or uint16 millimetres (.png); 0 = unknown
    <root>/<scene>/cam/<frame>.json             {"intrinsics": 3x3, "world_from_camera": 4x4} (OpenCV optical frame)
    <root>/<scene>/instances/<frame>.png|.npy   integer instance IDs, the same object has the same ID in every frame

A frame is used when all four files exist. Depth and instance maps may have another size than the
image; the intrinsics refer to the image.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from iggt_ros.engine.preprocess import resize_image, resize_nearest, scale_intrinsics
from iggt_ros.train.batch import TrainWindow

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
MAP_SUFFIXES = (".npy", ".png")


class DatasetError(ValueError):
    """A dataset folder that does not follow the documented layout."""


def _find(folder: Path, stem: str, suffixes: tuple[str, ...]) -> Path | None:
    for suffix in suffixes:
        path = folder / f"{stem}{suffix}"
        if path.exists():
            return path
    return None


def _read_map(path: Path) -> np.ndarray:
    if path.suffix == ".npy":
        return np.load(path)
    from PIL import Image

    return np.asarray(Image.open(path))


@dataclass
class SceneFolder:
    """One scene of a dataset folder: its complete frames in name order."""

    path: Path
    frames: list[str] = field(default_factory=list)

    @classmethod
    def open(cls, path: str | Path) -> SceneFolder:
        path = Path(path)
        missing = [d for d in ("images", "depth", "cam", "instances") if not (path / d).is_dir()]
        if missing:
            raise DatasetError(f"scene {path} lacks the folder(s) {', '.join(missing)}")
        stems = sorted(p.stem for p in (path / "images").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        frames = [s for s in stems if _find(path / "depth", s, MAP_SUFFIXES) and (path / "cam" / f"{s}.json").exists()
                  and _find(path / "instances", s, MAP_SUFFIXES)]
        return cls(path, frames)

    def read(self, stem: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(rgb uint8 [H,W,3], depth metres [h,w], ids [h,w] int64, K [3,3] at the image size, world_from_camera)."""
        from PIL import Image

        image_path = _find(self.path / "images", stem, IMAGE_SUFFIXES)
        rgb = np.asarray(Image.open(image_path).convert("RGB"))
        depth_path = _find(self.path / "depth", stem, MAP_SUFFIXES)
        depth = _read_map(depth_path).astype(np.float32)
        if depth_path.suffix == ".png":
            depth = depth / 1000.0  # uint16 millimetres
        ids = _read_map(_find(self.path / "instances", stem, MAP_SUFFIXES)).astype(np.int64)
        if ids.ndim != 2 or depth.ndim != 2:
            raise DatasetError(f"{self.path}/{stem}: depth and instance maps must be single-channel 2-D arrays")
        cam = json.loads((self.path / "cam" / f"{stem}.json").read_text())
        try:
            k = np.asarray(cam["intrinsics"], np.float64).reshape(3, 3)
            pose = np.asarray(cam["world_from_camera"], np.float64).reshape(4, 4)
        except (KeyError, ValueError) as exc:
            raise DatasetError(f"{self.path}/cam/{stem}.json needs 'intrinsics' (3x3) and 'world_from_camera' "
                               f"(4x4): {exc}") from exc
        return rgb, depth, ids, k, pose

    def window(self, stems: list[str], size: tuple[int, int]) -> TrainWindow:
        """Frames `stems` at the model input size (bicubic RGB like the engine, nearest depth and IDs)."""
        rgbs, depths, idss, ks, poses = [], [], [], [], []
        for stem in stems:
            rgb, depth, ids, k, pose = self.read(stem)
            rgbs.append(resize_image(rgb, size))
            depths.append(resize_nearest(depth, size))
            idss.append(resize_nearest(ids, size))
            ks.append(scale_intrinsics(k, rgb.shape[:2], size))
            poses.append(pose)
        return TrainWindow(np.stack(rgbs), np.stack(depths).astype(np.float32), np.stack(idss),
                           np.stack(ks).astype(np.float32), np.stack(poses))


@dataclass
class FolderWindowSource:
    """Batches of windows from a dataset folder: a random scene, then S frames at a random stride.

    Like the synthetic source, batch `step` is a pure function of (seed, step), so resumed runs
    continue with the windows they would have seen.
    """

    root: str | Path
    height: int
    width: int
    min_frames: int = 2
    max_frames: int = 8
    seed: int = 0
    max_stride: int = 3
    scenes: list[SceneFolder] = field(init=False)

    def __post_init__(self) -> None:
        root = Path(self.root)
        if not root.is_dir():
            raise DatasetError(f"dataset folder {root} does not exist")
        scenes = [SceneFolder.open(p) for p in sorted(root.iterdir()) if p.is_dir()]
        self.scenes = [s for s in scenes if len(s.frames) >= self.min_frames]
        if not self.scenes:
            raise DatasetError(f"no scene in {root} has {self.min_frames} or more complete frames "
                               "(images/, depth/, cam/, instances/ with matching names)")

    def batch(self, step: int, batch_size: int, progress: float) -> list[TrainWindow]:
        rng = np.random.default_rng([self.seed, step])
        frames = int(rng.integers(self.min_frames, self.max_frames + 1))
        return [self._window(rng, frames) for _ in range(batch_size)]

    def _window(self, rng: np.random.Generator, frames: int) -> TrainWindow:
        scene = self.scenes[int(rng.integers(len(self.scenes)))]
        n = min(frames, len(scene.frames))
        stride = int(rng.integers(1, self.max_stride + 1))
        while stride > 1 and (n - 1) * stride >= len(scene.frames):
            stride -= 1
        start = int(rng.integers(0, len(scene.frames) - (n - 1) * stride))
        stems = [scene.frames[start + i * stride] for i in range(n)]
        if n < frames:  # short scene: repeat frames so the batch still stacks
            stems = (stems * frames)[:frames]
        return scene.window(stems, (self.height, self.width))


def export_scene(views: list, folder: str | Path, depth_png: bool = False) -> Path:
    """Write rendered views (`iggt_ros.synthetic.RenderedView`) as one scene of a dataset folder.

    Gives a ready-made example of the layout and a way to mix synthetic scenes into fine-tuning.
    """
    from PIL import Image

    folder = Path(folder)
    for sub in ("images", "depth", "cam", "instances"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for i, view in enumerate(views):
        stem = f"{i:06d}"
        Image.fromarray(view.rgb).save(folder / "images" / f"{stem}.png")
        if depth_png:
            mm = np.clip(np.round(view.depth * 1000.0), 0, 65535).astype(np.uint16)
            Image.fromarray(mm).save(folder / "depth" / f"{stem}.png")
        else:
            np.save(folder / "depth" / f"{stem}.npy", view.depth.astype(np.float32))
        Image.fromarray(view.instance_ids.astype(np.uint16)).save(folder / "instances" / f"{stem}.png")
        cam = {"intrinsics": np.asarray(view.intrinsics).tolist(),
               "world_from_camera": np.asarray(view.world_from_camera).tolist()}
        (folder / "cam" / f"{stem}.json").write_text(json.dumps(cam))
    return folder
