"""Quality benchmark: the embedded tiny IGGT next to the ground-truth oracle, through the full pipeline.

    .venv/bin/python benchmarks/quality.py [--weights PATH] [--baseline PATH] [--groups default,train,foreign]

Three groups of held-out synthetic sequences (seeds never drawn in training; rooms, halls and corridors;
orbit, walk and pan; one and two cameras; 504x336 cameras), each replayed through `Pipeline` with every
engine at the model's own input size:

- ``default``: the package's plain look (the sample bags and the demo);
- ``train``: looks drawn from the training factor pool (in distribution, new scenes);
- ``foreign``: factor values training never draws (held-out textures, shape, layout, field-of-view band,
  cel shading with outlines, vignetting). Validation only: nothing is tuned on it.

Engines: the tiny model (`--weights`, default the embedded one), optionally a second model
(`--baseline`) in the same run, and the oracle engine (degraded ground truth: feature noise, blurred
boundaries, window-local features, unknown similarity per window). Reported per sequence and per group:
T-mIoU and T-SR of the published IDs, depth Abs.Rel and delta < 1.03 after per-view median scaling, the
published depth's Abs.Rel as published (metres from TF) and its median published / true depth over views (1
when the output is metric; pans, whose scale TF cannot show, stay in the model's units), camera ATE
(per-window Sim(3)), published IDs per true object, missed objects (no published ID covering them with T-mIoU
>= 0.5) and extra IDs (matched to no object) per true object, the share of identical pairs kept apart, and the
token-grid ceiling of the scored model's grid (`benchmarks/ceiling.py`). Writes benchmarks/results/quality.md
and .json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from iggt_ros.threads import prepare_process  # noqa: E402

prepare_process()  # the package's thread policy, before numpy and torch load (they read it once)

import numpy as np  # noqa: E402

from benchmarks.ceiling import GridDesign, group_ceiling  # noqa: E402
from iggt_ros.train.evaluate import (  # noqa: E402
    FOREIGN_SCENARIOS,
    HELD_OUT_SCENARIOS,
    TRAIN_DOMAIN_SCENARIOS,
    SequenceScore,
    evaluate_sequence,
    model_input_hw,
    oracle_engine_factory,
    tiny_engine_factory,
)

GROUPS = {"default": HELD_OUT_SCENARIOS, "train": TRAIN_DOMAIN_SCENARIOS, "foreign": FOREIGN_SCENARIOS}
TARGETS = {
    "default": {"t_miou": (">=", 0.6), "t_sr": (">=", 0.8), "duplicates_kept": (">=", 0.7),
                "missed_share": ("<=", 0.2), "ids_per_object": ("<=", 1.5)},
    "foreign": {"t_miou": (">=", 0.4), "duplicates_kept": (">=", 0.7), "missed_share": ("<=", 0.2),
                "ids_per_object": ("<=", 1.5), "published_abs_rel": ("<=", 0.10)},
}
METRIC_DEPTH_TOLERANCE = 0.10
"""Published depth counts as metric when its median ratio to the truth is within this of 1."""
PER_SEQUENCE = ("missed_share", "ids_per_object")
"""Targets every sequence must meet (the verdict checks the worst sequence, not the mean)."""
COLUMNS = (("t_miou", "T-mIoU"), ("t_sr", "T-SR"), ("depth_abs_rel", "Abs.Rel"), ("depth_delta_103", "d<1.03"),
           ("published_abs_rel", "Abs.Rel published"), ("published_scale", "published/true"), ("pose_ate", "ATE (m)"),
           ("ids_per_object", "IDs/object"),
           ("missed_share", "missed"), ("extra_per_object", "extra IDs/object"), ("duplicates_kept", "pairs kept"))


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def row_values(score: SequenceScore) -> dict[str, float]:
    values = score.as_dict()
    values["ids_per_object"] = score.pred_ids / score.objects if score.objects else math.nan
    values["missed_share"] = score.missed_objects / score.objects if score.objects else math.nan
    values["extra_per_object"] = score.extra_ids / score.objects if score.objects else math.nan
    return values


def mean_scores(scores: list[SequenceScore]) -> dict[str, float]:
    """Means over sequences; pairs kept is pooled over all pairs of the group."""
    rows = [row_values(s) for s in scores]
    out = {}
    for key, _ in COLUMNS:
        vals = [r[key] for r in rows if not (isinstance(r[key], float) and math.isnan(r[key]))]
        out[key] = float(np.mean(vals)) if vals else math.nan
    pairs = sum(s.duplicate_pairs for s in scores)
    kept = sum(s.duplicates_kept * s.duplicate_pairs for s in scores if s.duplicate_pairs)
    out["duplicates_kept"] = kept / pairs if pairs else math.nan
    out["duplicate_pairs"] = pairs
    return out


def table(rows: list[tuple[str, str, dict]]) -> str:
    """Markdown table: one row per (sequence, engine)."""
    head = "| sequence | engine | " + " | ".join(title for _, title in COLUMNS) + " |"
    sep = "|---|---|" + "---:|" * len(COLUMNS)
    body = ["| " + " | ".join([seq, eng] + [_fmt(vals.get(k)) for k, _ in COLUMNS]) + " |" for seq, eng, vals in rows]
    return "\n".join([head, sep, *body])


def verdicts(group: str, scores: list[SequenceScore]) -> list[str]:
    """One line per target of the group: the mean, or for `PER_SEQUENCE` targets the worst sequence."""
    means = mean_scores(scores)
    rows = [row_values(s) for s in scores]
    out = []
    for key, (op, target) in TARGETS.get(group, {}).items():
        if key in PER_SEQUENCE:
            vals = [r[key] for r in rows if not math.isnan(r[key])]
            value = (max(vals) if op == "<=" else min(vals)) if vals else math.nan
            label = f"{key} worst sequence"
        else:
            value, label = means.get(key, math.nan), key
        ok = (value >= target) if op == ">=" else (value <= target)
        out.append(f"{label} {_fmt(value)} ({'meets' if ok and not math.isnan(value) else 'misses'} {op} {target})")
    return out


def metric_depth_line(scores: list[SequenceScore]) -> str:
    """How many sequences publish depth within 10 % of the truth: the geometry goal where TF gives poses."""
    within = [s.scenario for s in scores if abs(s.published_scale - 1.0) <= METRIC_DEPTH_TOLERANCE]
    return (f"Published depth within {METRIC_DEPTH_TOLERANCE:.0%} of the truth (median published/true over views): "
            f"{len(within)} of {len(scores)} sequences ({', '.join(within) or 'none'}); pans stay in the model's "
            "units (TF cannot show their scale).")


def model_patch(weights: str | None) -> int:
    """Patch side of a model's token grid, from the configuration stored with its weights."""
    from iggt_ros.engine.weights import EMBEDDED_WEIGHTS
    from iggt_ros.model.checkpoint import CONFIG_METADATA_KEY, read_metadata
    from iggt_ros.model.config import IggtModelConfig

    stored = read_metadata(Path(weights) if weights else EMBEDDED_WEIGHTS).get(CONFIG_METADATA_KEY)
    return IggtModelConfig.from_json(stored).patch_size if stored else 14


