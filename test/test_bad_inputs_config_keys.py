"""Options that do what they say: every configuration key has code that reads it, and the depth range works.

A key that is declared, validated and documented but read nowhere is worse than a missing one: a user
sets it and nothing changes. The reader check is textual (the attribute `.name` of the key, or the
dotted key as a string, somewhere in the package outside `config.py`), so it fails the moment a key
is added without a reader or its last reader is removed.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import iggt_ros
from iggt_ros.config import IggtConfig
from iggt_ros.engine.oracle import OracleEngine
from iggt_ros.perception.frames import CameraFrame, FrameSet
from iggt_ros.perception.pipeline import Pipeline
from iggt_ros.synthetic.sequence import make_sequence

PACKAGE = Path(iggt_ros.__file__).parent


def readers(key: str, sources: dict[Path, str]) -> list[str]:
    _, name = key.split(".", 1)
    pattern = re.compile(r"\." + re.escape(name) + r"\b|[\"']" + re.escape(key) + r"[\"']")
    return [str(p.relative_to(PACKAGE)) for p, text in sources.items() if pattern.search(text)]


def test_every_configuration_key_has_a_reader():
    sources = {p: p.read_text() for p in PACKAGE.rglob("*.py") if p.name != "config.py"}
    keys = list(IggtConfig().to_flat())
    assert len(keys) > 50  # the walk found the configuration
    unread = [k for k in keys if not readers(k, sources)]
    assert not unread, (f"configuration keys no code reads: {unread}; wire them where they belong or remove them "
                        "(config.py, config/iggt.yaml, README)")


def test_the_reader_check_finds_a_key_without_reader():
    sources = {PACKAGE / "x.py": "depth = cfg.mapping.max_depth_m\nname = 'mapping.voxel_size_m'\n"}
    assert readers("mapping.max_depth_m", sources) and readers("mapping.voxel_size_m", sources)
    assert not readers("mapping.min_depth_m", sources)


W, H = 112, 84


@pytest.fixture(scope="module")
def seq():
    return make_sequence(seed=2, num_steps=6, cameras=1, trajectory="walk", width=W, height=H, num_objects=4)


def run(seq, **overrides) -> list:
    """Every window result of the sequence (TF poses given, so depth is metric) with `overrides`."""
    cfg = IggtConfig().replace(**{"engine.backend": "oracle", "input.cameras": list(seq.rig.names),
                                  "input.image_width": W, "input.image_height": H, "window.size": 3,
                                  "window.stride": 1, "window.min_translation_m": 0.0,
                                  "window.min_rotation_deg": 0.0, "window.min_image_change": 0.0,
                                  "clustering.min_instance_area_px": 10, **overrides})
    pipeline = Pipeline(cfg, OracleEngine.from_sequence(seq, input_size=(H, W), seed=1))
    results = []
    for step, views in enumerate(seq.steps):
        frames = {v.camera: CameraFrame(v.camera, int(v.stamp_ns), v.rgb, v.intrinsics, f"{v.camera}_optical",
                                        seq.world_from_base[step] @ seq.rig.base_from_camera[i])
                  for i, v in enumerate(views)}
        result = pipeline.push(FrameSet(int(views[0].stamp_ns), frames))
        if result is not None:
            results.append(result)
    return results


def test_depth_range_limits_the_published_depth_and_cloud(seq):
    true_depth = np.concatenate([v.depth[np.isfinite(v.depth) & (v.depth > 0)] for v in seq.views()])
    near, far = np.percentile(true_depth, [30, 70])
    full = run(seq)
    cut = run(seq, **{"mapping.min_depth_m": float(near), "mapping.max_depth_m": float(far)})
    assert full and len(cut) == len(full) and all(r.metric for r in full)
    for a, b in zip(full, cut, strict=True):
        kept = np.isfinite(b.depth)
        assert kept.sum() < 0.8 * np.isfinite(a.depth).sum()
        assert np.all(b.depth[kept] >= near * 0.999) and np.all(b.depth[kept] <= far * 1.001)
        assert len(b.cloud) < len(a.cloud)
        assert not np.any(b.instance_images[~kept])  # no instance label outside the range
        assert any("outside mapping.min_depth_m..max_depth_m" in w for w in b.warnings)
