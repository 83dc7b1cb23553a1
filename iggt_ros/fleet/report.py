"""The fleet report: one table of every bag, fleet totals, and the per-object and latency plots of all bags.

Written into the fleet's output folder as `fleet.json` and `fleet.md` after every finished bag (so
a long run can be watched and an interrupted one still has its report), and with the plots
`fleet_tmiou_per_object.png` and `fleet_latency.png` at the end. Each bag's own report (from the
replay) is linked from its row.

Totals are computed over the bags that finished, in bag-name order, so a run gives the same
numbers however its tasks were scheduled: counts are sums, T-mIoU and T-SR are means over every
true object of every bag, depth errors are weighted by pixels and the trajectory error by poses.
Latency is a per-bag statistic only (mean weighted by windows, worst p95): the replays ran on
whatever nodes Ray picked, so their timings are not one population.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from iggt_ros.fleet.task import BagOutcome

FLEET_JSON, FLEET_MD = "fleet.json", "fleet.md"
TMIOU_PLOT, LATENCY_PLOT = "fleet_tmiou_per_object.png", "fleet_latency.png"
LATENCY_STAGES = ("inference", "postprocess", "total")


@dataclass
class FleetHeader:
    """What the report says about the run itself."""

    runner: str
    bags: int
    wall_s: float = 0.0
    finished: bool = False
    load: str = ""
    """The machine's load when the run started (timings on a busy machine read differently)."""


def _weighted(pairs: list[tuple[float | None, float]]) -> float | None:
    pairs = [(v, w) for v, w in pairs if v is not None and w > 0 and not (isinstance(v, float) and math.isnan(v))]
    total = sum(w for _, w in pairs)
    return None if not total else sum(v * w for v, w in pairs) / total


def fleet_totals(outcomes: Sequence[BagOutcome]) -> dict[str, Any]:
    """Counts, quality and timing over the bags (see the module docstring for how each is combined)."""
    ordered = sorted(outcomes, key=lambda o: o.name)
    done = [o for o in ordered if o.ok]
    metrics = [o.metrics for o in done if o.metrics]
    objects = [obj for m in metrics if m.get("instances") for obj in m["instances"]["objects"]]
    counts = {
        "bags": len(ordered), "ok": len(done), "failed": sum(o.status == "failed" for o in ordered),
        "timeout": sum(o.status == "timeout" for o in ordered), "reused": sum(o.reused for o in ordered),
        "images": sum(o.images for o in done), "windows": sum(o.windows for o in done),
        "views": sum(o.views for o in done), "objects": len(objects),
        "predicted_ids": sum((m.get("instances") or {}).get("num_pred_ids", 0) for m in metrics),
        "warnings": sum(len(o.warnings) for o in done),
    }
    depth = [m["depth"] for m in metrics if m.get("depth")]
    published = [m["depth_published"] for m in metrics if m.get("depth_published")]
    poses = [m["pose"] for m in metrics if m.get("pose")]
    ate_sq = _weighted([(p["ate_rmse"] ** 2 if p.get("ate_rmse") is not None else None, p["num_poses"])
                        for p in poses])
    quality = {
        "t_miou": float(np.mean([o["t_miou"] for o in objects])) if objects else None,
        "t_sr": float(np.mean([o["t_sr"] for o in objects])) if objects else None,
        "depth_abs_rel": _weighted([(d.get("abs_rel"), d.get("num_pixels", 0)) for d in depth]),
        "depth_inliers": _weighted([(d.get("inlier_ratio"), d.get("num_pixels", 0)) for d in depth]),
        "published_depth_abs_rel": _weighted([(d.get("abs_rel"), d.get("num_pixels", 0)) for d in published]),
        "ate_rmse": None if ate_sq is None else math.sqrt(ate_sq),
    }
    timing: dict[str, Any] = {"replay_s": sum(o.wall_s for o in ordered)}
    for stage in LATENCY_STAGES:
        stats = [(m.get("latency_ms") or {}).get(stage) for m in metrics]
        stats = [s for s in stats if s and s.get("count")]
        timing[f"{stage}_ms_mean"] = _weighted([(s["mean"], s["count"]) for s in stats])
        timing[f"{stage}_ms_worst_p95"] = max((s["p95"] for s in stats), default=None)
    return {"counts": counts, "quality": quality, "timing": timing}


