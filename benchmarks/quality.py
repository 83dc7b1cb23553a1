"""Quality benchmark: the embedded tiny IGGT next to the ground-truth oracle, through the full pipeline.

    .venv/bin/python benchmarks/quality.py [--weights PATH] [--scenarios N] [--threads 2]

Each held-out synthetic sequence (seeds never drawn in training; rooms and halls, orbit, walk and
pan trajectories, one and two cameras, 504x336 cameras) is replayed through `Pipeline` twice: once
with the tiny model (`TorchEngine`) and once with the oracle engine (degraded ground truth:
feature noise, blurred boundaries, window-local features, unknown similarity per window), both at
the tiny model's 140x84 input. Reported per sequence and on average: T-mIoU and T-SR of the
published instance IDs, depth Abs.Rel and delta < 1.03 (per-view median scale), and camera ATE
(per-window Sim(3) fit). Targets for the tiny model: T-mIoU >= 0.6, T-SR >= 0.9. Writes
benchmarks/results/quality.md and quality.json.
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

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from iggt_ros.train.evaluate import (  # noqa: E402
    HELD_OUT_SCENARIOS,
    TINY_INPUT_HW,
    SequenceScore,
    evaluate_sequence,
    oracle_engine_factory,
    tiny_engine_factory,
)

TARGETS = {"t_miou": 0.6, "t_sr": 0.9}
COLUMNS = (("t_miou", "T-mIoU"), ("t_sr", "T-SR"), ("depth_abs_rel", "Abs.Rel"), ("depth_delta_103", "d<1.03"),
           ("pose_ate", "ATE (m)"))


def _fmt(value: float) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def mean_scores(scores: list[SequenceScore]) -> dict[str, float]:
    return {key: float(np.nanmean([getattr(s, key) for s in scores])) for key, _ in COLUMNS}


def table(rows: list[tuple[str, str, dict]]) -> str:
    """Markdown table: one row per (sequence, engine)."""
    head = "| sequence | engine | " + " | ".join(title for _, title in COLUMNS) + " |"
    sep = "|---|---|" + "---:|" * len(COLUMNS)
    body = ["| " + " | ".join([seq, eng] + [_fmt(vals[k]) for k, _ in COLUMNS]) + " |" for seq, eng, vals in rows]
    return "\n".join([head, sep, *body])


def model_latency(weights: str | None, threads: int, runs: int, frames: int = 8) -> dict:
    """Seconds for one forward pass of `frames` frames at the model input (median and min of `runs`)."""
    import torch

    from iggt_ros.engine.weights import EMBEDDED_WEIGHTS
    from iggt_ros.model.checkpoint import load_model

    torch.set_num_threads(threads)
    model, _ = load_model(weights or EMBEDDED_WEIGHTS)
    model = model.float().eval()
    model.fix_input_size(*TINY_INPUT_HW)
    images = torch.rand(1, frames, 3, *TINY_INPUT_HW)
    times = []
    with torch.inference_mode():
        model(images)
        for _ in range(runs):
            start = time.perf_counter()
            model(images)
            times.append(time.perf_counter() - start)
    return {"frames": frames, "threads": threads, "runs": runs, "median_s": float(np.median(times)),
            "min_s": float(np.min(times)), "max_s": float(np.max(times)),
            "parameters": int(sum(p.numel() for p in model.parameters()))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=None, help="model weights (default: the embedded tiny model)")
    parser.add_argument("--scenarios", type=int, default=len(HELD_OUT_SCENARIOS), help="run the first N sequences")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--latency-runs", type=int, default=15, help="timed forward passes (0 = skip)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args()

    latency = model_latency(args.weights, args.threads, args.latency_runs) if args.latency_runs else None
    if latency:
        print(f"tiny model, {latency['frames']} frames at {TINY_INPUT_HW[1]}x{TINY_INPUT_HW[0]}, "
              f"{args.threads} threads: median {latency['median_s']:.3f} s, min {latency['min_s']:.3f} s "
              f"over {latency['runs']} runs")
    scenarios = HELD_OUT_SCENARIOS[: args.scenarios]
    engines = {"tiny": tiny_engine_factory(args.weights, TINY_INPUT_HW, args.threads),
               "oracle": oracle_engine_factory(TINY_INPUT_HW)}
    scores: dict[str, list[SequenceScore]] = {name: [] for name in engines}
    rows = []
    for scenario in scenarios:
        for name, factory in engines.items():
            score = evaluate_sequence(scenario, factory, TINY_INPUT_HW)
            scores[name].append(score)
            rows.append((scenario.name, name, score.as_dict()))
            print(f"{scenario.name:18s} {name:7s} " + " ".join(f"{t}={_fmt(getattr(score, k))}" for k, t in COLUMNS)
                  + f" windows={score.windows} objects={score.objects} inference={score.inference_ms:.0f}ms "
                  f"({score.seconds:.0f}s)", flush=True)
    means = {name: mean_scores(s) for name, s in scores.items()}
    for name, vals in means.items():
        rows.append(("**mean**", f"**{name}**", vals))
    md_table = table(rows)
    print()
    print(md_table)

    tiny = means["tiny"]
    verdict = ", ".join(f"{k} {tiny[k]:.3f} ({'meets' if tiny[k] >= v else 'below'} target {v})"
                        for k, v in TARGETS.items())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads {args.threads}"
    (out / "quality.md").write_text(
        "# Quality: tiny IGGT vs oracle engine, through the full pipeline\n\n"
        f"Held-out synthetic sequences (seeds 900101-900106, never used in training), 504x336 cameras shrunk to the "
        f"{TINY_INPUT_HW[1]}x{TINY_INPUT_HW[0]} model input, true camera poses given as TF, every step a keyframe, "
        "8-keyframe windows, masks of 20 px or more scored. Instance metrics on the published persistent IDs; "
        "depth (per-view median scale) and ATE (per-window Sim(3)) on the engine's own predictions.\n\n"
        f"{md_table}\n\nTiny model: {verdict}.\n\n"
        + (f"Tiny model latency, {latency['frames']} frames at {TINY_INPUT_HW[1]}x{TINY_INPUT_HW[0]}, "
           f"{args.threads} torch threads: median {latency['median_s']:.3f} s, min {latency['min_s']:.3f} s, "
           f"max {latency['max_s']:.3f} s over {latency['runs']} runs ({latency['parameters']:,} parameters; "
           "the machine is shared, so the spread is load).\n\n" if latency else "")
        + f"Machine: {machine}. Generated by `benchmarks/quality.py` on "
        f"{time.strftime('%Y-%m-%d')}.\n")
    (out / "quality.json").write_text(json.dumps({
        "input_hw": list(TINY_INPUT_HW), "targets": TARGETS, "means": means,
        "sequences": {name: [s.as_dict() for s in lst] for name, lst in scores.items()},
        "scenarios": [asdict(s) for s in scenarios],
        "weights": args.weights or "embedded", "machine": machine, "latency": latency,
    }, indent=2) + "\n")
    print(f"\nwrote {out / 'quality.md'} and {out / 'quality.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
