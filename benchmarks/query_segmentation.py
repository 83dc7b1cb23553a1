"""Semantic segmentation of shape classes through the replay report (the paper's 2D mIoU, 2D mAcc, 3D mIoU).

    .venv/bin/python benchmarks/query_segmentation.py --scenes 20
    .venv/bin/python benchmarks/query_segmentation.py --scenes 20 --engine torch   # the embedded model

Each held-out benchmark scene (`iggt_ros.vlm.train_region.SEEDS['benchmark']`, never seen in training)
is written as a sample bag and replayed (`iggt-ros replay` code path) with `query.label_vocabulary`
set to the scenes' shape words. Instances are labelled with the closest shape word by the query
index, as the node labels them, and the replay report scores them against the bag's true objects
(`iggt_ros.eval.semantic`): every pixel of every output view, and every point of every published
cloud. The scenes' confusion matrices are summed, so the totals weigh every pixel (point) once.
Cameras are --width x --height; the oracle engine runs at that size, a model at its own input size
(the embedded model: the size it was trained at), as `benchmarks/quality.py` runs them.

Writes benchmarks/results/query_segmentation_<engine>.json and query_segmentation.md (which also shows
the ground-truth-mask numbers of `benchmarks/query.py --segmentation-only`, query_segmentation.json,
when they are there).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.scene_options import add_scene_arguments  # noqa: E402
from iggt_ros.threads import prepare_process  # noqa: E402

prepare_process()  # the package's thread policy, before numpy and torch load (they read it once)

import numpy as np  # noqa: E402

from iggt_ros.apps.replay import replay_bag  # noqa: E402
from iggt_ros.bag.sample import SampleBagSpec, write_sample_bag  # noqa: E402
from iggt_ros.config import IggtConfig  # noqa: E402
from iggt_ros.eval.semantic import ConfusionMatrix  # noqa: E402
from iggt_ros.synthetic.attributes import SHAPES  # noqa: E402
from iggt_ros.train.evaluate import model_input_hw  # noqa: E402
from iggt_ros.vlm.train_region import SEEDS  # noqa: E402

TRAJECTORIES = ("orbit", "walk", "pan")
"""As `benchmarks/query.py` picks them per seed, so both benchmarks replay the same scenes."""
RESULTS = ROOT / "benchmarks" / "results"


def run_scene(seed: int, args: argparse.Namespace, workdir: Path) -> dict:
    traj = TRAJECTORIES[seed % len(TRAJECTORIES)]
    spec = SampleBagSpec(seed=seed, frames=args.steps, width=args.width, height=args.height, trajectory=traj)
    write_sample_bag(workdir / f"in_{seed}", spec)
    model_h, model_w = (args.height, args.width) if args.engine == "oracle" else model_input_hw()
    cfg = IggtConfig().replace(**{"engine.backend": args.engine, "input.image_width": model_w,
                                  "input.image_height": model_h, "query.label_vocabulary": list(SHAPES)})
    t0 = time.perf_counter()
    summary = replay_bag(workdir / f"in_{seed}", workdir / f"out_{seed}", cfg, report_dir=workdir / f"report_{seed}")
    seg = (summary.metrics or {}).get("segmentation")
    if seg is None:
        raise RuntimeError(f"scene {seed}: the replay report has no segmentation section ({summary.warnings})")
    return {"seed": seed, "trajectory": traj, "views": summary.views, "windows": summary.windows,
            "replay_s": round(time.perf_counter() - t0, 1), **{k: seg[k] for k in (
                "miou_2d", "macc_2d", "miou_3d", "macc_3d", "pixels", "points", "points_unplaced", "objects",
                "instances_labelled", "confusion_2d", "confusion_3d")}}


def summed(scenes: list[dict], key: str) -> ConfusionMatrix:
    cm = ConfusionMatrix(len(SHAPES))
    for s in scenes:
        cm.counts += np.asarray(s[key], np.int64)
    return cm


def pct(v: float | None) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{100 * v:.1f}"


def markdown(results: dict[str, dict], masks: dict | None) -> str:
    lines = ["# Semantic segmentation of shape classes (replay report)", "",
             "Classes: " + ", ".join(SHAPES) + ". Each held-out benchmark scene is replayed as a bag with "
             "`query.label_vocabulary` set to these words; instances are labelled by the query index as the node "
             "labels them (the closest word to the instance's region embedding), and the replay report scores "
             "every pixel of every output view (2D) and every point of every published cloud (3D) of a true "
             "object against its true shape. One confusion matrix over all scenes; mIoU and mAcc average the "
             "classes present.", "",
             "| instances from | scenes | 2D mIoU | 2D mAcc | 3D mIoU | 3D mAcc |", "|---|---|---|---|---|---|"]
    if masks:
        lines.append(f"| ground-truth masks (`benchmarks/query.py --segmentation-only`) | "
                     f"{masks['seeds'][1] - masks['seeds'][0] + 1} | {pct(masks['miou_2d'])} | "
                     f"{pct(masks['macc_2d'])} | - | - |")
    for engine, r in results.items():
        t = r["total"]
        what = f"the pipeline, {engine} engine" + ("" if engine == "oracle" else " (embedded model)")
        lines.append(f"| {what} | {len(r['scenes'])} | {pct(t['miou_2d'])} | {pct(t['macc_2d'])} | "
                     f"{pct(t['miou_3d'])} | {pct(t['macc_3d'])} |")
    for engine, r in results.items():
        t = r["total"]
        lines += ["", f"## Per class, {engine} engine", "", "| class | 2D IoU | 2D accuracy | 3D IoU |",
                  "|---|---|---|---|"]
        for k, name in enumerate(SHAPES):
            lines.append(f"| {name} | {pct(t['iou_2d'][k])} | {pct(t['accuracy_2d'][k])} | {pct(t['iou_3d'][k])} |")
        why = (": windows published from the model's point map, without TF scale, as in the scenes that only turn"
               if t["points_unplaced"] else "")
        lines += ["", f"{t['pixels']} pixels and {t['points']} points scored ({t['points_unplaced']} points whose "
                  f"depth no view of their window agrees with were not{why}); per scene 2D mIoU "
                  + ", ".join(pct(s["miou_2d"]) for s in r["scenes"]) + ".",
                  "", f"Command: `{r['meta']['command']}` ({r['meta']['machine']}, {r['meta']['wall_s']:.0f} s)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_scene_arguments(ap)
    ap.add_argument("--engine", choices=("oracle", "torch", "onnxruntime"), default="oracle")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    lo = SEEDS["benchmark"][0]
    seeds = list(range(lo, lo + args.scenes))
    started = time.perf_counter()
    scenes = []
    with tempfile.TemporaryDirectory(prefix="iggt_seg_bench_") as tmp:
        for seed in seeds:
            s = run_scene(seed, args, Path(tmp))
            scenes.append(s)
            print(f"scene {seed}: 2D mIoU {pct(s['miou_2d'])}, mAcc {pct(s['macc_2d'])}, 3D mIoU {pct(s['miou_3d'])} "
                  f"({s['views']} views, {s['replay_s']} s)", flush=True)
    c2, c3 = summed(scenes, "confusion_2d"), summed(scenes, "confusion_3d")
    total = {"miou_2d": c2.miou(), "macc_2d": c2.macc(), "miou_3d": c3.miou(), "macc_3d": c3.macc(),
             "iou_2d": c2.iou().tolist(), "accuracy_2d": c2.accuracy().tolist(), "iou_3d": c3.iou().tolist(),
             "pixels": int(c2.counts.sum()), "points": int(c3.counts.sum()),
             "points_unplaced": sum(s["points_unplaced"] for s in scenes)}
    command = " ".join(argv if argv is not None else sys.argv[1:])
    meta = {"command": f"python benchmarks/query_segmentation.py {command}",
            "engine": args.engine, "model_input_hw": None if args.engine == "oracle" else list(model_input_hw()),
            "classes": list(SHAPES), "seeds": [seeds[0], seeds[-1]], "steps": args.steps,
            "width": args.width, "height": args.height, "wall_s": time.perf_counter() - started,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {"meta": meta, "total": total, "scenes": scenes}
    (out / f"query_segmentation_{args.engine}.json").write_text(json.dumps(result, indent=1))
    results = {}
    for engine in ("oracle", "torch", "onnxruntime"):
        path = out / f"query_segmentation_{engine}.json"
        if path.exists():
            results[engine] = json.loads(path.read_text())
    masks_path = out / "query_segmentation.json"
    masks = json.loads(masks_path.read_text()) if masks_path.exists() else None
    (out / "query_segmentation.md").write_text(markdown(results, masks))
    print(f"total: 2D mIoU {pct(total['miou_2d'])}, 2D mAcc {pct(total['macc_2d'])}, 3D mIoU {pct(total['miou_3d'])}"
          f"\nwrote {out / f'query_segmentation_{args.engine}.json'} and {out / 'query_segmentation.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