# ------------------------------------------------------------------------------------------ files
def _fmt(v: Any, pct: bool = False, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if pct:
        return f"{100 * v:.1f} %"
    if isinstance(v, float):
        return f"{v:.0f}" if abs(v) >= 10 ** digits else f"{v:.{digits}g}"
    return str(v)


def _one_line(text: str) -> str:
    """A reason as one table-safe line (replay errors may list topics on further lines)."""
    return " ".join(text.split()).replace("|", "/")


def _bag_row(o: BagOutcome) -> str:
    m = o.metrics or {}
    inst = m.get("instances") or {}
    total = (m.get("latency_ms") or {}).get("total") or {}
    depth = m.get("depth") or {}
    if o.ok:
        why = next((w for w in o.warnings if "report" in w), "see outcome.json")
        link = f"[report](bags/{o.name}/{o.report_dir}/summary.md)" if o.report_dir else f"no report: {_one_line(why)}"
    else:
        link = _one_line(o.reason)
    status = o.status + (" (earlier run)" if o.reused else "") + (f", {o.attempts} attempts" if o.attempts > 1 else "")
    return (f"| {o.name} | {status} | {o.images} | {o.windows} | {o.views} | {_fmt(inst.get('num_objects'))} | "
            f"{_fmt(inst.get('t_miou'), pct=True)} | {_fmt(inst.get('t_sr'), pct=True)} | "
            f"{_fmt(depth.get('abs_rel'))} | {_fmt(total.get('mean'))} | {_fmt(total.get('p95'))} | "
            f"{o.wall_s:.1f} | {link} |")


def fleet_markdown(header: FleetHeader, outcomes: Sequence[BagOutcome], totals: dict[str, Any],
                   plots: Sequence[str] = ()) -> str:
    c, q, t = totals["counts"], totals["quality"], totals["timing"]
    state = "finished" if header.finished else "running (this report is rewritten as bags finish)"
    lines = [
        "# Fleet evaluation", "",
        f"{c['bags']} of {header.bags} bags reported, {state}. Runner: {header.runner}. "
        f"Wall time {header.wall_s:.1f} s, replay time summed over bags {t['replay_s']:.1f} s."
        + (f" Machine load at start: {header.load}." if header.load else ""), "",
        "## Totals", "",
        "| bags ok | failed | timed out | images | windows | views | objects | T-mIoU | T-SR | depth Abs.Rel | "
        "published depth Abs.Rel | ATE RMSE (m) | latency mean (ms) | worst p95 (ms) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        f"| {c['ok']} | {c['failed']} | {c['timeout']} | {c['images']} | {c['windows']} | {c['views']} | "
        f"{c['objects']} | {_fmt(q['t_miou'], pct=True)} | {_fmt(q['t_sr'], pct=True)} | "
        f"{_fmt(q['depth_abs_rel'])} | {_fmt(q['published_depth_abs_rel'])} | {_fmt(q['ate_rmse'])} | "
        f"{_fmt(t['total_ms_mean'])} | {_fmt(t['total_ms_worst_p95'])} |", "",
        "T-mIoU and T-SR are means over every true object of the bags that finished; depth errors are "
        "weighted by pixels, the trajectory error by poses.", "",
        "## Bags", "",
        "| bag | status | images | windows | views | objects | T-mIoU | T-SR | depth Abs.Rel | latency mean (ms) | "
        "p95 (ms) | replay (s) | report or reason |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    lines += [_bag_row(o) for o in sorted(outcomes, key=lambda o: o.name)]
    failed = [o for o in sorted(outcomes, key=lambda o: o.name) if not o.ok]
    if failed:
        lines += ["", "## Failures", ""]
        lines += [f"- **{o.name}** ({o.input_bag}): {o.status}: {_one_line(o.reason)}" for o in failed]
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def write_fleet_files(out: Path, header: FleetHeader, outcomes: Sequence[BagOutcome],
                      plots: Sequence[str] = ()) -> dict[str, Any]:
    """Rewrite fleet.json and fleet.md (each atomically, so a reader never sees half a file); returns the totals."""
    totals = fleet_totals(outcomes)
    document = {"runner": header.runner, "bags_total": header.bags, "finished": header.finished,
                "wall_s": header.wall_s, "load": header.load, "totals": totals,
                "bags": [{k: v for k, v in o.to_dict().items() if k != "metrics"}
                         | {"metrics_json": f"bags/{o.name}/{o.report_dir}/metrics.json" if o.report_dir else None}
                         for o in sorted(outcomes, key=lambda o: o.name)],
                "plots": list(plots)}
    for name, text in ((FLEET_JSON, json.dumps(_finite(document), indent=2, allow_nan=False) + "\n"),
                       (FLEET_MD, fleet_markdown(header, outcomes, totals, plots))):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(out / name)
    return totals


def _finite(value: Any) -> Any:
    """NaN and infinities as null: JSON has no such numbers."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


# ------------------------------------------------------------------------------------------ plots
def _save(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=100)


def _save_empty(fig: Figure, ax, path: Path, message: str) -> int:
    """A plot with nothing to draw still gets written, saying why, so the fleet report never links a missing file."""
    ax.text(0.5, 0.5, message, ha="center", va="center")
    ax.set_axis_off()
    _save(fig, path)
    return 0


def plot_fleet_tmiou(outcomes: Sequence[BagOutcome], path: Path) -> int:
    """T-mIoU of every true object, one column of points per bag, with each bag's mean and the fleet's.

    Returns the number of objects drawn.
    """
    bags = [(o.name, [obj["t_miou"] for obj in ((o.metrics or {}).get("instances") or {}).get("objects", [])])
            for o in sorted(outcomes, key=lambda o: o.name) if o.ok]
    bags = [(n, v) for n, v in bags if v]
    fig = Figure(figsize=(max(6.0, 0.6 * len(bags) + 2.5), 4.0), layout="constrained")
    ax = fig.add_subplot()
    if not bags:
        return _save_empty(fig, ax, path, "no bag with instance ground truth finished")
    rng = np.random.default_rng(0)
    for x, (_name, values) in enumerate(bags):
        v = np.asarray(values)
        ax.scatter(x + rng.uniform(-0.18, 0.18, v.size), v, s=14, alpha=0.7, color="tab:blue")
        ax.hlines(v.mean(), x - 0.3, x + 0.3, color="black", linewidth=1.5)
    everything = np.concatenate([np.asarray(v) for _, v in bags])
    ax.axhline(everything.mean(), color="tab:red", linestyle="--", linewidth=1,
               label=f"fleet mean {100 * everything.mean():.1f} % over {everything.size} objects")
    ax.set_xticks(range(len(bags)), [n for n, _ in bags], rotation=30, ha="right", fontsize=8)
    ax.set_ylim(-0.02, 1.1)
    ax.set_ylabel("T-mIoU per true object")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("T-mIoU per object, by bag (bar: bag mean)")
    _save(fig, path)
    return int(everything.size)


def plot_fleet_latency(outcomes: Sequence[BagOutcome], path: Path) -> int:
    """Per bag and stage: mean latency per window with the bag's p95 marked. Returns the number of bags drawn."""
    rows = []
    for o in sorted(outcomes, key=lambda o: o.name):
        lat = (o.metrics or {}).get("latency_ms") or {}
        stats = {s: lat[s] for s in LATENCY_STAGES if lat.get(s) and lat[s].get("count")}
        if o.ok and stats:
            rows.append((o.name, stats))
    fig = Figure(figsize=(max(6.0, 0.8 * len(rows) + 2.5), 4.0), layout="constrained")
    ax = fig.add_subplot()
    if not rows:
        return _save_empty(fig, ax, path, "no latency recorded")
    width = 0.8 / len(LATENCY_STAGES)
    colours = {"inference": "tab:blue", "postprocess": "tab:orange", "total": "tab:grey"}
    for k, stage in enumerate(LATENCY_STAGES):
        xs = [i + (k - (len(LATENCY_STAGES) - 1) / 2) * width for i in range(len(rows))]
        means = [r[1].get(stage, {}).get("mean", np.nan) for r in rows]
        p95 = [r[1].get(stage, {}).get("p95", np.nan) for r in rows]
        ax.bar(xs, means, width=width, color=colours[stage], label=f"{stage} mean")
        ax.scatter(xs, p95, marker="_", s=120, color="black")
    ax.scatter([], [], marker="_", color="black", label="p95")
    ax.set_xticks(range(len(rows)), [r[0] for r in rows], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("ms per window")
    ax.legend(fontsize=8)
    ax.set_title("Latency per window, by bag")
    _save(fig, path)
    return len(rows)
