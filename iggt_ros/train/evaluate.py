"""Quality of an engine on held-out synthetic sequences, measured through the full perception pipeline.

Instance quality (T-mIoU, T-SR) is scored on the persistent instance images the pipeline
publishes, so clustering, tracking and ID bookkeeping count, not just the raw features. Geometry
(depth Abs.Rel and delta < 1.03, camera ATE) is scored on the engine's own window predictions,
because those are what the model is responsible for. Scenes use seeds below
`HELD_OUT_SEED_LIMIT`, which training never draws.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from iggt_ros.config import IggtConfig
from iggt_ros.engine.base import Engine, ViewKey, WindowPrediction
from iggt_ros.engine.preprocess import resize_nearest
from iggt_ros.eval.metrics import depth_metrics, drop_small_instances, pose_ate
from iggt_ros.eval.record import RunRecord
from iggt_ros.perception.frames import CameraFrame, FrameSet
from iggt_ros.perception.pipeline import Pipeline
from iggt_ros.synthetic import SyntheticSequence
from iggt_ros.synthetic.spec import SceneSpec
from iggt_ros.train.scenes import HELD_OUT_SEED_LIMIT

FOUND_MIN_IOU = 0.5
"""A true object counts as found when a published ID covers it with at least this T-mIoU."""
TINY_INPUT_HW = (84, 140)
"""Input size of models without their own `input_hw` in the weights' configuration."""


@dataclass(frozen=True)
class Scenario:
    """One named held-out synthetic sequence."""

    name: str
    scene: SceneSpec

    def make(self) -> SyntheticSequence:
        if self.scene.seed >= HELD_OUT_SEED_LIMIT:
            raise ValueError(f"scenario {self.name}: seed {self.scene.seed} is in the training range")
        return self.scene.make()


def _held_out(seed: int, room: str, trajectory: str, cameras: int, num_objects: int = 8, num_steps: int = 24,
              domain: str | None = None, duplicate_pairs: int | None = None) -> SceneSpec:
    """The benchmarks' sequences: half a loop or sweep, 8 objects, 24 steps unless said."""
    return SceneSpec(seed=seed, cameras=cameras, frames=num_steps, trajectory=trajectory, num_objects=num_objects,
                     room=room, coverage=0.5, domain=domain, duplicate_pairs=duplicate_pairs)


HELD_OUT_SCENARIOS = (
    Scenario("room-orbit-1cam", _held_out(900_101, "room", "orbit", 1)),
    Scenario("room-walk-1cam", _held_out(900_102, "room", "walk", 1)),
    Scenario("hall-pan-1cam", _held_out(900_103, "hall", "pan", 1, num_objects=10)),
    Scenario("room-orbit-2cam", _held_out(900_104, "room", "orbit", 2, num_steps=16)),
    Scenario("hall-walk-2cam", _held_out(900_105, "hall", "walk", 2, num_objects=10, num_steps=16)),
    Scenario("room-pan-2cam", _held_out(900_106, "room", "pan", 2, num_steps=16)),
)
"""Several room kinds, trajectories and rigs in the default look; seeds far below the training range."""

TRAIN_DOMAIN_SCENARIOS = (
    Scenario("train-room-orbit-1cam", _held_out(905_101, "room", "orbit", 1, domain="train")),
    Scenario("train-hall-walk-2cam", _held_out(905_102, "hall", "walk", 2, num_objects=10, num_steps=16,
                                               domain="train")),
    Scenario("train-room-pan-2cam", _held_out(905_103, "room", "pan", 2, num_steps=16, domain="train",
                                              duplicate_pairs=3)),
)
"""In-distribution for the randomised training: looks drawn from the training factor pool, held-out seeds."""

FOREIGN_SCENARIOS = (
    Scenario("foreign-corridor-walk-1cam", _held_out(910_101, "corridor", "walk", 1, domain="foreign")),
    Scenario("foreign-room-orbit-1cam", _held_out(910_102, "room", "orbit", 1, domain="foreign")),
    Scenario("foreign-duplicates-1cam", _held_out(910_103, "room", "orbit", 1, domain="foreign", duplicate_pairs=4)),
    Scenario("foreign-room-pan-2cam", _held_out(910_104, "room", "pan", 2, num_steps=16, domain="foreign")),
    Scenario("foreign-hall-orbit-2cam", _held_out(910_105, "hall", "orbit", 2, num_objects=10, num_steps=16,
                                                  domain="foreign")),
    Scenario("foreign-corridor-orbit-2cam", _held_out(910_106, "corridor", "orbit", 2, num_steps=16, domain="foreign",
                                                      duplicate_pairs=2)),
)
"""Validation only: every factor value training never draws (`synthetic.style.DOMAINS['foreign']`: held-out
textures, a held-out shape, the corridor layout, a field-of-view band, cel shading with outlines, vignetting).
Never use these to choose training settings or post-processing parameters."""


