"""The package on a shared CPU: each workload idle and beside 1 and 2 busy processes, side by side in one run.

A robot's computer runs camera drivers, navigation and the DDS stack beside this node. This benchmark
starts busy processes itself (pure CPU loops, one core each, killed after each measurement and bounded
in time) and measures, under each thread setting:

* engine-torch: the embedded tiny model, 8 frames at its 140x84 input, one forward pass;
* engine-onnxruntime: the same model exported to ONNX, on ONNX Runtime's CPU provider;
* postprocess: `Pipeline.process_window` after the engine (validity, mapping, clustering, assignment,
  tracking, object map, cloud) on 8-view 504x336 windows of the embedded model's own features;
* node: the node in-process over DDS (oracle engine, 504x336, S = 8): the time from the engine's return to
  the last output's arrival in a subscriber, and the cold start from configure to the first window
  (what `/diagnostics` reports as configure_to_first_window_s);
* demo: `iggt-ros demo` as a user runs it (a fresh process: sample bag, replay on the embedded model,
  report), its wall time and its cold start (process start to the first window's outputs).

Settings: `policy` is the package's thread policy as shipped (the `threads` defaults: waiting threads
sleep, one PyTorch thread, the other pools on every CPU); `policy, every CPU` puts PyTorch on every CPU
too; `policy, 1 thread` puts the per-pixel passes and ONNX Runtime on one thread; `spinning (not shipped)`
is PyTorch on every CPU with OMP_WAIT_POLICY=ACTIVE in the environment, as the libraries run without the
policy (OpenMP threads spin while they wait; ONNX Runtime still does not spin there).
Each measurement runs in a fresh process whose environment is set before its libraries load, prepared
before the busy processes start; only the timed part runs beside them. The ratio is to the same
workload and setting idle (a fair share of 2 cores beside 2 busy processes is 2x).

Usage: source tools/ros_env.sh && source install/setup.bash   (for the node workload)
       .venv/bin/python benchmarks/contention.py [--workloads ...] [--busy 0 1 2] [--out benchmarks/results]
Writes contention.md and contention.json and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
try:  # an installed package (a colcon install: the node workload needs its generated messages) is used as it is
    import iggt_ros  # noqa: F401
except ImportError:
    sys.path.insert(0, str(ROOT))
sys.path.append(str(ROOT))  # benchmarks.postprocess

from benchmarks.result_files import write_results  # noqa: E402

WORKLOADS = ("engine-torch", "engine-onnxruntime", "postprocess", "node", "demo")
SETTINGS: dict[str, dict[str, object]] = {
    "policy": {},
    "policy, every CPU": {"threads.torch": 0},
    "policy, 1 thread": {"threads.pixel": 1, "threads.onnxruntime": 1},
    "spinning (not shipped)": {"threads.torch": 0, "env.OMP_WAIT_POLICY": "ACTIVE"},
}
"""Settings: `threads.*` overrides of the configuration, and `env.*` variables set in the environment the process
starts with (as a user could; they win over the policy)."""
BUSY_LIMIT_S = 600
"""A busy process ends by itself after this long even if the benchmark dies."""
POLICY_VARIABLES = ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                    "GOMP_SPINCOUNT", "MKL_NUM_THREADS")
RESULT = "RESULT "


# ---------------------------------------------------------------------------------------------- parent side
def start_busy(count: int) -> list[subprocess.Popen]:
    code = (f"# iggt_contention busy process\nimport time\nend = time.time() + {BUSY_LIMIT_S}\n"
            "while time.time() < end:\n    pass\n")
    return [subprocess.Popen([sys.executable, "-c", code]) for _ in range(count)]


def stop(processes: list[subprocess.Popen]) -> None:
    for p in processes:
        p.kill()
    for p in processes:
        p.wait()


def child_env(setting: str, workdir: Path) -> dict[str, str]:
    """The parent's environment less every thread variable: the child's policy comes from its settings only."""
    env = {k: v for k, v in os.environ.items() if k not in POLICY_VARIABLES}
    env.update({k[4:]: str(v) for k, v in SETTINGS[setting].items() if k.startswith("env.")})
    env["IGGT_CONTENTION_SETTING"] = json.dumps(config_overrides(setting))
    env["IGGT_CONTENTION_WORKDIR"] = str(workdir)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (env.get("PYTHONPATH", ""), str(ROOT)) if p)
    return env


def measure(workload: str, setting: str, busy: int, workdir: Path, timeout_s: float) -> dict:
    """One workload in a fresh process: prepared idle, then timed beside `busy` busy processes."""
    env = child_env(setting, workdir)
    if workload == "demo":
        return measure_demo(setting, busy, workdir, env, timeout_s)
    log = workdir / f"{workload}.log"  # the child's logging (the node's ROS log) goes here, not to the table
    with open(log, "w") as err:
        child = subprocess.Popen([sys.executable, __file__, "--child", workload], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=err, text=True, env=env, cwd=ROOT)
    hogs: list[subprocess.Popen] = []
    try:
        line = child.stdout.readline()
        if line.strip() != "READY":
            child.wait(timeout=60)
            tail = log.read_text().strip().splitlines()[-1:]
            return {"error": f"child did not start: {line.strip() or 'exit ' + str(child.returncode)} {tail}"}
        hogs = start_busy(busy)
        time.sleep(0.5)  # the busy processes are running before the timed part starts
        child.stdin.write("go\n")
        child.stdin.flush()
        out, _ = child.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        child.kill()
        return {"error": f"timed out after {timeout_s:.0f} s"}
    finally:
        stop(hogs)
    for line in out.splitlines():
        if line.startswith(RESULT):
            return json.loads(line[len(RESULT):])
    return {"error": f"no result (exit {child.returncode})"}


def measure_demo(setting: str, busy: int, workdir: Path, env: dict[str, str], timeout_s: float) -> dict:
    """`iggt-ros demo` in a fresh process beside the busy processes: wall time and cold start."""
    config = workdir / f"threads-{abs(hash(setting))}.yaml"
    write_config(setting, config)
    out_dir = workdir / "demo"
    hogs = start_busy(busy)
    time.sleep(0.5)
    try:
        t = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "iggt_ros.cli", "demo", "--out", str(out_dir),
                               "--config", str(config)], env=env, cwd=ROOT, capture_output=True, text=True,
                              timeout=timeout_s)
        wall = time.perf_counter() - t
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s:.0f} s"}
    finally:
        stop(hogs)
    if done.returncode != 0:
        return {"error": f"demo exit {done.returncode}: {done.stderr.strip().splitlines()[-1:]}"}
    first = re.search(r"first window [0-9.]+ s after the replay started \(([0-9.]+) s after the process started\)",
                      done.stdout)
    latency = re.search(r"latency per window: mean ([0-9.]+) ms, p95 ([0-9.]+) ms", done.stdout)
    return {"wall_s": wall, "first_window_s": float(first.group(1)) if first else None,
            "window_mean_ms": float(latency.group(1)) if latency else None,
            "window_p95_ms": float(latency.group(2)) if latency else None}


def config_overrides(setting: str) -> dict[str, object]:
    return {k: v for k, v in SETTINGS[setting].items() if not k.startswith("env.")}


def write_config(setting: str, path: Path) -> None:
    from iggt_ros.config import IggtConfig, save_config

    save_config(IggtConfig().replace(**config_overrides(setting)), path)


def export_onnx_model(workdir: Path) -> None:
    """The embedded model's ONNX export at 140x84 (once per run, in its own process)."""
    code = ("import sys; from pathlib import Path; from iggt_ros.engine.export import export_onnx; "
            "from iggt_ros.model.checkpoint import load_model; from iggt_ros.engine.weights import EMBEDDED_WEIGHTS; "
            "m, _ = load_model(EMBEDDED_WEIGHTS); export_onnx(m.float().eval(), Path(sys.argv[1]), (84, 140), "
            "max_frames=8)")
    subprocess.run([sys.executable, "-c", code, str(workdir / "tiny.onnx")], check=True, cwd=ROOT,
                   env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True)


