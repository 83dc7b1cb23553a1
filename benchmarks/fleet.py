"""Fleet evaluation benchmark: the same bags replayed one after another and as Ray tasks, in one run.

    .venv/bin/python benchmarks/fleet.py --bags 4 --frames 8 [--engines oracle torch] [--cpus N]

Writes N sample bags (held-out seeds) and, per engine, evaluates them with
`iggt_ros.fleet.evaluate_fleet` on the serial runner and then on a local Ray instance of `--cpus`
CPUs (one CPU per bag), each `--repeats` times with the same threads per replay, and reports both
wall times, their ratio, whether the totals agree, and the
machine's load before and after each run (a busy machine gives Ray fewer free cores than it
declares). The oracle engine costs little per bag, so it shows Ray's overhead; the embedded tiny
model (`torch`) gives each task real work. Each fleet's wall time includes
writing its reports; the Ray run's includes starting the Ray instance, which a standing cluster
does not pay, reported apart. Writes benchmarks/results/fleet.md and fleet.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from iggt_ros.config import ThreadsConfig  # noqa: E402
from iggt_ros.threads import prepare_process  # noqa: E402

BAG_THREADS = ThreadsConfig(torch=1, pixel=1, onnxruntime=1)
"""Every replay, serial or on Ray, runs with the threads of one CPU: the comparison is of scheduling only."""
prepare_process(BAG_THREADS)  # the serial replays run in this process: before numpy and torch load

from iggt_ros.bag.sample import SampleBagSpec, write_sample_bag  # noqa: E402
from iggt_ros.config import IggtConfig  # noqa: E402
from iggt_ros.fleet.bags import find_bags, plan_jobs  # noqa: E402
from iggt_ros.fleet.evaluate import evaluate_fleet, machine_load  # noqa: E402
from iggt_ros.fleet.runners import SerialRunner  # noqa: E402
from iggt_ros.fleet.task import ReplaySettings  # noqa: E402


def compare(engine: str, jobs: list, root: Path, width: int, height: int, cpus: int, repeats: int) -> dict:
    """Serial then Ray on the same bags with one engine, `repeats` times each (median wall times); loads and
    both fleets' totals."""
    import ray

    from iggt_ros.fleet.runners import RayRunner

    threads = {f"threads.{k}": v for k, v in dataclasses.asdict(BAG_THREADS).items()}
    config = IggtConfig().replace(**{"engine.backend": engine, "input.image_width": width,
                                     "input.image_height": height, "clustering.min_instance_area_px": 20, **threads})
    settings = ReplaySettings(config=config)
    load_serial = machine_load()
    serial_runs = []
    for i in range(repeats):
        t0 = time.perf_counter()
        serial = evaluate_fleet(jobs, root / engine / f"serial{i}", settings, SerialRunner(), progress=False)
        serial_runs.append(time.perf_counter() - t0)
    serial_s = statistics.median(serial_runs)
    load_ray = machine_load()
    t0 = time.perf_counter()
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    start_s = time.perf_counter() - t0
    ray_runs = []
    try:
        for i in range(repeats):
            t1 = time.perf_counter()
            on_ray = evaluate_fleet(jobs, root / engine / f"ray{i}", settings, RayRunner("local", cpus_per_bag=1),
                                    progress=False)
            ray_runs.append(time.perf_counter() - t1)
    finally:
        ray.shutdown()
    ray_s = statistics.median(ray_runs)
    same = (serial.totals["counts"] == on_ray.totals["counts"]
            and serial.totals["quality"] == on_ray.totals["quality"])
    return {
        "engine": engine, "serial_s": round(serial_s, 2), "ray_s": round(ray_s, 2), "ray_start_s": round(start_s, 2),
        "serial_runs_s": [round(t, 2) for t in serial_runs], "ray_runs_s": [round(t, 2) for t in ray_runs],
        "speedup": round(serial_s / ray_s, 3), "speedup_with_start": round(serial_s / (ray_s + start_s), 3),
        "serial_replay_s": round(serial.totals["timing"]["replay_s"], 2),
        "ray_replay_s": round(on_ray.totals["timing"]["replay_s"], 2), "bags_ok": on_ray.totals["counts"]["ok"],
        "totals_equal": same, "load_before_serial": load_serial, "load_before_ray": load_ray,
        "load_after": machine_load(), "serial_totals": serial.totals, "ray_totals": on_ray.totals,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bags", type=int, default=4)
    parser.add_argument("--frames", type=int, default=8, help="frames per bag")
    parser.add_argument("--size", default="168x112", metavar="WxH", help="camera and model input size")
    parser.add_argument("--engines", nargs="+", default=["oracle", "torch"], choices=("oracle", "torch"),
                        help="oracle (ground truth, post-processing only) and/or torch (the embedded tiny model)")
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 2, help="CPUs of the local Ray instance")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each fleet (the median is reported)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory(prefix="fleet_bench_") as tmp:
        root = Path(tmp)
        for i in range(args.bags):
            write_sample_bag(root / "bags" / f"bag{i:02d}", SampleBagSpec(seed=500 + i, frames=args.frames,
                                                                          width=width, height=height))
        jobs = plan_jobs(find_bags([root / "bags"]))
        runs = [compare(engine, jobs, root, width, height, args.cpus, args.repeats) for engine in args.engines]

    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    result = {"bags": args.bags, "frames": args.frames, "size": [width, height], "ray_cpus": args.cpus,
              "machine": machine, "runs": runs}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "fleet.json").write_text(json.dumps(result, indent=2) + "\n")
    md = [
        "# Fleet evaluation: serial vs Ray", "",
        f"{args.bags} sample bags of {args.frames} frames at {width}x{height}; local Ray instance of {args.cpus} "
        f"CPUs, one CPU per bag; machine: {machine}. Every replay, serial or on Ray, runs with one thread per pool "
        f"(threads.torch, .pixel, .onnxruntime = 1, waiting threads sleep). Wall times are the median of "
        f"{args.repeats} runs of each fleet and include writing every report; starting the Ray instance is counted "
        "apart (a standing cluster does not pay it). With 2 cores and one CPU per bag, Ray can at most halve the "
        "serial time.", "",
        "| engine | serial wall (s) | Ray wall (s) | Ray start (s) | serial / Ray | with start | replay time summed, "
        "serial / Ray (s) | bags ok | totals equal | load before serial / before Ray / after |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        md.append(f"| {r['engine']} | {r['serial_s']:.1f} | {r['ray_s']:.1f} | {r['ray_start_s']:.1f} | "
                  f"**{r['speedup']:.2f}x** | {r['speedup_with_start']:.2f}x | {r['serial_replay_s']:.1f} / "
                  f"{r['ray_replay_s']:.1f} | {r['bags_ok']} of {args.bags} | {r['totals_equal']} | "
                  f"{r['load_before_serial']} / {r['load_before_ray']} / {r['load_after']} |")
    md.append("")
    (out / "fleet.md").write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
