"""Evaluation report of a run: metrics.json, summary.md and PNG plots, rendered from a `RunRecord`.

The record (`iggt_ros.eval.record`) is fed view by view and window by window while a replay runs,
and `write_report` turns it into an output folder:

* `metrics.json`: engine, view and window counts, instance metrics (T-mIoU, T-SR, per object,
  matching), depth metrics twice (`depth`: each view rescaled to the truth's median, which scores
  the shape of the depth; `depth_published`: as published, no rescaling, which scores whether it
  is in metres), trajectory error, per-stage latency statistics, and with a class vocabulary
  semantic segmentation (2D mIoU and mAcc, 3D mIoU over the published clouds' points, per class and
  the confusion matrices; `iggt_ros.eval.semantic`). Sections without ground truth are null.
* `summary.md`: the same as tables, with a note when the engine is the ground-truth oracle.
* `latency.png`: a histogram per pipeline stage.
* `tmiou_per_object.png`: T-mIoU per true object (only with instance ground truth).
* `instances_strip.png`: a few views: input | predicted IDs | true IDs. Predicted IDs have their
  RViz colour (`iggt_ros.palette`) and a true object the colour of the ID matched to it, so a
  correct prediction looks identical to the truth; unmatched true objects get muted colours.

The record keeps no image of the run (see `iggt_ros.eval.record`), so an hour-long replay is reported
in bounded memory.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from iggt_ros.eval.metrics import TemporalInstanceMetrics
from iggt_ros.eval.record import (
    RunMetrics,
    RunRecord,
    StripSample,
    compute_run_metrics,
    metrics_document,
)
from iggt_ros.eval.semantic import SegmentationMetrics
from iggt_ros.palette import instance_colors

Colour = tuple[float, float, float]
BACKGROUND: Colour = (0.0, 0.0, 0.0)


# --------------------------------------------------------------------------------------------
# Colours
# --------------------------------------------------------------------------------------------


def id_colour(instance_id: int, muted: bool = False) -> Colour:
    """The colour of an ID in RViz (`iggt_ros.palette`), as floats; muted: halfway to grey."""
    r, g, b = (float(c) / 255.0 for c in instance_colors(np.array([int(instance_id)]))[0])
    if muted:
        return 0.5 * r + 0.25, 0.5 * g + 0.25, 0.5 * b + 0.25
    return r, g, b


def pred_colour_fn() -> Callable[[int], Colour]:
    """Colours of predicted IDs: each its own palette colour, the one RViz shows for it."""
    return lambda i: BACKGROUND if i <= 0 else id_colour(i)


def gt_colour_fn(ignore_ids: Sequence[int] = (0,), matching: Mapping[int, int] | None = None
                 ) -> Callable[[int], Colour]:
    """Colours of true objects: the colour of the predicted ID matched to the object, so a correct
    segmentation looks the same in both columns; an unmatched object is its own colour, muted.

    `matching` maps true object ID -> predicted ID (as `TemporalInstanceMetrics.matching`).
    """
    ignored = set(ignore_ids)
    matched = dict(matching or {})

    def colour(i: int) -> Colour:
        if i in ignored:
            return BACKGROUND
        return id_colour(matched[i]) if i in matched else id_colour(i, muted=True)

    return colour


def colourize_ids(ids: np.ndarray, colour_of: Callable[[int], Colour]) -> np.ndarray:
    """[H,W] IDs -> [H,W,3] float RGB in [0, 1]."""
    ids = np.asarray(ids)
    values, inverse = np.unique(ids, return_inverse=True)
    palette = np.array([colour_of(int(v)) for v in values], dtype=np.float64).reshape(-1, 3)
    return palette[inverse.reshape(ids.shape)]


# --------------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------------


def _save(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=100)


def _empty_figure(text: str) -> Figure:
    fig = Figure(figsize=(6, 3))
    ax = fig.add_subplot()
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=12)
    ax.set_axis_off()
    return fig


def plot_latency(timings_ms: Mapping[str, np.ndarray], path: Path) -> None:
    """One histogram per stage, with its median and 95th percentile marked."""
    stages = [s for s, v in timings_ms.items() if len(v)]
    if not stages:
        _save(_empty_figure("no timing data recorded"), path)
        return
    ncols = min(3, len(stages))
    nrows = math.ceil(len(stages) / ncols)
    fig = Figure(figsize=(4.2 * ncols, 3.2 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, stage in zip(axes, stages, strict=False):
        v = np.asarray(timings_ms[stage], dtype=np.float64)
        edges = np.histogram_bin_edges(v, bins="auto")
        if len(edges) > 61:
            edges = np.linspace(v.min(), v.max(), 61)
        ax.hist(v, bins=edges, color="tab:blue", alpha=0.8)
        p50, p95 = np.percentile(v, [50, 95])
        ax.axvline(p50, color="black", linestyle="--", linewidth=1, label=f"median {p50:.1f}")
        ax.axvline(p95, color="tab:red", linestyle=":", linewidth=1, label=f"p95 {p95:.1f}")
        ax.set_title(f"{stage} (n={v.size})")
        ax.set_xlabel("ms")
        ax.set_ylabel("windows")
        ax.legend(fontsize=8)
    for ax in axes[len(stages) :]:
        ax.set_axis_off()
    fig.suptitle("Per-stage latency")
    _save(fig, path)


def plot_tmiou_per_object(metrics: TemporalInstanceMetrics, path: Path) -> None:
    """Bar per true object; green when tracked in every view where visible (T-SR 1)."""
    objs = metrics.objects
    fig = Figure(figsize=(max(6.0, 0.4 * len(objs) + 2.0), 4.0), layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(len(objs))
    colours = ["tab:green" if o.t_sr >= 1.0 else "tab:orange" for o in objs]
    ax.bar(x, [o.t_miou for o in objs], color=colours)
    ax.set_xticks(x, [f"{o.gt_id}\n{o.pred_id if o.pred_id is not None else '-'}" for o in objs], fontsize=8)
    ax.set_xlabel("true ID / matched predicted ID")
    ax.set_ylabel("T-mIoU")
    ax.set_ylim(0.0, 1.18)
    if objs:
        ax.axhline(metrics.t_miou, color="black", linestyle="--", linewidth=1)
    handles = [
        Patch(color="tab:green", label="T-SR 1"),
        Patch(color="tab:orange", label="T-SR 0"),
    ]
    ax.legend(handles=handles, loc="upper left", ncols=2, fontsize=8)
    ax.set_title(f"T-mIoU per object (mean {100 * metrics.t_miou:.1f} %, T-SR {100 * metrics.t_sr:.1f} %)")
    _save(fig, path)


def plot_instance_strip(
    samples: Sequence[StripSample],
    path: Path,
    matching: Mapping[int, int] | None = None,
    ignore_gt_ids: Sequence[int] = (0,),
) -> None:
    """Rows of views: input | predicted IDs | true IDs (columns present when the data is)."""
    if not samples:
        _save(_empty_figure("no views recorded"), path)
        return
    with_image = any(s.image is not None for s in samples)
    with_gt = any(s.gt_ids is not None for s in samples)
    columns = (["input"] if with_image else []) + ["predicted IDs"] + (["ground truth IDs"] if with_gt else [])
    h, w = samples[0].pred_ids.shape[:2]
    panel_w = 3.2
    panel_h = panel_w * h / max(w, 1)
    fig = Figure(figsize=(panel_w * len(columns) + 0.4, panel_h * len(samples) + 0.6), layout="constrained")
    axes = fig.subplots(len(samples), len(columns), squeeze=False)
    pred_colour = pred_colour_fn()
    gt_colour = gt_colour_fn(ignore_gt_ids, matching)
    for r, sample in enumerate(samples):
        panels: dict[str, np.ndarray | None] = {
            "input": sample.image,
            "predicted IDs": colourize_ids(sample.pred_ids, pred_colour),
            "ground truth IDs": None if sample.gt_ids is None else colourize_ids(sample.gt_ids, gt_colour),
        }
        for c, name in enumerate(columns):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            panel = panels[name]
            if panel is None:
                ax.text(0.5, 0.5, "n/a", ha="center", va="center", transform=ax.transAxes)
            else:
                ax.imshow(panel, interpolation="nearest")
            if r == 0:
                ax.set_title(name, fontsize=10)
            if c == 0:
                ax.set_ylabel(sample.label, fontsize=8)
    _save(fig, path)


# --------------------------------------------------------------------------------------------
# Summary and report
# --------------------------------------------------------------------------------------------

ORACLE_NOTE = (
    "The engine is the ground-truth oracle: it returns the true geometry and instance features, so these "
    "numbers measure the pipeline after the engine (clustering, tracking, mapping), not a model."
)


def _fmt(value: float | None, percent: bool = False, digits: int = 3) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{100 * value:.1f} %" if percent else f"{value:.{digits}f}"


def segmentation_markdown(seg: SegmentationMetrics) -> list[str]:
    """The semantic segmentation section: overall scores, then one row per class."""
    lines = ["", "## Semantic segmentation", "",
             f"Classes: {', '.join(seg.classes)}. An instance's class is the word it was last labelled with; a "
             f"pixel or point of a true object is scored once ({seg.pixels} pixels, {seg.points} points; "
             f"{seg.points_unplaced} points whose depth no view of their window agrees with are not scored).", "",
             "| 2D mIoU | 2D mAcc | 3D mIoU | 3D mAcc |", "|---|---|---|---|",
             f"| {_fmt(seg.miou_2d, percent=True)} | {_fmt(seg.macc_2d, percent=True)} "
             f"| {_fmt(seg.miou_3d, percent=True)} | {_fmt(seg.macc_3d, percent=True)} |", "",
             "| class | 2D IoU | 2D accuracy | 3D IoU |", "|---|---|---|---|"]
    for name, iou, acc, iou3 in zip(seg.classes, seg.iou_2d, seg.accuracy_2d, seg.iou_3d, strict=True):
        lines.append(f"| {name} | {_fmt(iou, percent=True)} | {_fmt(acc, percent=True)} | {_fmt(iou3, percent=True)} |")
    if seg.objects_without_class:
        lines += ["", f"True labels no class matches (not scored): {', '.join(seg.objects_without_class)}."]
    return lines


def summary_markdown(record: RunRecord, metrics: RunMetrics, plots: Mapping[str, Path]) -> str:
    lines = ["# iggt_ros evaluation report", "", f"Engine: `{record.engine_name}`", ""]
    if record.oracle:
        lines += [f"> **Note:** {ORACLE_NOTE}", ""]
    lines += [
        f"Views: {record.num_views} (with instance ground truth: {record.instances.num_views}); "
        f"windows: {record.num_windows}.",
        "",
        "## Metrics",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    inst = metrics.instances
    if inst is not None:
        lines += [
            f"| T-mIoU | {_fmt(inst.t_miou, percent=True)} |",
            f"| T-SR | {_fmt(inst.t_sr, percent=True)} |",
            f"| true objects / predicted IDs | {inst.num_objects} / {inst.num_pred_ids} |",
        ]
    else:
        lines.append("| instances | no instance ground truth |")
    if metrics.depth is not None:
        d = metrics.depth
        rescaled = "each view rescaled to the truth's median" if d.alignment == "per_view" else f"{d.alignment} scale"
        lines += [
            f"| depth Abs.Rel ({rescaled}) | {_fmt(d.abs_rel, digits=4)} |",
            f"| depth inliers δ < {d.threshold:g} ({rescaled}) | {_fmt(d.inlier_ratio, percent=True)} |",
        ]
    else:
        lines.append("| depth | no depth ground truth |")
    if metrics.depth_published is not None:
        p = metrics.depth_published
        metric = f"metric in {record.num_metric_windows} of {record.num_windows} windows"
        lines += [
            f"| depth Abs.Rel as published (no rescaling; {metric}) | {_fmt(p.abs_rel, digits=4)} |",
            f"| depth inliers δ < {p.threshold:g} as published | {_fmt(p.inlier_ratio, percent=True)} |",
            f"| published / true depth (median over views) | {_fmt(p.ratio)} |",
        ]
    if metrics.pose is not None:
        p = metrics.pose
        lines.append(f"| ATE RMSE (Sim(3) aligned, scale {_fmt(p.scale)}) | {_fmt(p.ate_rmse, digits=4)} |")
    else:
        lines.append("| trajectory | no pose ground truth |")
    lines += ["", "## Latency per window (ms)", ""]
    if metrics.latency_ms:
        lines += ["| stage | windows | mean | median | p95 | max |", "|---|---|---|---|---|---|"]
        for stage, s in metrics.latency_ms.items():
            lines.append(
                f"| {stage} | {s['count']} | {_fmt(s['mean'], digits=1)} | {_fmt(s['p50'], digits=1)} "
                f"| {_fmt(s['p95'], digits=1)} | {_fmt(s['max'], digits=1)} |"
            )
    else:
        lines.append("No timings recorded.")
    if metrics.segmentation is not None:
        lines += segmentation_markdown(metrics.segmentation)
    if inst is not None and inst.objects:
        lines += [
            "",
            "## Per object",
            "",
            "| true ID | matched predicted ID | T-mIoU | T-SR | views visible | views detected |",
            "|---|---|---|---|---|---|",
        ]
        for o in inst.objects:
            pid = "—" if o.pred_id is None else str(o.pred_id)
            lines.append(
                f"| {o.gt_id} | {pid} | {_fmt(o.t_miou, percent=True)} | {int(o.t_sr)} "
                f"| {o.views_visible} | {o.views_detected} |"
            )
    if plots:
        lines += ["", "## Plots", ""]
        lines += [f"![{name}]({p.name})" for name, p in plots.items()]
    if record.notes:
        lines += ["", "## Notes", ""]
        lines += [f"- {n}" for n in record.notes]
    return "\n".join(lines) + "\n"


@dataclass
class ReportFiles:
    """Paths of a written report."""

    out_dir: Path
    metrics_json: Path
    summary_md: Path
    plots: dict[str, Path]
    metrics: dict[str, Any]
    """The content written to metrics.json."""


def write_report(record: RunRecord, out_dir: str | Path) -> ReportFiles:
    """Write metrics.json, summary.md and the PNG plots of a run into `out_dir` (created if needed)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics = compute_run_metrics(record)
    plots: dict[str, Path] = {}

    plots["latency"] = out / "latency.png"
    plot_latency(record.stage_timings_ms, plots["latency"])
    if metrics.instances is not None and metrics.instances.objects:
        plots["tmiou_per_object"] = out / "tmiou_per_object.png"
        plot_tmiou_per_object(metrics.instances, plots["tmiou_per_object"])
    plots["instances_strip"] = out / "instances_strip.png"
    matching = metrics.instances.matching if metrics.instances is not None else None
    plot_instance_strip(record.strip.samples(), plots["instances_strip"], matching, record.ignore_gt_ids)

    document = metrics_document(record, metrics)
    metrics_path = out / "metrics.json"
    metrics_path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    summary_path = out / "summary.md"
    summary_path.write_text(summary_markdown(record, metrics, plots), encoding="utf-8")
    return ReportFiles(out, metrics_path, summary_path, plots, document)