# ---------------------------------------------------------------------------------------------- child side
def child_policy():
    """Apply this child's thread setting before numpy and torch load; returns the configuration."""
    from iggt_ros import threads
    from iggt_ros.config import IggtConfig

    config = IggtConfig().replace(**json.loads(os.environ.get("IGGT_CONTENTION_SETTING", "{}")))
    threads.prepare_process(config.threads)
    return config


def ready_then_wait() -> None:
    print("READY", flush=True)
    sys.stdin.readline()


def timing(values_ms: list[float]) -> dict:
    import numpy as np

    return {"median_ms": statistics.median(values_ms), "p95_ms": float(np.percentile(values_ms, 95)),
            "count": len(values_ms)}


def child_engine(backend: str, config, runs: int = 12) -> dict:
    import numpy as np

    from iggt_ros import threads

    workdir = Path(os.environ["IGGT_CONTENTION_WORKDIR"])
    if backend == "torch":
        from iggt_ros.engine.torch_engine import TorchEngine
        from iggt_ros.engine.weights import EMBEDDED_WEIGHTS

        engine = TorchEngine.from_checkpoint(EMBEDDED_WEIGHTS, input_size=(84, 140))
    else:
        from iggt_ros.engine.onnxruntime_engine import OnnxRuntimeEngine

        engine = OnnxRuntimeEngine(workdir / "tiny.onnx", threads=config.threads)
    threads.apply_runtime(config.threads)
    images = np.random.default_rng(0).integers(0, 256, (8, 84, 140, 3), dtype=np.uint8)
    for _ in range(2):
        engine.infer(images)
    ready_then_wait()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        engine.infer(images)
        times.append((time.perf_counter() - t) * 1e3)
    return {**timing(times), "in_force": threads.in_force()}


