"""Quality per CPU time: every design's weights at fixed training budgets, scored like benchmarks/quality.py.

    .venv/bin/python benchmarks/study.py [--runs runs/study] [--designs tiny,tiny_fine,tiny_fine_image,...]

Each design is trained on the same window cache with `iggt-ros train --cache ... --budget-marks ...`,
which keeps the weights reached at each CPU-time budget (`<runs>/<design>/budget_<minutes>m.safetensors`;
CPU time of the training process, so budgets compare designs fairly on a shared machine). This scores
every such file, and the shipped weights, on the default and foreign groups through the same pipeline
code as `benchmarks/quality.py` (tiny engine only), and writes benchmarks/results/study.md, .json and
.png. Scores already in study.json for an unchanged file are reused, so the study grows as training does.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from iggt_ros.threads import prepare_process  # noqa: E402

prepare_process()  # the package's thread policy, before numpy and torch load (they read it once)

from benchmarks.ceiling import GridDesign, group_ceiling  # noqa: E402
from benchmarks.quality import GROUPS, mean_scores, model_patch, verdicts  # noqa: E402
from iggt_ros.train.evaluate import evaluate_sequence, model_input_hw, tiny_engine_factory  # noqa: E402

BUDGET_FILE = re.compile(r"budget_([0-9.]+)m\.safetensors$")

def score_weights(weights: Path | None, groups: list[str], threads: int) -> dict:
    """Means, worst-sequence values and target verdicts of one weights file on each group."""
    input_hw = model_input_hw(weights)
    factory = tiny_engine_factory(weights, input_hw, threads)
    out = {}
    for group in groups:
        scores = [evaluate_sequence(s, factory, input_hw) for s in GROUPS[group]]
        means = mean_scores(scores)
        worst = {"missed_share": max(s.missed_objects / s.objects for s in scores if s.objects),
                 "ids_per_object": max(s.pred_ids / s.objects for s in scores if s.objects)}
        out[group] = {"means": means, "worst": worst, "verdicts": verdicts(group, scores),
                      "sequences": [s.as_dict() for s in scores]}
    return out


def weights_info(weights: Path) -> dict:
    from iggt_ros.model.checkpoint import CONFIG_METADATA_KEY, read_metadata
    from iggt_ros.model.config import IggtModelConfig

    config = IggtModelConfig.from_json(read_metadata(weights)[CONFIG_METADATA_KEY])
    extra = config.extra or {}
    return {"steps": extra.get("train_steps"), "cpu_s": extra.get("train_cpu_seconds"), "patch": config.patch_size,
            "image_features": config.image_features}


def started_at_min(run_dir: Path) -> float:
    """Training CPU minutes already in the weights a run started from (`iggt-ros train --init`: the new run counts
    its budgets from 0), read from the run's args.json and those weights; 0 for a run from scratch."""
    args = run_dir / "args.json"
    init = json.loads(args.read_text()).get("init") if args.exists() else None
    if not init or not Path(init).is_file():
        return 0.0
    return float(weights_info(Path(init)).get("cpu_s") or 0.0) / 60.0


def _fmt(value) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def group_table(results: dict, group: str) -> str:
    """One row per (design, budget) on one group; 'mean / worst' where the target holds per sequence."""
    head = ("| design | CPU min | steps | T-mIoU | T-SR | pairs kept | missed (mean / worst) "
            "| IDs/object (mean / worst) | depth Abs.Rel | grid ceiling |")
    rows = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for entry in sorted(results["runs"].values(), key=lambda e: (e["budget_min"] is not None, e["design"],
                                                                 e["budget_min"] or 0)):
        m, w = entry["scores"][group]["means"], entry["scores"][group]["worst"]
        budget = "" if entry["budget_min"] is None else f"{entry['budget_min']:g}"
        rows.append("| " + " | ".join([
            entry["design"], budget, str(entry["info"].get("steps") or ""), _fmt(m["t_miou"]), _fmt(m["t_sr"]),
            _fmt(m["duplicates_kept"]), f"{_fmt(m['missed_share'])} / {_fmt(w['missed_share'])}",
            f"{_fmt(m['ids_per_object'])} / {_fmt(w['ids_per_object'])}", _fmt(m["depth_abs_rel"]),
            _fmt(entry["ceiling"].get(group))]) + " |")
    return "\n".join(rows)