def model_latency(weights: str | None, input_hw: tuple[int, int], threads: int, runs: int, frames: int = 8) -> dict:
    """Seconds for one forward pass of `frames` frames at the model input (median and min of `runs`)."""
    import torch

    from iggt_ros.engine.weights import EMBEDDED_WEIGHTS
    from iggt_ros.model.checkpoint import load_model

    torch.set_num_threads(threads)
    model, _ = load_model(weights or EMBEDDED_WEIGHTS)
    model = model.float().eval()
    model.fix_input_size(*input_hw)
    images = torch.rand(1, frames, 3, *input_hw)
    times = []
    with torch.inference_mode():
        model(images)
        for _ in range(runs):
            start = time.perf_counter()
            model(images)
            times.append(time.perf_counter() - start)
    return {"frames": frames, "threads": threads, "runs": runs, "input_hw": list(input_hw),
            "median_s": float(np.median(times)), "min_s": float(np.min(times)), "max_s": float(np.max(times)),
            "parameters": int(sum(p.numel() for p in model.parameters()))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=None, help="model weights (default: the embedded tiny model)")
    parser.add_argument("--baseline", default=None, help="a second model scored in the same run (e.g. older weights)")
    parser.add_argument("--groups", default="default,train,foreign", help="comma-separated: default, train, foreign")
    parser.add_argument("--scenarios", type=int, default=None, help="run the first N sequences of each group")
    parser.add_argument("--no-oracle", action="store_true", help="skip the oracle engine")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--latency-runs", type=int, default=15, help="timed forward passes (0 = skip)")
    parser.add_argument("--no-ceiling", action="store_true", help="skip the token-grid ceiling of the model's grid")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args()

    input_hw = model_input_hw(args.weights)
    latency = model_latency(args.weights, input_hw, args.threads, args.latency_runs) if args.latency_runs else None
    if latency:
        print(f"tiny model, {latency['frames']} frames at {input_hw[1]}x{input_hw[0]}, {args.threads} threads: "
              f"median {latency['median_s']:.3f} s, min {latency['min_s']:.3f} s over {latency['runs']} runs")
    engines = {"tiny": (tiny_engine_factory(args.weights, input_hw, args.threads), input_hw)}
    if args.baseline:
        base_hw = model_input_hw(args.baseline)
        engines["baseline"] = (tiny_engine_factory(args.baseline, base_hw, args.threads), base_hw)
    if not args.no_oracle:
        engines["oracle"] = (oracle_engine_factory(input_hw), input_hw)

    groups = [g.strip() for g in args.groups.split(",") if g.strip()]
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        parser.error(f"unknown group(s) {', '.join(unknown)}; choose from {', '.join(GROUPS)}")
    scores: dict[str, dict[str, list[SequenceScore]]] = {g: {name: [] for name in engines} for g in groups}
    sections = []
    summary_rows = []
    ceilings: dict[str, dict] = {}
    for group in groups:
        rows = []
        for scenario in GROUPS[group][: args.scenarios]:
            for name, (factory, hw) in engines.items():
                score = evaluate_sequence(scenario, factory, hw)
                scores[group][name].append(score)
                vals = row_values(score)
                rows.append((scenario.name, name, vals))
                print(f"{scenario.name:28s} {name:8s} " + " ".join(f"{t}={_fmt(vals[k])}" for k, t in COLUMNS)
                      + f" objects={score.objects} ids={score.pred_ids} windows={score.windows} "
                      f"inference={score.inference_ms:.0f}ms ({score.seconds:.0f}s)", flush=True)
        for name, lst in scores[group].items():
            means = mean_scores(lst)
            rows.append(("**mean**", f"**{name}**", means))
            summary_rows.append((group, name, means))
        md = table(rows)
        print("\n" + md + "\n")
        verdict = "; ".join(verdicts(group, scores[group]["tiny"]))
        ceiling_line = ""
        if not args.no_ceiling:
            patch = model_patch(args.weights)
            ceilings[group] = group_ceiling(GROUPS[group][: args.scenarios], GridDesign("model", input_hw, patch))
            ceiling_line = (f"Token-grid ceiling of the scored model ({input_hw[1] // patch}x{input_hw[0] // patch} "
                            f"tokens, `benchmarks/ceiling.py`): {ceilings[group]['mean']:.3f}.\n\n")
            print(ceiling_line.strip())
        sections.append(f"## {group}\n\n{md}\n\n{ceiling_line}Tiny model against the targets: "
                        f"{verdict or 'no targets'}.\n\n{metric_depth_line(scores[group]['tiny'])}\n")

    summary = table([(f"{g} (mean)", n, m) for g, n, m in summary_rows])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads {args.threads}"
    lat = (f"Tiny model latency, {latency['frames']} frames at {input_hw[1]}x{input_hw[0]}, {args.threads} torch "
           f"threads: median {latency['median_s']:.3f} s, min {latency['min_s']:.3f} s, max {latency['max_s']:.3f} s "
           f"over {latency['runs']} runs ({latency['parameters']:,} parameters; the machine is shared, so the "
           "spread is load).\n\n") if latency else ""
    (out / "quality.md").write_text(
        "# Quality: tiny IGGT vs oracle engine, through the full pipeline\n\n"
        f"Held-out synthetic sequences (seeds never drawn in training), 504x336 cameras shrunk to the model input "
        f"({input_hw[1]}x{input_hw[0]} for the tiny model), true camera poses given as TF, every step a keyframe, "
        "8-view windows, masks of 20 px or more scored. Instance metrics on the published persistent IDs; depth "
        "after per-view median scaling and ATE (per-window Sim(3)) on the engine's own predictions; 'Abs.Rel "
        "published' on the published depth images without any rescaling, 'published/true' their median ratio to "
        "the true depth over views (1 = metric). Groups: `default` (the plain look of "
        "the sample bags and demo), `train` (looks from the training factor pool), `foreign` (factor values "
        "training never draws; validation only).\n\n"
        f"## Summary\n\n{summary}\n\n" + "\n".join(sections) + "\n" + lat
        + f"Weights: {args.weights or 'embedded'}; baseline: {args.baseline or 'none'}. Machine: {machine}. "
        f"Generated by `benchmarks/quality.py` on {time.strftime('%Y-%m-%d')}.\n")
    (out / "quality.json").write_text(json.dumps({
        "input_hw": list(input_hw), "targets": TARGETS,
        "means": {g: {n: m for gg, n, m in summary_rows if gg == g} for g in groups},
        "sequences": {g: {n: [s.as_dict() for s in lst] for n, lst in by.items()} for g, by in scores.items()},
        "scenarios": {g: [asdict(s) for s in GROUPS[g][: args.scenarios]] for g in groups},
        "ceiling": ceilings, "verdicts": {g: verdicts(g, scores[g]["tiny"]) for g in groups},
        "weights": args.weights or "embedded", "baseline": args.baseline, "machine": machine, "latency": latency,
    }, indent=2, default=float) + "\n")
    print(f"wrote {out / 'quality.md'} and {out / 'quality.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
