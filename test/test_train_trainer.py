"""The training loop: it learns, checkpoints and resumes exactly, logs, plots and exports weights."""

from __future__ import annotations

import argparse

import pytest
import torch

from iggt_ros.model import Iggt, IggtModelConfig
from iggt_ros.model.checkpoint import load_model
from iggt_ros.train import cli
from iggt_ros.train.plots import read_log
from iggt_ros.train.scenes import HELD_OUT_SEED_LIMIT, TRAIN_SEED_BASE, Curriculum, SyntheticWindowSource
from iggt_ros.train.trainer import TrainConfig, Trainer, learning_rate_factor, parameter_groups

H, W = 56, 84


def _trainer(out, steps=2) -> Trainer:
    torch.manual_seed(0)
    source = SyntheticWindowSource(H, W, seed=1, curriculum=Curriculum(min_frames=2, start_max_frames=2,
                                                                       end_max_frames=2))
    config = TrainConfig(steps=steps, warmup_steps=1, checkpoint_every=100, threads=None)
    return Trainer(Iggt(IggtModelConfig.tiny()), source, config, out)


def test_resume_repeats_the_uninterrupted_run_exactly(tmp_path):
    straight = _trainer(tmp_path / "a")
    straight.run()
    interrupted = _trainer(tmp_path / "b")
    assert interrupted.run(until=1) == 1
    resumed = _trainer(tmp_path / "b")
    assert resumed.resume() and resumed.step == 1
    assert resumed.run() == 2
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), name
    log = read_log(tmp_path / "b" / "train_log.csv")
    assert list(log["step"]) == [1, 2]
    assert (tmp_path / "b" / "losses.png").stat().st_size > 1000
    # the exported weights carry the architecture and the step count
    model, _ = load_model(tmp_path / "b" / "model.safetensors")
    assert model.config.depth == IggtModelConfig.tiny().depth and model.config.extra["train_steps"] == 2
    resumable = torch.load(tmp_path / "b" / "last.pt", weights_only=False)
    assert resumable["step"] == 2 and next(iter(resumable["model"].values())).dtype == torch.float32


def test_backbone_learns_slower_than_the_heads():
    model = Iggt(IggtModelConfig.tiny())
    config = TrainConfig()
    groups = parameter_groups(model, config)
    assert [g["name"] for g in groups] == ["backbone", "heads"]
    assert groups[0]["lr"] < groups[1]["lr"]
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    assert learning_rate_factor(0, config) < learning_rate_factor(config.warmup_steps, config) == pytest.approx(1.0)
    assert learning_rate_factor(config.steps, config) == pytest.approx(config.min_lr_ratio)


def test_training_scenes_never_use_held_out_seeds_and_repeat_exactly():
    assert TRAIN_SEED_BASE >= HELD_OUT_SEED_LIMIT
    source = SyntheticWindowSource(H, W, seed=0)
    a = source.window(step=3, index=0, frames=4, progress=0.2)
    b = source.window(step=3, index=0, frames=4, progress=0.2)
    assert (a.rgb == b.rgb).all() and a.rgb.shape == (4, H, W, 3)
    c = source.window(step=4, index=0, frames=4, progress=0.2)
    assert not (a.rgb == c.rgb).all()
    # the curriculum lengthens windows and widens motion as training progresses
    curriculum = Curriculum()
    assert curriculum.at(0.0)[0] < curriculum.at(1.0)[0]
    assert curriculum.at(0.0)[1][1] < curriculum.at(1.0)[1][1]


def test_cli_trains_and_writes_its_outputs(tmp_path):
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(["--out", str(tmp_path / "run"), "--steps", "1", "--size", "56x84", "--frames", "2:2",
                              "--samples", "128"])
    assert cli.run(args) == 0
    for name in ("last.pt", "model.safetensors", "train_log.csv", "losses.png", "args.json"):
        assert (tmp_path / "run" / name).exists(), name
    bad = parser.parse_args(["--out", str(tmp_path / "bad"), "--size", "50x84"])
    with pytest.raises(SystemExit, match="multiples of 28"):
        cli.run(bad)


def test_centered_start_spreads_the_initial_features():
    from iggt_ros.train.batch import TrainBatch
    from iggt_ros.train.trainer import start_instance_features_centered

    def spread(model: Iggt, images: torch.Tensor) -> float:
        with torch.no_grad():
            raw = model(images)["part_feat"][0].permute(0, 2, 3, 1).reshape(-1, 8)
        f = torch.nn.functional.normalize(raw, dim=-1)
        return float(torch.pdist(f[::7]).mean())

    torch.manual_seed(0)
    model = Iggt(IggtModelConfig.tiny()).eval()
    images = TrainBatch.stack(SyntheticWindowSource(H, W, seed=2).batch(0, 1, 0.0)).images
    before = spread(model, images)
    start_instance_features_centered(model, images)
    assert spread(model, images) > 2 * before


def test_prefetched_batches_train_exactly_like_batches_rendered_in_the_loop(tmp_path):
    """A worker process renders ahead; every batch is a pure function of its step, so nothing changes."""
    inline = _trainer(tmp_path / "a", steps=3)
    inline.run()
    ahead = _trainer(tmp_path / "b", steps=3)
    ahead.config.prefetch = 2
    assert ahead.run() == 3
    for (name, a), b in zip(inline.model.state_dict().items(), ahead.model.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), name


def test_resolution_curriculum_trains_small_first_then_at_full_size():
    source = SyntheticWindowSource(H, W, seed=0, small_size=(28, 56), small_until=0.5)
    assert source.window(step=1, index=0, frames=2, progress=0.2).rgb.shape == (2, 28, 56, 3)
    assert source.window(step=1, index=0, frames=2, progress=0.6).rgb.shape == (2, H, W, 3)


def test_training_windows_are_drawn_from_the_randomised_training_looks():
    from iggt_ros.synthetic.style import DOMAINS

    source = SyntheticWindowSource(H, W, seed=0)
    assert source.domain == "train"
    plain = SyntheticWindowSource(H, W, seed=0, domain=None)
    a = source.window(step=2, index=0, frames=2, progress=0.5)
    b = plain.window(step=2, index=0, frames=2, progress=0.5)
    assert a.rgb.shape == b.rgb.shape and not (a.rgb == b.rgb).all()
    assert "pyramid" not in DOMAINS["train"].shapes