def write_outputs(results: dict, out: Path, groups: list[str]) -> None:
    table = "\n\n".join(f"### {g}\n\n{group_table(results, g)}" for g in groups)
    (out / "study.md").write_text(
        "# Quality per CPU time: designs of the embedded model\n\n"
        "Every design trained from scratch on the same window cache (`python -m iggt_ros.train.cache`, "
        f"{results.get('cache', {}).get('done', '?')} windows of 8 views, 30 % default look, 70 % randomised "
        "training looks; flips, crops, colour jitter on the fly), one window of 2-8 views per step, one torch "
        "thread, the same losses and learning rates; weights kept at fixed budgets of the training process's "
        "CPU time. Scored through the pipeline of `benchmarks/quality.py` on its default and foreign groups "
        "(foreign: validation only, never tuned on); 'missed' and 'IDs/object' are the worst sequence of the "
        "group (the targets hold for every sequence); 'grid ceiling' is the best token-constant answer of the "
        "design's grid (`benchmarks/ceiling.py`); depth Abs.Rel after per-view median scaling. 'embedded <hash>': "
        "the weights shipped when the study ran (`tiny_fine_image` at 60 CPU-minutes; before it, a `tiny` "
        "trained about 5 CPU-hours on rendered-on-the-fly default-look scenes). Every row is scored with the "
        "same post-processing settings.\n\n"
        "Designs: `tiny` (the previous embedded architecture, 14-px patches, 10x6 tokens at 140x84); `tiny_fine` "
        "(7-px patches, 20x12 tokens, decoders at the same pixel resolution); `tiny_fine_image` (`tiny_fine` plus a "
        "16-channel full-resolution image branch fused into the instance head); `tiny_wide_image` (`tiny_fine_image` "
        "with 96-channel tokens instead of 64: 1.8x the parameters, about 1.3x the time of a window; one cosine "
        "schedule of 3,200 steps, which ended at 54.5 CPU-minutes). Fine-tunes of `tiny_fine_image` from its step "
        "15,000 (212.7 CPU-minutes) with every instance and the background recoloured (its own hue turn, saturation "
        "and brightness, the same in every view; `iggt-ros train --recolour 0.5`) in half the windows: "
        "`tiny_fine_recolour` resumes the run (optimiser state kept, the cosine schedule recomputed over 19,000 "
        "steps, so it goes on at the low learning rate of the schedule's end; CPU minutes count from the run's "
        "start); `tiny_fine_recolour_fresh` starts a new schedule from those weights (peak learning rates 2e-4 / "
        "4e-4, 3,000 steps, another draw of windows; CPU minutes count from the fine-tune's start, on top of the "
        "212.7, where `study.png` starts its curve).\n\n"
        f"{table}\n\nCurves: `study.png`. Generated by `benchmarks/study.py` on {time.strftime('%Y-%m-%d')}.\n")
    (out / "study.json").write_text(json.dumps(results, indent=2, default=float) + "\n")
    with contextlib.suppress(ImportError):  # matplotlib is optional: the table and JSON are the results
        plot(results, out / "study.png", groups)


