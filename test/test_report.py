"""Evaluation report written from small synthetic run records."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from iggt_ros.engine.preprocess import resize_nearest
from iggt_ros.eval.record import RunRecord, StripSampler
from iggt_ros.eval.report import colourize_ids, gt_colour_fn, id_colour, pred_colour_fn, write_report

H, W = 48, 72


def gt_view() -> np.ndarray:
    """Three objects in vertical bands, background elsewhere."""
    ids = np.zeros((H, W), dtype=np.uint16)
    ids[8:40, 0:20] = 1
    ids[8:40, 24:44] = 2
    ids[8:40, 50:70] = 3
    return ids


def pred_view(swapped: bool) -> np.ndarray:
    gt = gt_view()
    pred = np.zeros_like(gt)
    pred[gt == 1] = 12 if swapped else 11
    pred[gt == 2] = 11 if swapped else 12
    pred[gt == 3] = 13
    return pred


def rgb(i: int) -> np.ndarray:
    y, x = np.mgrid[0:H, 0:W]
    return np.stack([x * 3 % 256, y * 5 % 256, np.full_like(x, 40 * i % 256)], axis=-1).astype(np.uint8)


def make_record(engine: str = "torch", with_gt: bool = True) -> tuple[RunRecord, dict[str, list[float]]]:
    rng = np.random.default_rng(0)
    record = RunRecord(engine_name=engine, notes=["synthetic scene 0"])
    for v in range(6):
        gt_depth = rng.uniform(0.5, 5.0, size=(H, W))
        record.add_view(
            pred_view(swapped=v >= 4),  # the tracker swaps IDs 11 and 12 for the last two views
            gt_view() if with_gt else None,
            image=rgb(v),
            pred_depth=2.0 * gt_depth,
            gt_depth=gt_depth if with_gt else None,
            label=f"cam0 #{v}",
        )
        gt_pos = np.array([np.cos(v), np.sin(v), 0.2 * v])
        record.add_camera_position(0.5 * gt_pos + 1.0, gt_pos if with_gt else None)
    timings: dict[str, list[float]] = {"engine": [], "clustering": [], "tracking": []}
    for _ in range(10):
        window = {"engine": rng.uniform(30, 60), "clustering": rng.uniform(5, 20), "tracking": rng.uniform(1, 3)}
        record.add_window_timings(window)
        for k, ms in window.items():
            timings[k].append(ms)
    return record, timings


def assert_real_png(path: Path, min_h: int = 150, min_w: int = 300) -> np.ndarray:
    img = imread(path)
    assert img.ndim == 3 and img.shape[2] in (3, 4)
    assert img.shape[0] >= min_h and img.shape[1] >= min_w
    assert np.ptp(img[..., :3]) > 0.1, f"{path.name} is a blank image"
    return img


def test_report_with_ground_truth(tmp_path: Path) -> None:
    record, timings = make_record()
    files = write_report(record, tmp_path / "report")
    names = {p.name for p in (tmp_path / "report").iterdir()}
    assert names == {"metrics.json", "summary.md", "latency.png", "tmiou_per_object.png", "instances_strip.png"}

    doc = json.loads(files.metrics_json.read_text())
    assert set(doc) >= {"engine", "oracle", "num_views", "num_windows", "instances", "depth", "pose", "latency_ms"}
    assert doc["engine"] == "torch" and doc["oracle"] is False
    assert doc["num_views"] == 6 and doc["num_windows"] == 10
    inst = doc["instances"]
    # Objects 1 and 2 are right in 4 of 6 views, object 3 in all: (2/3 + 2/3 + 1) / 3.
    assert inst["t_miou"] == pytest.approx(7 / 9)
    assert inst["t_sr"] == pytest.approx(1.0)
    assert inst["matching"] == {"1": 11, "2": 12, "3": 13}
    assert [o["t_miou"] for o in inst["objects"]] == pytest.approx([2 / 3, 2 / 3, 1.0])
    assert doc["depth"]["abs_rel"] == pytest.approx(0.0, abs=1e-12)
    assert doc["depth"]["inlier_ratio"] == 1.0
    assert doc["depth"]["scale"] == pytest.approx(0.5)
    assert doc["pose"]["ate_rmse"] == pytest.approx(0.0, abs=1e-9)
    assert doc["pose"]["num_poses"] == 6
    assert set(doc["latency_ms"]) == {"engine", "clustering", "tracking"}
    for stage, values in timings.items():
        assert doc["latency_ms"][stage]["count"] == 10
        assert doc["latency_ms"][stage]["mean"] == pytest.approx(np.mean(values))
        assert doc["latency_ms"][stage]["max"] == pytest.approx(np.max(values))

    summary = files.summary_md.read_text()
    assert "`torch`" in summary and "77.8 %" in summary and "oracle" not in summary
    assert "| 1 | 11 |" in summary and "latency.png" in summary and "synthetic scene 0" in summary

    for name in ("latency", "tmiou_per_object"):
        assert_real_png(files.plots[name])
    strip = assert_real_png(files.plots["instances_strip"])

    # Without ground truth the strip loses its third column.
    record_no_gt, _ = make_record(with_gt=False)
    strip_no_gt = assert_real_png(write_report(record_no_gt, tmp_path / "nogt").plots["instances_strip"])
    assert strip.shape[1] > strip_no_gt.shape[1] * 1.3


def test_report_scores_depth_as_published_and_rescaled(tmp_path: Path) -> None:
    """Depth twice: each view rescaled (the shape is right) and as published (twice the truth, not metres)."""
    record, _ = make_record()
    for metric in (True, True, False):
        record.add_window_timings({"engine": 40.0}, metric=metric)
    files = write_report(record, tmp_path)
    doc = json.loads(files.metrics_json.read_text())
    assert doc["depth"]["alignment"] == "per_view" and doc["depth"]["abs_rel"] == pytest.approx(0.0, abs=1e-12)
    published = doc["depth_published"]
    assert published["alignment"] == "none" and published["abs_rel"] == pytest.approx(1.0)
    assert published["inlier_ratio"] == 0.0 and published["ratio"] == pytest.approx(2.0)
    assert doc["num_windows"] == 13 and doc["num_metric_windows"] == 2
    summary = files.summary_md.read_text()
    assert "| depth Abs.Rel (each view rescaled to the truth's median) | 0.0000 |" in summary
    assert "| depth Abs.Rel as published (no rescaling; metric in 2 of 13 windows) | 1.0000 |" in summary
    assert "| published / true depth (median over views) | 2.000 |" in summary


def test_report_without_ground_truth(tmp_path: Path) -> None:
    record, _ = make_record(with_gt=False)
    files = write_report(record, tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"metrics.json", "summary.md", "latency.png", "instances_strip.png"}
    doc = json.loads(files.metrics_json.read_text())
    assert doc["instances"] is None and doc["depth"] is None and doc["pose"] is None
    assert doc["depth_published"] is None
    assert doc["num_views"] == 6 and doc["num_views_with_instance_gt"] == 0
    assert doc["latency_ms"]["engine"]["count"] == 10
    assert "no instance ground truth" in files.summary_md.read_text()
    assert_real_png(files.plots["latency"])
    assert_real_png(files.plots["instances_strip"])


def test_oracle_engine_is_flagged() -> None:
    record, _ = make_record(engine="oracle")
    assert record.oracle
    assert not RunRecord(engine_name="oracle", is_oracle=False).oracle
    assert RunRecord(engine_name="custom", is_oracle=True).oracle


def test_oracle_note_in_summary(tmp_path: Path) -> None:
    record, _ = make_record(engine="oracle")
    files = write_report(record, tmp_path)
    assert "ground-truth oracle" in files.summary_md.read_text()
    assert json.loads(files.metrics_json.read_text())["oracle"] is True


def test_empty_record_still_writes_a_report(tmp_path: Path) -> None:
    files = write_report(RunRecord(engine_name="torch"), tmp_path)
    doc = json.loads(files.metrics_json.read_text())
    assert doc["num_views"] == 0 and doc["latency_ms"] == {}
    assert_real_png(files.plots["latency"], min_h=100, min_w=200)


def test_ids_have_their_rviz_colour_and_true_objects_take_their_matched_ids_colour() -> None:
    from iggt_ros.palette import instance_colors

    gt = gt_view()
    pred = pred_view(swapped=False)
    matching = {1: 11, 2: 12, 3: 13}
    np.testing.assert_array_equal(colourize_ids(pred, pred_colour_fn()),
                                  colourize_ids(gt, gt_colour_fn((0,), matching)))
    # one palette: the report shows predicted ID 11 in the colour of its colorized image and markers
    assert np.allclose(np.array(pred_colour_fn()(11)) * 255.0, instance_colors(np.array([11]))[0], atol=0.5)
    colour = gt_colour_fn((0,), {1: 11})
    assert colour(1) == id_colour(11)
    assert colour(2) == id_colour(2, muted=True) and colour(2) != id_colour(2)
    assert colour(0) == (0.0, 0.0, 0.0) and pred_colour_fn()(0) == (0.0, 0.0, 0.0)
    assert gt_colour_fn((0, 255))(255) == (0.0, 0.0, 0.0)


def test_prediction_at_model_resolution_is_resampled_to_ground_truth() -> None:
    record = RunRecord(engine_name="torch")
    gt = gt_view()
    small_pred = pred_view(swapped=False)[::2, ::2]
    assert resize_nearest(small_pred, gt.shape).shape == gt.shape
    record.add_view(small_pred, gt)
    result = record.instances.result()
    assert result.matching == {1: 11, 2: 12, 3: 13}
    assert result.t_miou > 0.9


def test_strip_sampler_is_bounded_and_evenly_spread() -> None:
    sampler = StripSampler(count=4, max_side=100)
    big = np.zeros((336, 504), dtype=np.uint16)
    for i in range(1000):
        sampler.offer(big, big, label=str(i))
        assert sampler.held <= 2 * 4 + 1
    samples = sampler.samples()
    assert len(samples) == 4
    idx = [int(s.label) for s in samples]
    assert idx[0] == 0 and idx == sorted(idx)
    gaps = np.diff(idx)
    assert idx[-1] >= 700 and gaps.max() <= 2 * gaps.min()
    assert all(max(s.pred_ids.shape) <= 100 and s.gt_ids.shape == s.pred_ids.shape for s in samples)


def test_strip_images_are_downsampled_to_the_id_size() -> None:
    record = RunRecord(engine_name="torch", strip_views=2, strip_max_side=36)
    for v in range(3):
        record.add_view(pred_view(False), gt_view(), image=np.repeat(np.repeat(rgb(v), 2, 0), 2, 1))
    s = record.strip.samples()[0]
    assert s.image.shape == (*s.pred_ids.shape, 3) and s.image.dtype == np.uint8
    assert max(s.pred_ids.shape) <= 36