class RecordingEngine(Engine):
    """Passes windows to another engine and keeps what it predicted, for scoring geometry."""

    def __init__(self, inner: Engine) -> None:
        self.inner = inner
        self.name = inner.name
        self.records: list[tuple[list[ViewKey], WindowPrediction]] = []

    @property
    def input_size(self) -> tuple[int, int]:
        return self.inner.input_size

    def infer(self, images: np.ndarray, views: Sequence[ViewKey] | None = None) -> WindowPrediction:
        pred = self.inner.infer(images, views)
        self.records.append((list(views or []), pred))
        return pred

    def close(self) -> None:
        self.inner.close()


def pipeline_config(sequence: SyntheticSequence, input_hw: tuple[int, int], min_area_px: int,
                    overrides: dict | None = None) -> IggtConfig:
    """Pipeline settings of the benchmark: every step a keyframe, 8 views per window, masks down to `min_area_px`."""
    steps = max(2, 8 // len(sequence.rig.names))
    return IggtConfig().replace(**{
        "input.cameras": sequence.rig.names, "input.image_height": input_hw[0], "input.image_width": input_hw[1],
        "window.size": steps, "window.stride": steps // 2,
        "window.min_translation_m": 0.0, "window.min_rotation_deg": 0.0, "window.min_image_change": 0.0,
        "clustering.min_instance_area_px": min_area_px, **(overrides or {}),
    })


@dataclass
class SequenceScore:
    """Scores of one engine on one scenario."""

    scenario: str
    engine: str
    t_miou: float
    t_sr: float
    depth_abs_rel: float
    depth_delta_103: float
    pose_ate: float
    """Mean over windows of the camera-position ATE after a per-window Sim(3) fit, in metres."""
    published_abs_rel: float
    """Abs.Rel of the published depth images, as published (no rescaling): metric when TF gives poses."""
    pred_ids: int
    """Distinct instance IDs published over the sequence."""
    duplicate_pairs: int
    """Identical pairs whose both objects are visible in the sequence."""
    duplicates_kept: float
    """Fraction of those pairs published as two instances (both matched, each with T-mIoU >= 0.5); NaN if none."""
    windows: int
    objects: int
    inference_ms: float
    seconds: float
    missed_objects: int = 0
    """True objects that no published ID covers with T-mIoU >= 0.5 (unmatched, or matched to a poor mask)."""
    extra_ids: int = 0
    """Published IDs matched to no true object (split-off pieces, background blobs)."""
    published_scale: float = math.nan
    """Median over views of published / true depth: 1 when the output is metric (TF gave moving poses and the
    map moved into the world frame); the model's own scale while it stays in iggt_map."""
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def evaluate_sequence(
    scenario: Scenario,
    make_engine: Callable[[SyntheticSequence], Engine],
    input_hw: tuple[int, int] = TINY_INPUT_HW,
    min_area_px: int = 20,
    with_tf: bool = True,
    max_windows: int | None = None,
    overrides: dict | None = None,
) -> SequenceScore:
    """Run one scenario through Pipeline + engine and score it.

    Args:
        make_engine: builds the engine for a sequence (the oracle needs the sequence; models ignore it).
        input_hw: model input size; the pipeline shrinks the camera images to it.
        min_area_px: smallest mask (at input_hw) the pipeline keeps and the truth scores.
        with_tf: give the pipeline the true camera poses, as a robot's TF would.
        max_windows: stop after this many windows (for quick checks).
        overrides: further pipeline settings as dotted keys (e.g. {"clustering.position_weight": 0.5}).
    """
    start = time.perf_counter()
    sequence = scenario.make()
    engine = RecordingEngine(make_engine(sequence))
    pipe = Pipeline(pipeline_config(sequence, input_hw, min_area_px, overrides), engine)
    truth = {(v.camera, v.stamp_ns): v for v in sequence.views()}
    record = RunRecord(engine.name)  # the replay's accumulator: the published views, each counted once
    windows = 0
    infer_ms: list[float] = []
    for step in sequence.steps:
        frames = {v.camera: CameraFrame(v.camera, v.stamp_ns, v.rgb, v.intrinsics, f"{v.camera}_optical",
                                        v.world_from_camera if with_tf else None) for v in step}
        result = pipe.push(FrameSet(step[0].stamp_ns, frames))
        if result is None:
            continue
        windows += 1
        infer_ms.append(result.timings_ms.get("inference", math.nan))
        record.add_window_timings(result.timings_ms, metric=result.metric)
        for i, view in enumerate(result.views):
            if view.new:
                t = truth[(view.camera, view.stamp_ns)]
                record.add_view(result.instance_images[i],
                                drop_small_instances(resize_nearest(t.instance_ids, input_hw), min_area_px),
                                pred_depth=result.depth[i], gt_depth=resize_nearest(t.depth, input_hw))
        if max_windows is not None and windows >= max_windows:
            break
    inst = record.instances.result()

    pred_depth, gt_depth, ates = [], [], []
    for views, pred in engine.records:
        for i, key in enumerate(views):
            pred_depth.append(pred.depth[i])
            gt_depth.append(resize_nearest(truth[(key.camera, key.stamp_ns)].depth, input_hw))
        if len(views) >= 3:
            gt_poses = np.stack([truth[(k.camera, k.stamp_ns)].world_from_camera for k in views])
            ates.append(_window_ate(pred.extrinsics, gt_poses))
    depth = depth_metrics(pred_depth, gt_depth) if pred_depth else None  # the engine's own, not published
    as_published = record.published_depth.result() if record.num_views else None
    pairs, kept = duplicate_pairs_kept(sequence, inst)
    return SequenceScore(
        scenario=scenario.name,
        engine=engine.name,
        t_miou=float(inst.t_miou),
        t_sr=float(inst.t_sr),
        depth_abs_rel=float(depth.abs_rel) if depth else math.nan,
        depth_delta_103=float(depth.inlier_ratio) if depth else math.nan,
        pose_ate=float(np.mean(ates)) if ates else math.nan,
        published_abs_rel=float(as_published.abs_rel) if as_published else math.nan,
        pred_ids=int(inst.num_pred_ids),
        duplicate_pairs=pairs,
        duplicates_kept=kept,
        windows=windows,
        objects=int(inst.num_objects),
        inference_ms=float(np.median(infer_ms)) if infer_ms else math.nan,
        seconds=time.perf_counter() - start,
        missed_objects=sum(1 for o in inst.objects if o.pred_id is None or o.t_miou < FOUND_MIN_IOU),
        extra_ids=int(inst.num_pred_ids) - len(set(inst.matching.values())),
        published_scale=float(as_published.ratio) if as_published else math.nan,
    )


def duplicate_pairs_kept(sequence: SyntheticSequence, inst, min_iou: float = 0.5) -> tuple[int, float]:
    """(pairs seen, fraction kept apart) for the identical pairs of the scene.

    A pair is seen when both objects are visible in the scored views, and kept apart when both are matched
    to published IDs with T-mIoU >= `min_iou`: one ID over both objects gives each at most about half IoU.
    """
    scores = {o.gt_id: o for o in inst.objects}
    pairs = [(o.duplicate_of, o.id) for o in sequence.scene.objects if o.duplicate_of]
    seen = [(a, b) for a, b in pairs if a in scores and b in scores
            and scores[a].views_visible and scores[b].views_visible]
    if not seen:
        return 0, math.nan
    kept = sum(1 for a, b in seen if all(scores[i].pred_id is not None and scores[i].t_miou >= min_iou
                                         for i in (a, b)))
    return len(seen), kept / len(seen)


def model_input_hw(weights: str | Path | None = None) -> tuple[int, int]:
    """The input size a model was trained at (its configuration's `input_hw`), else TINY_INPUT_HW."""
    from iggt_ros.engine.weights import EMBEDDED_WEIGHTS
    from iggt_ros.model.checkpoint import CONFIG_METADATA_KEY, read_metadata
    from iggt_ros.model.config import IggtModelConfig

    stored = read_metadata(Path(weights) if weights else EMBEDDED_WEIGHTS).get(CONFIG_METADATA_KEY)
    hw = (IggtModelConfig.from_json(stored).extra or {}).get("input_hw") if stored else None
    return (int(hw[0]), int(hw[1])) if hw else TINY_INPUT_HW


def _window_ate(pred_extrinsics: np.ndarray, gt_world_from_camera: np.ndarray) -> float:
    """RMSE camera-position error of one window after a Sim(3) fit (predictions are up to similarity)."""
    pred_pos = -np.einsum("vji,vj->vi", pred_extrinsics[:, :3, :3], pred_extrinsics[:, :3, 3])
    gt_pos = gt_world_from_camera[:, :3, 3]
    return float(pose_ate(pred_pos, gt_pos).ate_rmse)


def tiny_engine_factory(weights: str | Path | None = None, input_hw: tuple[int, int] = TINY_INPUT_HW,
                        threads: int | None = None) -> Callable[[SyntheticSequence], Engine]:
    """Engines of a trained model (default: the embedded tiny model) for `evaluate_sequence`."""
    import torch

    from iggt_ros.engine.torch_engine import TorchEngine
    from iggt_ros.engine.weights import EMBEDDED_WEIGHTS

    if threads:
        torch.set_num_threads(threads)
    path = Path(weights) if weights else EMBEDDED_WEIGHTS
    engine = TorchEngine.from_checkpoint(path, input_size=input_hw)
    return lambda _sequence: engine


def oracle_engine_factory(input_hw: tuple[int, int] = TINY_INPUT_HW, seed: int = 0, twin_blind: bool = False
                          ) -> Callable[[SyntheticSequence], Engine]:
    """Degraded ground truth with window-local features and an unknown per-window similarity; `twin_blind`: the
    identical duplicates share their original's feature (`oracle.twin_blind_truth`)."""
    from iggt_ros.engine.oracle import OracleEngine, truth_from_sequence, twin_blind_truth

    truth = twin_blind_truth if twin_blind else truth_from_sequence
    return lambda sequence: OracleEngine(truth(sequence), input_size=input_hw, similarity="full",
                                         window_local_features=True, boundary_px=1, seed=seed)
