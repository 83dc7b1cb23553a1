"""Twin split: identical objects kept apart, with `clustering.split_gap_m` on and off, side by side.

    .venv/bin/python benchmarks/twin_split.py [--scenes 4] [--out benchmarks/results]

Tuning scenes outside every other benchmark (seeds 908_101.., default look, one camera, 8 objects of which
2 identical pairs, orbits and walks, 140x84 model input, true poses as TF) replayed through `Pipeline` with
three engines:

- twin-blind oracle: the oracle engine, but each duplicate shares its original's features (truth IDs merged),
  as an instance head that follows appearance does: only geometry can tell the twins apart;
- oracle: the oracle engine as it is (the split must not harm it);
- embedded: the embedded tiny model.

For each engine and setting it reports identical pairs kept apart (both twins under their own published ID
with T-mIoU >= 0.5), T-mIoU, T-SR and published IDs per true object. Writes twin_split.md and .json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.result_files import write_results  # noqa: E402
from iggt_ros.threads import prepare_process  # noqa: E402

prepare_process()

import numpy as np  # noqa: E402

from iggt_ros.config import IggtConfig  # noqa: E402
from iggt_ros.synthetic.spec import SceneSpec  # noqa: E402
from iggt_ros.train.evaluate import (  # noqa: E402
    Scenario,
    evaluate_sequence,
    oracle_engine_factory,
    tiny_engine_factory,
)

FIRST_SEED = 908_101
TRAJECTORIES = ("orbit", "walk")


def scenes(count: int) -> list[Scenario]:
    return [Scenario(f"twins-{i + 1}", SceneSpec(seed=FIRST_SEED + i, cameras=1, frames=24,
                                                 trajectory=TRAJECTORIES[i % 2], num_objects=8, room="room",
                                                 coverage=0.5, duplicate_pairs=2))
            for i in range(count)]


def run(args: argparse.Namespace) -> dict:
    gap = IggtConfig().clustering.split_gap_m
    engines = {"twin-blind oracle": oracle_engine_factory(twin_blind=True), "oracle": oracle_engine_factory(),
               "embedded": tiny_engine_factory()}
    rows = []
    for name, factory in engines.items():
        for setting, split in (("off", 0.0), ("on", gap)):
            scores = [evaluate_sequence(s, factory, overrides={"clustering.split_gap_m": split})
                      for s in scenes(args.scenes)]
            pairs = sum(s.duplicate_pairs for s in scores)
            kept = sum(round(s.duplicates_kept * s.duplicate_pairs) for s in scores if s.duplicate_pairs)
            row = {"engine": name, "split": setting, "split_gap_m": split, "pairs": pairs, "kept": kept,
                   "t_miou": float(np.mean([s.t_miou for s in scores])),
                   "t_sr": float(np.mean([s.t_sr for s in scores])),
                   "ids_per_object": float(np.mean([s.pred_ids / max(s.objects, 1) for s in scores])),
                   "per_scene": [{"scene": s.scenario, "t_miou": s.t_miou, "pred_ids": s.pred_ids,
                                  "objects": s.objects, "pairs": s.duplicate_pairs, "kept": s.duplicates_kept}
                                 for s in scores]}
            rows.append(row)
            print(f"{name:18s} split {setting:3s}: kept {kept} of {pairs} pairs, T-mIoU {row['t_miou']:.3f}, "
                  f"T-SR {row['t_sr']:.3f}, IDs per object {row['ids_per_object']:.2f}", flush=True)
    return {"scenes": args.scenes, "first_seed": FIRST_SEED, "split_gap_m": gap, "rows": rows}


def markdown(report: dict) -> str:
    lines = ["# Twin split: identical pairs kept apart, split on and off", "",
             f"Tuning scenes (seeds {report['first_seed']}..{report['first_seed'] + report['scenes'] - 1}, "
             "default look, 1 camera, 8 objects with 2 identical pairs, 140x84), `clustering.split_gap_m` "
             f"{report['split_gap_m']} m against 0 (off).", "",
             "| engine | split | pairs kept | T-mIoU | T-SR | IDs per object |", "|---|---|---:|---:|---:|---:|"]
    for r in report["rows"]:
        lines.append(f"| {r['engine']} | {r['split']} | {r['kept']} of {r['pairs']} | {r['t_miou']:.3f} | "
                     f"{r['t_sr']:.3f} | {r['ids_per_object']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenes", type=int, default=4)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args()
    report = run(args)
    write_results(args.out, "twin_split", report, markdown(report))


if __name__ == "__main__":
    main()