def child_postprocess(config, windows: int = 4, repeats: int = 3) -> dict:
    import logging

    from benchmarks.postprocess import CachedEngine, model_case
    from iggt_ros import threads
    from iggt_ros.engine.torch_engine import TorchEngine
    from iggt_ros.engine.weights import EMBEDDED_WEIGHTS
    from iggt_ros.perception.pipeline import Pipeline
    from iggt_ros.train.evaluate import HELD_OUT_SCENARIOS

    logging.disable(logging.WARNING)
    engine = TorchEngine.from_checkpoint(EMBEDDED_WEIGHTS, input_size=(336, 504))
    scenarios = [s for s in HELD_OUT_SCENARIOS if s.name == "room-orbit-1cam"]
    case = model_case(engine, scenarios, (336, 504), windows)
    cfg = case.config.replace(**{k: v for k, v in config.to_flat().items() if k.startswith("threads.")})
    cached = CachedEngine(case.preds, case.hw)
    Pipeline(cfg, cached).process_window(case.windows[0])  # imports, kernels, caches
    ready_then_wait()
    times = []
    for _ in range(repeats):
        pipe = Pipeline(cfg, cached)
        for win in case.windows:
            times.append(pipe.process_window(win).timings_ms["postprocess"])
    return {**timing(times), "in_force": threads.in_force()}


def child_node(config) -> dict:
    from benchmarks.postprocess import node_overhead
    from iggt_ros import threads

    try:
        import rclpy  # noqa: F401

        from iggt_ros.msg import InstanceArray  # noqa: F401
    except ImportError as exc:
        ready_then_wait()
        return {"skipped": f"rclpy or the built interfaces are missing ({exc}): source install/setup.bash"}
    ready_then_wait()
    out = node_overhead(0, 24, threads=config.threads)
    return {"median_ms": out["engine_return_to_last_output_ms_median"],
            "p95_ms": out["engine_return_to_last_output_ms_max"],
            "configure_to_first_window_s": out["configure_to_first_window_s"], "windows": out["windows"],
            "in_force": threads.in_force()}


def child(workload: str) -> None:
    config = child_policy()
    if workload == "engine-torch":
        result = child_engine("torch", config)
    elif workload == "engine-onnxruntime":
        result = child_engine("onnxruntime", config)
    elif workload == "postprocess":
        result = child_postprocess(config)
    elif workload == "node":
        result = child_node(config)
    else:
        raise SystemExit(f"unknown workload {workload}")
    print(RESULT + json.dumps(result), flush=True)


# ---------------------------------------------------------------------------------------------- report
def main_value(row: dict) -> float | None:
    return row.get("median_ms", row.get("wall_s"))


README_WHAT = {"engine-torch": "engine, torch: 8 frames at 140x84 (ms)",
               "engine-onnxruntime": "engine, onnxruntime: 8 frames at 140x84 (ms)",
               "postprocess": "post-processing: 8-view 504x336 window (ms)",
               "node": "node: engine return to last output (ms)", "demo": "iggt-ros demo: wall time (s)"}


