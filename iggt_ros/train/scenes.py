"""Training windows drawn from procedurally generated synthetic scenes, with a curriculum.

Every window is a pure function of (seed, step, index in batch), so a run is reproducible and a
resumed run sees exactly the windows it would have seen without the interruption. Scene seeds
used for training are disjoint from the held-out seeds that evaluation uses:

- training scenes: seeds >= TRAIN_SEED_BASE (10,000,000), one fresh scene per window;
- held-out scenes (benchmarks, tests, demos): seeds < HELD_OUT_SEED_LIMIT (1,000,000).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from iggt_ros.engine.preprocess import resize_image
from iggt_ros.synthetic import make_sequence
from iggt_ros.synthetic.style import sample_style
from iggt_ros.train.batch import TrainWindow

TRAIN_SEED_BASE = 10_000_000
HELD_OUT_SEED_LIMIT = 1_000_000
TRAJECTORIES = ("orbit", "walk", "pan")
ROOMS = ("room", "room", "hall")


@dataclass
class Curriculum:
    """How hard windows are at a point of training (progress in [0, 1]).

    Early windows have few frames, little motion and few objects so that cross-view
    correspondence is easy to find; later ones approach what the pipeline feeds the model.
    """

    min_frames: int = 2
    start_max_frames: int = 4
    end_max_frames: int = 8
    start_coverage: tuple[float, float] = (0.05, 0.2)
    end_coverage: tuple[float, float] = (0.05, 0.5)
    start_objects: tuple[int, int] = (3, 6)
    end_objects: tuple[int, int] = (3, 16)
    two_camera_fraction: float = 0.35
    ramp: float = 0.6
    """Fraction of training over which the difficulty rises to its end values."""

    def at(self, progress: float) -> tuple[int, tuple[float, float], tuple[int, int]]:
        t = float(np.clip(progress / max(self.ramp, 1e-9), 0.0, 1.0))
        max_frames = int(round(self.start_max_frames + t * (self.end_max_frames - self.start_max_frames)))
        cov = tuple(a + t * (b - a) for a, b in zip(self.start_coverage, self.end_coverage, strict=True))
        objs = tuple(int(round(a + t * (b - a))) for a, b in zip(self.start_objects, self.end_objects, strict=True))
        return max_frames, cov, objs


@dataclass
class SyntheticWindowSource:
    """Draws batches of training windows from fresh synthetic scenes."""

    height: int
    width: int
    seed: int = 0
    curriculum: Curriculum = field(default_factory=Curriculum)
    domain: str | None = "train"
    """Factor pool of the randomised look (`synthetic.style.DOMAINS`); None renders the default look with a
    field of view from `fov_range`."""
    fov_range: tuple[float, float] = (50.0, 75.0)
    supersampled_fraction: float = 0.25
    small_size: tuple[int, int] | None = None
    """(H, W) of the windows before `small_until` of training: a resolution curriculum. Steps at a smaller
    size cost a fraction of a full-size step and learn the appearance factors just as well; the last part
    of training at full size sharpens the masks."""
    small_until: float = 0.0

    def size_at(self, progress: float) -> tuple[int, int]:
        if self.small_size is not None and progress < self.small_until:
            return self.small_size
        return self.height, self.width
    """Share of windows rendered at 3x and shrunk with the engine's bicubic resize: real cameras are
    larger than the model input, so the model must also accept smoothed, antialiased edges."""

    def frames_for_step(self, step: int, progress: float) -> int:
        """Window size of a step (all windows of a batch share it so they stack)."""
        max_frames, _, _ = self.curriculum.at(progress)
        rng = np.random.default_rng([self.seed, step, 1])
        return int(rng.integers(self.curriculum.min_frames, max_frames + 1))

    def window(self, step: int, index: int, frames: int, progress: float) -> TrainWindow:
        """Window `index` of batch `step`: `frames` views of one fresh scene."""
        _, cov, objs = self.curriculum.at(progress)
        rng = np.random.default_rng([self.seed, step, index, 2])
        scene_seed = TRAIN_SEED_BASE + (self.seed * 1_000_003 + step * 97 + index) % 2_000_000_000
        cameras = 2 if (frames >= 2 and frames % 2 == 0 and rng.random() < self.curriculum.two_camera_fraction) else 1
        steps = frames // cameras
        factor = 3 if rng.random() < self.supersampled_fraction else 1
        style = sample_style(self.domain, rng) if self.domain else None
        height, width = self.size_at(progress)
        sequence = make_sequence(
            seed=scene_seed,
            num_steps=max(steps, 2),
            cameras=cameras,
            trajectory=str(rng.choice(TRAJECTORIES)),
            width=width * factor,
            height=height * factor,
            num_objects=int(rng.integers(objs[0], objs[1] + 1)),
            coverage=float(rng.uniform(*cov)),
            room=str(rng.choice(ROOMS)),
            fov_deg=float(rng.uniform(*self.fov_range)),
            style=style,
        )
        views = [v for step_views in sequence.steps[:steps] for v in step_views]
        if cameras == 1 and rng.random() < 0.5:
            views = views[::-1]  # either end of the motion may be the reference view
        window = TrainWindow(
            rgb=np.stack([v.rgb for v in views]),
            depth=np.stack([v.depth for v in views]).astype(np.float32),
            instance_ids=np.stack([v.instance_ids for v in views]).astype(np.int64),
            intrinsics=np.stack([v.intrinsics for v in views]).astype(np.float32),
            world_from_camera=np.stack([v.world_from_camera for v in views]).astype(np.float64),
        )
        return shrink_window(window, factor) if factor > 1 else window

    def batch(self, step: int, batch_size: int, progress: float) -> list[TrainWindow]:
        frames = self.frames_for_step(step, progress)
        return [self.window(step, i, frames, progress) for i in range(batch_size)]


def shrink_window(window: TrainWindow, factor: int) -> TrainWindow:
    """Reduce a window rendered at `factor` times the model size: bicubic RGB (as the engine resizes
    camera images), depth and IDs sampled at the centre pixel of every factor x factor block
    (odd factor: the block centre is a rendered pixel, so labels stay exact), intrinsics scaled."""
    s, h, w = window.depth.shape
    out_h, out_w = h // factor, w // factor
    c = factor // 2
    k = window.intrinsics.copy()
    k[:, :2, :] /= factor  # pixel centres: (u_small + 0.5) * factor = u_big + 0.5, which keeps c' = (c+0.5)/f-0.5
    k[:, 0, 2] = (window.intrinsics[:, 0, 2] + 0.5) / factor - 0.5
    k[:, 1, 2] = (window.intrinsics[:, 1, 2] + 0.5) / factor - 0.5
    return TrainWindow(
        rgb=np.stack([resize_image(img, (out_h, out_w)) for img in window.rgb]),
        depth=np.ascontiguousarray(window.depth[:, c::factor, c::factor][:, :out_h, :out_w]),
        instance_ids=np.ascontiguousarray(window.instance_ids[:, c::factor, c::factor][:, :out_h, :out_w]),
        intrinsics=k,
        world_from_camera=window.world_from_camera,
    )
