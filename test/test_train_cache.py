"""The rendered window cache: geometry survives augmentation, batches are reproducible, CPU-time budgets hold."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from iggt_ros.model import Iggt, IggtModelConfig
from iggt_ros.model.checkpoint import load_model
from iggt_ros.train.cache import (
    Augment,
    CachedWindowSource,
    CacheError,
    CacheSpec,
    crop_window,
    mirror_window,
    recolour_instances,
    render_cache,
)
from iggt_ros.train.trainer import TrainConfig, Trainer


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    render_cache(root, CacheSpec(windows=3, height=56, width=84), log_every=2)
    return root


def reprojected_id_agreement(window, a: int = 0, b: int = 1) -> float:
    """Share of view a's pixels that land on the same instance ID in view b (via depth, intrinsics, poses)."""
    ka, kb = window.intrinsics[a].astype(np.float64), window.intrinsics[b].astype(np.float64)
    h, w = window.depth.shape[1:]
    v, u = np.mgrid[:h, :w]
    z = window.depth[a].astype(np.float64)
    ok = z > 0
    cam = np.stack([(u - ka[0, 2]) / ka[0, 0] * z, (v - ka[1, 2]) / ka[1, 1] * z, z, np.ones_like(z)], -1)[ok]
    in_b = cam @ window.world_from_camera[a].T @ np.linalg.inv(window.world_from_camera[b]).T
    front = in_b[:, 2] > 1e-6
    ub = np.round(kb[0, 0] * in_b[front, 0] / in_b[front, 2] + kb[0, 2]).astype(int)
    vb = np.round(kb[1, 1] * in_b[front, 1] / in_b[front, 2] + kb[1, 2]).astype(int)
    inside = (ub >= 0) & (ub < w) & (vb >= 0) & (vb < h)
    ids_a = window.instance_ids[a][ok][front][inside]
    return float((ids_a == window.instance_ids[b][vb[inside], ub[inside]]).mean())


def test_cache_holds_windows_of_training_scenes(cache):
    meta = json.loads((cache / "cache.json").read_text())
    assert meta["done"] == 3 and meta["frames"] == 8
    source = CachedWindowSource(cache, 56, 84, augment=None)
    window = source.window(np.random.default_rng(0), 8)
    assert window.rgb.shape == (8, 56, 84, 3) and window.depth.dtype == np.float32
    assert len(np.unique(window.instance_ids)) >= 2  # background and at least one object
    assert reprojected_id_agreement(window) > 0.9


def test_flips_and_crops_keep_the_views_geometrically_consistent(cache):
    source = CachedWindowSource(cache, 56, 84, augment=None)
    window = source.window(np.random.default_rng(1), 4)
    base = reprojected_id_agreement(window)
    mirrored = mirror_window(window)
    assert np.allclose(np.linalg.det(mirrored.world_from_camera[:, :3, :3]), 1.0)
    assert np.array_equal(mirrored.rgb[:, :, ::-1], window.rgb)
    assert reprojected_id_agreement(mirrored) == pytest.approx(base, abs=1e-9)
    cropped = crop_window(window, 6, 10, 42, 63)
    assert cropped.rgb.shape == window.rgb.shape
    assert reprojected_id_agreement(cropped) > base - 0.05


def test_recolouring_gives_each_instance_one_new_colour_map_in_every_view():
    rng = np.random.default_rng(3)
    ids = rng.integers(0, 4, size=(3, 10, 12))
    rgb = rng.integers(100, 141, size=(3, 10, 12, 3)).astype(np.uint8)  # mid-range: nothing clips, maps stay linear
    out = recolour_instances(rgb, ids, np.random.default_rng(4)).astype(np.float64)
    maps = []
    for label in range(4):
        x, y = rgb[ids == label].astype(np.float64), out[ids == label]
        m, *_ = np.linalg.lstsq(x, y, rcond=None)  # one 3x3 map per instance, whatever view a pixel is in
        assert np.abs(x @ m - y).max() <= 0.75  # rounding to 8 bits only
        # a hue turn and a saturation change keep the grey level; only the brightness gain scales it
        gain = y.mean(axis=1) / x.mean(axis=1)
        assert gain.std() < 0.02 and 0.7 - 0.02 <= gain.mean() <= 1.3 + 0.02
        maps.append(m)
    assert all(not np.allclose(a, b, atol=0.05) for i, a in enumerate(maps) for b in maps[i + 1:])


def test_recolouring_is_drawn_per_window_at_the_configured_share(cache):
    plain = CachedWindowSource(cache, 56, 84, augment=Augment(flip=0, crop=0, colour=0))
    always = CachedWindowSource(cache, 56, 84, augment=Augment(flip=0, crop=0, colour=0, recolour=1.0))
    a, b = plain.batch(5, 1, 0.5)[0], always.batch(5, 1, 0.5)[0]
    assert np.array_equal(a.instance_ids, b.instance_ids) and not np.array_equal(a.rgb, b.rgb)


def test_batches_are_a_function_of_the_step(cache):
    source = CachedWindowSource(cache, 56, 84, max_frames=6)
    a, b = source.batch(7, 2, 0.5), source.batch(7, 2, 0.5)
    assert all(np.array_equal(x.rgb, y.rgb) and np.array_equal(x.instance_ids, y.instance_ids)
               for x, y in zip(a, b, strict=True))
    assert 2 <= a[0].rgb.shape[0] <= 6
    assert not all(np.array_equal(x.rgb, y.rgb) for x, y in zip(a, source.batch(8, 2, 0.5), strict=True))


def test_recolouring_without_a_cache_or_outside_0_1_is_refused_with_what_to_do(cache):
    import argparse

    from iggt_ros.train.cli import add_arguments, build_trainer

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    with pytest.raises(SystemExit, match="give --cache DIR"):
        build_trainer(parser.parse_args(["--recolour", "0.5"]))
    with pytest.raises(SystemExit, match="from 0 to 1"):
        build_trainer(parser.parse_args(["--cache", str(cache), "--size", "56x84", "--recolour", "1.5"]))


def test_a_cache_of_another_size_is_refused_with_what_to_do(cache, tmp_path):
    with pytest.raises(CacheError, match="render a cache at that size"):
        CachedWindowSource(cache, 84, 140)
    with pytest.raises(CacheError, match="python -m iggt_ros.train.cache"):
        CachedWindowSource(tmp_path, 56, 84)


def test_training_stops_at_its_cpu_budget_and_keeps_the_budget_weights(cache, tmp_path):
    torch.manual_seed(0)
    model = Iggt(IggtModelConfig.tiny_fine_image())
    source = CachedWindowSource(cache, 56, 84, max_frames=3)
    config = TrainConfig(steps=1000, warmup_steps=2, threads=1, cpu_limit_s=1.5, budget_marks_s=(0.5,),
                         checkpoint_every=1000)
    trainer = Trainer(model, source, config, tmp_path)
    stopped = trainer.run()
    assert 0 < stopped < 1000 and trainer.cpu_s >= 1.5
    weights, _ = load_model(tmp_path / "budget_0.00833333m.safetensors")
    assert weights.config.extra["train_cpu_seconds"] >= 0.5
    with open(tmp_path / "train_log.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == stopped and float(rows[-1]["cpu_seconds"]) >= 1.5
    resumed = Trainer(Iggt(IggtModelConfig.tiny_fine_image()), source, config, tmp_path)
    assert resumed.resume() and resumed.step == stopped and resumed.cpu_s == pytest.approx(trainer.cpu_s)
    assert resumed.run() == stopped  # the budget is spent: nothing more runs