def readme_rows(report: dict) -> list[str]:
    """The README's table (the thread policy section): the median per condition and the ratio, per workload and
    setting; test/test_readme_numbers.py holds the README to these numbers."""
    lines = ["| workload, setting | " + " | ".join("idle" if b == 0 else f"{b} busy" for b in report["busy"])
             + f" | {max(report['busy'])} busy / idle |", "|---|" + "---:|" * (len(report["busy"]) + 1)]
    for row in report["rows"]:
        values = [main_value(row["results"].get(str(b), {})) for b in report["busy"]]
        if any(v is None for v in values) or row.get("ratio") is None:
            continue
        lines.append(f"| {README_WHAT[row['workload']]}, {row['setting']} | "
                     + " | ".join(f"{v:.0f}" if v >= 100 else f"{v:.1f}" for v in values)
                     + f" | {row['ratio']:.2f}x |")
    return lines


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        "# The package on a shared CPU: idle and beside busy processes",
        "",
        f"`benchmarks/contention.py`, {report['date']}: {m['cpus']} CPUs ({m['processor']}), Python {m['python']}, "
        f"load average at start {m['load_average_at_start'][0]:.2f}. Busy processes are pure CPU loops, one core "
        "each, started by the benchmark after the measured process is ready. `policy` = the `threads` section as "
        "shipped (waiting threads sleep; threads.torch 1, the other pools on every CPU); `policy, every CPU` = "
        "threads.torch 0; `policy, 1 thread` = threads.pixel and threads.onnxruntime 1; `spinning (not shipped)` = "
        "threads.torch 0 with OMP_WAIT_POLICY=ACTIVE in the environment (what the libraries do without the "
        "policy). Ratio = beside the most busy processes / idle, same workload and setting.",
        "",
        "| workload | what | setting | " + " | ".join("idle" if b == 0 else f"{b} busy" for b in report["busy"])
        + f" | ratio ({max(report['busy'])} busy) |",
        "|---|---|---|" + "---:|" * (len(report["busy"]) + 1),
    ]
    what = {"engine-torch": "forward, 8 frames 140x84, median ms", "engine-onnxruntime": "same, ONNX Runtime, ms",
            "postprocess": "8-view 504x336 window, median ms", "node": "engine return to last output, median ms",
            "demo": "`iggt-ros demo` wall s"}
    for row in report["rows"]:
        cells = []
        for busy in report["busy"]:
            r = row["results"].get(str(busy), {})
            v = main_value(r)
            cells.append("error" if "error" in r else ("-" if v is None else f"{v:.1f}"))
        ratio = row.get("ratio")
        lines.append(f"| {row['workload']} | {what[row['workload']]} | {row['setting']} | " + " | ".join(cells)
                     + f" | {'-' if ratio is None else f'{ratio:.2f}x'} |")
    lines += ["", "p95 and cold start:", "",
              "| workload | setting | busy | median | p95 | cold start s |", "|---|---|---:|---:|---:|---:|"]
    for row in report["rows"]:
        for busy, r in row["results"].items():
            if "error" in r or "skipped" in r:
                lines.append(f"| {row['workload']} | {row['setting']} | {busy} | {r.get('error') or r.get('skipped')} "
                             "| | |")
                continue
            cold = r.get("first_window_s", r.get("configure_to_first_window_s"))
            p95 = r.get("p95_ms", r.get("window_p95_ms"))
            med = r.get("median_ms", r.get("window_mean_ms"))
            lines.append(f"| {row['workload']} | {row['setting']} | {busy} | "
                         f"{'-' if med is None else f'{med:.1f}'} | {'-' if p95 is None else f'{p95:.1f}'} | "
                         f"{'-' if cold is None else f'{cold:.1f}'} |")
    lines += ["", "For the demo the median and p95 columns are the replay's per-window latency (mean, p95); cold "
              "start is from the process start to the first window's outputs (demo) or from configure to the "
              "first window published (node). For the node p95 is the maximum over its windows."]
    if report.get("notes"):
        lines += [""] + [f"- {n}" for n in report["notes"]]
    lines += ["", "## README table", "", *readme_rows(report)]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=WORKLOADS)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--busy", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds one measurement may take")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return 0
    report = {"date": time.strftime("%Y-%m-%d"), "busy": args.busy, "rows": [], "notes": [],
              "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                          "python": platform.python_version(), "load_average_at_start": os.getloadavg()}}
    with tempfile.TemporaryDirectory(prefix="iggt_contention_") as tmp:
        workdir = Path(tmp)
        if "engine-onnxruntime" in args.workloads:
            export_onnx_model(workdir)
        for workload in args.workloads:
            for setting in args.settings:
                row = {"workload": workload, "setting": setting, "results": {}}
                for busy in args.busy:
                    r = measure(workload, setting, busy, workdir, args.timeout)
                    row["results"][str(busy)] = r
                    print(f"{workload:<19} {setting:<17} busy {busy}: "
                          + json.dumps({k: v for k, v in r.items() if k != "in_force"}), flush=True)
                idle, loaded = (main_value(row["results"].get(str(b), {})) for b in (0, max(args.busy)))
                row["ratio"] = loaded / idle if idle and loaded else None
                report["rows"].append(row)
    report["machine"]["load_average_at_end"] = os.getloadavg()
    write_results(args.out, "contention", report, markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
