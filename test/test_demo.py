"""`iggt-ros demo` at a small size: sample bag, output bag, report with real plots, and a clear engine notice."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image
from rosbags.rosbag2 import Reader

from iggt_ros import cli
from iggt_ros.apps.demo import DEFAULT_COVERAGE, DEFAULT_OBJECTS, DEFAULT_SCENE, embedded_weights_installed
from iggt_ros.train.evaluate import HELD_OUT_SCENARIOS


def test_demo_writes_bags_and_a_report_with_real_plots(tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--frames", "10", "--size", "168x112", "--no-progress"]
    assert cli.main(args) == 0
    stdout = capsys.readouterr().out
    oracle = not embedded_weights_installed()
    assert ("ORACLE ENGINE" in stdout) == oracle
    assert str(out / "report" / "summary.md") in stdout and "T-mIoU" in stdout

    with Reader(out / "output.mcap") as reader:
        topics = {c.topic for c in reader.connections}
        assert reader.message_count > 0
    assert {"/iggt/points", "/iggt/instances", "/iggt/markers", "/iggt/instance_image/front",
            "/front/image_raw"} <= topics
    with Reader(out / "input.mcap") as reader:
        assert "/gt/front/instances" in {c.topic for c in reader.connections}

    metrics = json.loads((out / "report" / "metrics.json").read_text())
    assert metrics["oracle"] is oracle and metrics["num_views"] == 8  # one window of 8
    summary = (out / "report" / "summary.md").read_text()
    assert ("ORACLE engine" in summary) == oracle
    for name in ("latency.png", "tmiou_per_object.png", "instances_strip.png"):
        with Image.open(out / "report" / name) as img:
            assert img.format == "PNG" and img.width > 200 and img.height > 100
            pixels = np.asarray(img.convert("RGB"))
        assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 8  # drawn content, not a blank canvas
    assert (out / "output.mcap" / "query_state.json").is_file()

    # running it again replaces the previous demo's outputs
    assert cli.main([*args, "--frames", "8", "--scene", "1"]) == 0
    notes = json.loads((out / "report" / "metrics.json").read_text())["notes"]
    assert any("scene 1 (8 objects), 8 frames" in n for n in notes)


def test_default_demo_scene_is_the_first_quality_benchmark_scene():
    """The demo report is meant to be read next to benchmarks/results/quality.md: same scene, same settings."""
    first = HELD_OUT_SCENARIOS[0].scene
    assert (first.seed, first.num_objects, first.coverage) == (DEFAULT_SCENE, DEFAULT_OBJECTS, DEFAULT_COVERAGE)
    assert (first.room, first.trajectory, first.cameras) == ("room", "orbit", 1)
