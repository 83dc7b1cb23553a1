"""Soak benchmark: an hour of input (a generated walk through several rooms) through the perception pipeline.

    .venv/bin/python benchmarks/soak.py [--frames 36000] [--cameras 1] [--engine oracle|embedded] [--seed 0]
    .venv/bin/python benchmarks/soak.py --report      # table and plots from the runs in benchmarks/results

The input is `synthetic.long_walk`: rooms with their own objects joined by an empty corridor, every room
visited again and again, rendered step by step at 10 Hz with TF poses (nothing is stored). Each run
replays it through `Pipeline` with the default configuration (keyframes, windows of 8 steps, 6 with 2
cameras (12 images), stride 4, the map's bounds) at the engine's input size, and records per window:
the process's RSS, the window's latency (engine and post-processing, `timings_ms['total']`, wall clock)
and its CPU time (all threads of the process; on a shared machine wall-clock latency follows the other
work, CPU time follows the pipeline), the map's size (instances, voxels), the IDs handed out and the
true objects seen so far. Engines: the oracle (degraded ground truth as in the quality benchmark:
window-local features, an unknown similarity per window, noisy boundaries) and the embedded tiny model.

Re-identification: a true object "comes back" when it is seen (at least MIN_PIXELS pixels in a view) in a
window after REVISIT_GAP or more windows without being seen; it is re-identified when the ID covering most
of its pixels is the one that covered it when it was last seen. Revisits after the robot left the room are
counted apart ("room revisits").

Targets (lifelong operation): RSS at the end at most 5 % above RSS at the end of the first quarter; window
latency p95 of the last quarter within 20 % of the first quarter's; with the oracle, IDs in the map at the
end at most 1.2x the true objects seen, and at least 90 % of revisits re-identified. Writes
benchmarks/results/soak_<engine>_<N>cam.json per run; --report writes soak.md and soak.png from them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from iggt_ros.threads import prepare_process  # noqa: E402

prepare_process()  # the package's thread policy, before numpy and torch load (they read it once)

import numpy as np  # noqa: E402

from iggt_ros.config import MAX_VIEWS, IggtConfig  # noqa: E402
from iggt_ros.engine.base import ViewKey  # noqa: E402
from iggt_ros.engine.oracle import OracleEngine  # noqa: E402
from iggt_ros.engine.preprocess import resize_nearest  # noqa: E402
from iggt_ros.perception.frames import CameraFrame, FrameSet  # noqa: E402
from iggt_ros.perception.pipeline import Pipeline  # noqa: E402
from iggt_ros.synthetic.long_walk import LongWalk, LongWalkSpec, iter_long_walk  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
MIN_PIXELS = 40
"""Pixels (at the model input size) of a true object in a view for it to count as seen there."""
REVISIT_GAP = 4
"""Windows without the object before a sighting counts as a revisit (more than tracking.lost_windows)."""
CAMERA_SIZE = (168, 112)
"""Rendered camera images (width, height); the engine resizes to its input."""


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def make_engine(kind: str, truth: dict, seed: int):
    if kind == "oracle":
        return OracleEngine(truth, input_size=(112, 168), similarity="full", window_local_features=True,
                            boundary_px=1, seed=seed)
    from iggt_ros.train.evaluate import model_input_hw, tiny_engine_factory

    return tiny_engine_factory(input_hw=model_input_hw(), threads=2)(None)


class RevisitScore:
    """Per true object: the ID it had when last seen, and whether it gets it back when it comes back."""

    def __init__(self, walk: LongWalk) -> None:
        self.walk = walk
        self.last: dict[int, tuple[int, int, int]] = {}
        """object -> (window, ID, visit index) of its last sighting."""
        self.revisits = self.reidentified = 0
        self.room_revisits = self.room_reidentified = 0
        self.seen_objects: set[int] = set()
        self.id_votes: dict[int, dict[int, int]] = {}
        """predicted ID -> true object (0 = walls, floor) -> pixels over the run."""

    def object_ids(self, ids: set[int]) -> tuple[int, int]:
        """Of `ids`: how many cover mostly a true object, how many mostly walls and floor (or nothing seen)."""
        on_objects = sum(1 for i in ids if (v := self.id_votes.get(i)) and max(v, key=v.get) > 0)
        return on_objects, len(ids) - on_objects

    def add(self, window: int, visit: int, id_images: np.ndarray, truth_images: list[np.ndarray]) -> None:
        votes: dict[int, dict[int, int]] = {}
        for pred, gt in zip(id_images, truth_images, strict=True):
            pairs, counts = np.unique(pred[pred > 0].astype(np.int64) << 16 | gt[pred > 0], return_counts=True)
            for pair, n in zip(pairs.tolist(), counts.tolist(), strict=True):
                by_obj = self.id_votes.setdefault(pair >> 16, {})
                by_obj[pair & 0xFFFF] = by_obj.get(pair & 0xFFFF, 0) + n
            objs, counts = np.unique(gt[gt > 0], return_counts=True)
            for obj, n in zip(objs.tolist(), counts.tolist(), strict=True):
                if n < MIN_PIXELS:
                    continue
                ids, c = np.unique(pred[gt == obj], return_counts=True)
                for i, k in zip(ids.tolist(), c.tolist(), strict=True):
                    votes.setdefault(obj, {}).setdefault(i, 0)
                    votes[obj][i] += k
        for obj, v in votes.items():
            nonzero = {i: k for i, k in v.items() if i}
            pid = max(nonzero, key=nonzero.get) if nonzero else 0
            self.seen_objects.add(obj)
            prev = self.last.get(obj)
            if prev is not None and window - prev[0] >= REVISIT_GAP and prev[1]:
                ok = pid == prev[1]
                self.revisits += 1
                self.reidentified += ok
                if visit != prev[2]:
                    self.room_revisits += 1
                    self.room_reidentified += ok
            if pid or prev is None:
                self.last[obj] = (window, pid, visit)
            else:
                self.last[obj] = (window, prev[1], visit)


def run(frames: int, cameras: int, engine_kind: str, seed: int, log_every: int, out: Path,
        checkpoint_every: int = 200) -> dict:
    spec = LongWalkSpec(seed=seed, frames=frames, cameras=cameras, width=CAMERA_SIZE[0], height=CAMERA_SIZE[1])
    walk = LongWalk(spec)
    truth: dict[ViewKey, object] = {}
    engine = make_engine(engine_kind, truth, seed)
    h, w = engine.input_size
    # the default window (8 steps) unless the cameras' images would exceed what IGGT takes at once
    config = IggtConfig().replace(**{"input.cameras": list(walk.rig.names), "input.image_width": w,
                                     "input.image_height": h, "window.size": min(8, MAX_VIEWS // cameras)})
    pipe = Pipeline(config, engine)
    score = RevisitScore(walk)
    visit_starts = np.array([v.start for v in walk.visits])
    series: dict[str, list] = {k: [] for k in ("step", "window", "rss_mb", "latency_ms", "cpu_ms", "postprocess_ms",
                                               "instances", "confirmed", "points", "ids_issued", "objects_seen")}
    errors: list[str] = []
    ids_issued: set[int] = set()
    t0 = time.perf_counter()
    for step, views in enumerate(iter_long_walk(walk)):
        for v in views:
            truth[ViewKey(v.camera, int(v.stamp_ns))] = v
        fs = FrameSet(views[0].stamp_ns, {v.camera: CameraFrame(v.camera, v.stamp_ns, v.rgb, v.intrinsics,
                                                                f"{v.camera}_optical", v.world_from_camera)
                                          for v in views})
        cpu0 = time.process_time()
        try:
            res = pipe.push(fs)
        except Exception as exc:  # the benchmark reports a crash instead of hiding it
            errors.append(f"step {step}: {type(exc).__name__}: {exc}")
            raise
        cpu_ms = (time.process_time() - cpu0) * 1e3
        gts = None
        if res is not None:  # the window's views are all still held: score it before letting go of them
            gts = [np.asarray(resize_nearest(truth[ViewKey(v.camera, v.stamp_ns)].instance_ids, (h, w)))
                   for v in res.views]
        held = pipe.held_views()
        for key in [k for k in truth if k not in held]:
            del truth[key]
        if res is None:
            continue
        visit = int(np.searchsorted(visit_starts, step, side="right") - 1)
        if res.views:
            score.add(res.window_index, visit, res.instance_images, gts)
        size = pipe.map_size()
        ids_issued.update(i.id for i in res.instances)
        for key, value in (("step", step), ("window", res.window_index), ("rss_mb", round(rss_mb(), 1)),
                           ("latency_ms", round(res.timings_ms.get("total", 0.0), 2)), ("cpu_ms", round(cpu_ms, 2)),
                           ("postprocess_ms", round(res.timings_ms.get("postprocess", 0.0), 2)),
                           ("instances", size.instances), ("confirmed", size.confirmed), ("points", size.points),
                           ("ids_issued", len(ids_issued)), ("objects_seen", len(score.seen_objects))):
            series[key].append(value)
        if res.warnings:
            errors.extend(f"window {res.window_index}: {m}" for m in res.warnings if "failed" in m)
        if checkpoint_every and len(series["step"]) % checkpoint_every == 0:  # a cut-short run still reports
            partial = summarise(series, score, walk, pipe, frames, cameras, engine_kind, seed, errors,
                                time.perf_counter() - t0, step + 1)
            out.write_text(json.dumps(partial))
        if log_every and len(series["step"]) % log_every == 0:
            print(f"step {step}/{frames} window {res.window_index} rss {series['rss_mb'][-1]} MB "
                  f"latency {series['latency_ms'][-1]} ms map {size.instances} inst {size.points} pts "
                  f"objects {len(score.seen_objects)} revisits {score.reidentified}/{score.revisits} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    return summarise(series, score, walk, pipe, frames, cameras, engine_kind, seed, errors,
                     time.perf_counter() - t0, frames)


def summarise(series, score, walk, pipe, frames, cameras, engine_kind, seed, errors, elapsed, done) -> dict:
    """Totals over the `done` frames replayed so far (quarters of those frames)."""
    steps = np.array(series["step"])
    lat = np.array(series["latency_ms"])
    rss = np.array(series["rss_mb"])
    q1 = steps < done / 4
    q4 = steps >= 3 * done / 4
    rss_q1 = float(rss[q1][-1]) if q1.any() else float("nan")
    rss_end = float(rss[-1]) if len(rss) else float("nan")
    p95_q1 = float(np.percentile(lat[q1], 95)) if q1.any() else float("nan")
    p95_q4 = float(np.percentile(lat[q4], 95)) if q4.any() else float("nan")
    cpu = np.array(series["cpu_ms"])
    cpu_q1 = float(np.percentile(cpu[q1], 95)) if q1.any() else float("nan")
    cpu_q4 = float(np.percentile(cpu[q4], 95)) if q4.any() else float("nan")
    final = pipe.map_size()
    objects_seen = len(score.seen_objects)
    in_map = {i.id for i in pipe.snapshot().instances}
    on_objects, on_background = score.object_ids(in_map)
    return {
        "engine": engine_kind, "cameras": cameras, "frames": done, "frames_planned": frames,
        "complete": done >= frames, "seed": seed,
        "windows": len(steps), "elapsed_s": round(elapsed, 1), "errors": errors,
        "objects_in_building": walk.num_objects, "objects_seen": objects_seen,
        "rooms": walk.spec.rooms, "visits": len(walk.visits),
        "rss_end_q1_mb": rss_q1, "rss_end_mb": rss_end,
        "rss_growth": (rss_end / rss_q1 - 1) if rss_q1 == rss_q1 else None,
        "latency_p95_q1_ms": p95_q1, "latency_p95_q4_ms": p95_q4,
        "latency_p95_change": (p95_q4 / p95_q1 - 1) if p95_q1 == p95_q1 else None,
        "latency_median_ms": float(np.median(lat)) if len(lat) else None,
        "cpu_p95_q1_ms": cpu_q1, "cpu_p95_q4_ms": cpu_q4,
        "cpu_p95_change": (cpu_q4 / cpu_q1 - 1) if cpu_q1 == cpu_q1 else None,
        "map_instances_end": final.instances, "map_confirmed_end": final.confirmed, "map_points_end": final.points,
        "map_instances_max": int(max(series["instances"], default=0)),
        "map_points_max": int(max(series["points"], default=0)),
        "removed_by_age": final.removed_by_age, "removed_by_count": final.removed_by_count,
        "ids_per_object_end": final.instances / max(objects_seen, 1),
        "map_ids_on_objects_end": on_objects, "map_ids_on_background_end": on_background,
        "object_ids_per_object_end": on_objects / max(objects_seen, 1),
        "ids_issued": int(series["ids_issued"][-1]) if series["ids_issued"] else 0,
        "revisits": score.revisits, "reidentified": score.reidentified,
        "reid_rate": score.reidentified / max(score.revisits, 1),
        "room_revisits": score.room_revisits, "room_reidentified": score.room_reidentified,
        "room_reid_rate": score.room_reidentified / max(score.room_revisits, 1),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "series": series,
    }


# ---------------------------------------------------------------------------------------------------- report
def report() -> None:
    runs = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("soak_*.json"))]
    if not runs:
        raise SystemExit("no soak runs in benchmarks/results; run benchmarks/soak.py first")
    lines = ["# Soak: a generated walk through several rooms", "",
             "`benchmarks/soak.py` (see its docstring): rooms with their own objects joined by an empty corridor, "
             "revisited at random, rendered at 10 Hz with TF poses, replayed through `Pipeline` with the default "
             "configuration. Quarters are by input frame. Re-identification: an object seen again after "
             f"{REVISIT_GAP}+ windows away gets the ID it had when last seen.", "",
             "| engine | cameras | frames (hours at 10 Hz) | windows | RSS end of Q1 -> end (growth) | "
             "latency p95 Q1 -> Q4 (change) | CPU time per window p95 Q1 -> Q4 (change) | "
             " map instances / points at end (max) | objects seen | "
             "IDs in map per object (IDs on objects / on walls and floor) | "
             "revisits re-identified (after leaving the room) | errors | wall time |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(
            f"| {r['engine']} | {r['cameras']} | {r['frames']} ({r['frames'] / 36000:.2f})"
            f"{'' if r['complete'] else ' of ' + str(r['frames_planned']) + ', cut short'} | {r['windows']} | "
            f"{r['rss_end_q1_mb']:.0f} -> {r['rss_end_mb']:.0f} MB ({100 * r['rss_growth']:+.1f} %) | "
            f"{r['latency_p95_q1_ms']:.0f} -> {r['latency_p95_q4_ms']:.0f} ms "
            f"({100 * r['latency_p95_change']:+.1f} %) | "
            f"{r['cpu_p95_q1_ms']:.0f} -> {r['cpu_p95_q4_ms']:.0f} ms ({100 * r['cpu_p95_change']:+.1f} %) | "
            f"{r['map_instances_end']} / {r['map_points_end']} ({r['map_instances_max']} / {r['map_points_max']}) | "
            f"{r['objects_seen']} of {r['objects_in_building']} | {r['ids_per_object_end']:.2f} "
            f"({r['map_ids_on_objects_end']} / {r['map_ids_on_background_end']}) | "
            f"{r['reidentified']}/{r['revisits']} = {100 * r['reid_rate']:.1f} % "
            f"({r['room_reidentified']}/{r['room_revisits']} = {100 * r['room_reid_rate']:.1f} %) | "
            f"{len(r['errors'])} | {r['elapsed_s'] / 60:.0f} min |")
    lines += ["", f"Machine: {runs[0]['machine']} (shared with other work while it ran). Plots: soak.png.", ""]
    (RESULTS / "soak.md").write_text("\n".join(lines))
    plot(runs)
    print("\n".join(lines))


def plot(runs: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 7))
    for r in runs:
        s = r["series"]
        label = f"{r['engine']} {r['cameras']} cam"
        hours = np.array(s["step"]) / 36000
        axes[0, 0].plot(hours, s["rss_mb"], label=label)
        lat = np.array(s["latency_ms"])
        k = 25
        smooth = np.convolve(lat, np.ones(k) / k, mode="valid") if len(lat) > k else lat
        axes[0, 1].plot(hours[len(hours) - len(smooth):], smooth, label=label)
        axes[1, 0].plot(hours, s["instances"], label=f"{label}: instances")
        axes[1, 0].plot(hours, s["objects_seen"], "--", label=f"{label}: true objects seen")
        axes[1, 1].plot(hours, np.array(s["points"]) / 1000, label=label)
    for ax, title in zip(axes.ravel(), ("RSS (MB)", f"window latency (ms, mean of {25})", "map instances",
                                        "map voxels (thousands)"), strict=True):
        ax.set_title(title)
        ax.set_xlabel("input (hours at 10 Hz)")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(RESULTS / "soak.png", dpi=90)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=36_000, help="time steps of the walk (36,000 = 1 h at 10 Hz)")
    parser.add_argument("--cameras", type=int, default=1, choices=(1, 2))
    parser.add_argument("--engine", default="oracle", choices=("oracle", "embedded"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-every", type=int, default=100, help="print progress every N windows (0 = never)")
    parser.add_argument("--output", type=Path, default=None, help="run JSON (default benchmarks/results/soak_...)")
    parser.add_argument("--report", action="store_true", help="only write soak.md and soak.png from saved runs")
    args = parser.parse_args()
    if args.report:
        report()
        return 0
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    out = args.output or RESULTS / f"soak_{args.engine}_{args.cameras}cam.json"
    result = run(args.frames, args.cameras, args.engine, args.seed, args.log_every, out)
    out.write_text(json.dumps(result))
    summary = {k: v for k, v in result.items() if k != "series"}
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