def plot(results: dict, path: Path, groups: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 4), squeeze=False)
    designs = sorted({e["design"] for e in results["runs"].values() if e["budget_min"] is not None})
    for ax, group in zip(axes[0], groups, strict=True):
        for design in designs:
            pts = sorted((e.get("start_min", 0.0) + e["budget_min"], e["scores"][group]["means"]["t_miou"])
                         for e in results["runs"].values() if e["design"] == design and e["budget_min"] is not None)
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", label=design)
        for e in results["runs"].values():
            if e["budget_min"] is None:
                ax.axhline(e["scores"][group]["means"]["t_miou"], ls="--", label=e["design"])
        ax.set_title(f"{group} group")
        ax.set_xlabel("training CPU minutes (1 thread)")
        ax.set_ylabel("T-mIoU (published IDs)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default=str(ROOT / "runs" / "study"), help="folder of <design>/budget_*.safetensors")
    parser.add_argument("--designs",
                        default="tiny,tiny_fine,tiny_fine_image,tiny_wide_image,tiny_fine_recolour,"
                                "tiny_fine_recolour_fresh")
    parser.add_argument("--groups", default="default,foreign")
    parser.add_argument("--no-shipped", action="store_true", help="do not score the embedded weights")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    groups = [g.strip() for g in args.groups.split(",") if g.strip()]
    previous = json.loads((out / "study.json").read_text()) if (out / "study.json").exists() else {"runs": {}}
    results = {"runs": dict(previous.get("runs", {})), "groups": groups}
    cache_meta = ROOT / "runs" / "cache" / "cache.json"
    results["cache"] = json.loads(cache_meta.read_text()) if cache_meta.exists() else previous.get("cache", {})
    ceilings: dict[tuple, dict] = {}

    def ceiling_of(weights: Path | None) -> dict:
        key = (model_input_hw(weights), model_patch(str(weights) if weights else None))
        if key not in ceilings:
            design = GridDesign("model", key[0], key[1])
            ceilings[key] = {g: group_ceiling(GROUPS[g], design)["mean"] for g in groups}
        return ceilings[key]

    from dataclasses import asdict

    from iggt_ros.config import IggtConfig
    from iggt_ros.engine.weights import EMBEDDED_WEIGHTS, file_sha256

    clustering = asdict(IggtConfig().clustering)  # scores of other post-processing settings are redone
    todo: list[tuple[str, str, float | None, Path | None]] = []
    if not args.no_shipped:
        # named by content, so the row of earlier embedded weights stays when new ones are shipped
        todo.append((f"embedded {file_sha256(EMBEDDED_WEIGHTS)[:8]}", "shipped", None, None))
    for design in [d.strip() for d in args.designs.split(",") if d.strip()]:
        for path in sorted(Path(args.runs, design).glob("budget_*m.safetensors")):
            todo.append((f"{design}@{BUDGET_FILE.search(path.name).group(1)}", design,
                         float(BUDGET_FILE.search(path.name).group(1)), path))
    # rows of other post-processing settings that are not scored again (earlier embedded weights) are dropped
    names = {name for name, *_ in todo}
    results["runs"] = {k: v for k, v in results["runs"].items() if k in names or v.get("clustering") == clustering}
    for name, design, budget, path in todo:
        stamp = path.stat().st_mtime if path else None
        old = results["runs"].get(name)
        if (old and old.get("stamp") == stamp and old.get("clustering") == clustering
                and all(g in old["scores"] for g in groups)):
            old["start_min"] = started_at_min(path.parent) if path else 0.0
            continue
        start = time.perf_counter()
        entry = {"design": design if path else name, "budget_min": budget, "weights": str(path) if path else "embedded",
                 "stamp": stamp, "clustering": clustering, "start_min": started_at_min(path.parent) if path else 0.0,
                 "info": weights_info(path) if path else {}, "ceiling": ceiling_of(path),
                 "scores": score_weights(path, groups, args.threads)}
        results["runs"][name] = entry
        print(f"{name:28s} " + "  ".join(f"{g}: T-mIoU {entry['scores'][g]['means']['t_miou']:.3f} T-SR "
                                         f"{entry['scores'][g]['means']['t_sr']:.3f}" for g in groups)
              + f" ({time.perf_counter() - start:.0f} s)", flush=True)
        write_outputs(results, out, groups)
    write_outputs(results, out, groups)
    print(f"wrote {out / 'study.md'}, study.json and study.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
