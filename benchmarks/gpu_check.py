"""GPU check in one call: the official-size IGGT in bf16 and fp32, and the whole pipeline per window on CUDA.

Meant for a fresh CUDA machine with PyTorch (no TensorRT, no network, no checkpoint): the model is the
official architecture (VGGT-1B backbone, ~1 B parameters) with random weights, so the numbers are
latency, memory and numerics, not quality. Everything it measures lands in one folder:

* model: for each window size S (default 2, 8, 16, 24) at 504x336, the forward latency (CUDA-synchronised,
  median of `--repeats` after a warm-up) and the peak memory PyTorch allocated during it in bf16 (backbone
  under autocast, heads in fp32, as the release; only where the GPU has native bf16) and fp32, and the
  parity of every output of bf16 against fp32 (camera poses,
  intrinsics, depth and its confidence, point map and its confidence, instance features): relative error
  of each, and the cosine between bf16 and fp32 instance features per pixel;
* pipeline: `Pipeline.process_window` per window on a synthetic sequence with the model on the GPU in
  bf16 (inference and every post-processing stage), and post-processing of the oracle engine's features
  with the per-pixel passes on the GPU (clustering.pixel_device = cuda) beside numpy.

Memory: "peak allocated" is `torch.cuda.max_memory_allocated` -- every live PyTorch tensor: the FP32
weights (both precisions share one model), in bf16 also autocast's bf16 weight copies, and the
activations; not the CUDA context, cuBLAS/cuDNN workspaces or the caching allocator's reserve
("peak reserved" adds the reserve). "weights" is the FP32 parameter size, so peak - weights is what one
window costs on top of the resident model. A deployment that stores bf16 weights saves half of "weights".

Imports: each step imports what it needs when it runs, so the model step runs on a machine with
PyTorch only; the pipeline step needs the package's full dependencies (pyyaml, scipy, ...) and is
skipped with the missing one named when they are absent.

Results: gpu_check.json (rewritten after every step, so a run cut short keeps what it measured),
gpu_check.md and environment.txt in `--out`. A time limit (`--time-limit`, default 420 s) skips the steps
that would start after it, so one call stays within 8 minutes.

On a CUDA machine:  python benchmarks/gpu_check.py --out benchmarks/results/gpu_check
On a CPU (the test): python benchmarks/gpu_check.py --model tiny --device cpu --size 140x84 --sizes 2,4 \
                         --repeats 1 --pipeline-windows 2 --out /tmp/gpu_check
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

try:  # an installed package (a colcon install, pip) is used as it is; else the source tree next to this file
    import iggt_ros  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from iggt_ros.engine.base import ViewKey, WindowPrediction  # noqa: E402 - numpy only

OUTPUTS = ("extrinsics", "intrinsics", "depth", "depth_conf", "world_points", "world_points_conf",
           "instance_features")


class Report:
    """The results so far, written to the output folder after every step."""

    def __init__(self, out: Path, args: argparse.Namespace) -> None:
        self.out = out
        self.start = time.monotonic()
        self.time_limit = args.time_limit
        self.data: dict = {"args": vars(args), "model": [], "parity": [], "pipeline": [], "skipped": [],
                           "errors": []}
        out.mkdir(parents=True, exist_ok=True)

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def time_left(self, what: str) -> bool:
        """False (and the step recorded as skipped) once the time limit has passed."""
        if self.elapsed() <= self.time_limit:
            return True
        self.data["skipped"].append(f"{what}: time limit {self.time_limit:.0f} s reached")
        print(f"skipped {what}: time limit reached", flush=True)
        return False

    def save(self) -> None:
        self.data["elapsed_s"] = self.elapsed()
        (self.out / "gpu_check.json").write_text(json.dumps(self.data, indent=2, default=float))
        (self.out / "gpu_check.md").write_text(markdown(self.data))


def environment(device: str) -> dict:
    import torch

    env = {"python": platform.python_version(), "torch": torch.__version__, "cuda_build": torch.version.cuda,
           "cpus": os.cpu_count(), "device": device, "tensorrt": _version("tensorrt"),
           "onnxruntime": _version("onnxruntime")}
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        env.update({"gpu": props.name, "capability": f"{props.major}.{props.minor}",
                    "gpu_memory_gib": props.total_memory / 2 ** 30, "bf16_supported": torch.cuda.is_bf16_supported()})
    return env


def _version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except Exception:  # not installed (expected: the check needs neither)
        return None


def build_model(name: str, device: str):
    """The architecture with seeded random weights, built directly on the device (no 4 GB detour via the CPU)."""
    import torch

    from iggt_ros.model import Iggt
    from iggt_ros.model.config import IggtModelConfig

    config = IggtModelConfig.official() if name == "official" else IggtModelConfig.tiny()
    torch.manual_seed(0)
    with torch.device(device):
        model = Iggt(config)
    return model.eval()


def synchronize(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(torch.device(device))


def reset_peak(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(torch.device(device))


def peak_gib(device: str) -> tuple[float | None, float | None]:
    """(peak allocated, peak reserved) GiB since the last reset; None off CUDA."""
    import torch

    if device.startswith("cuda"):
        dev = torch.device(device)
        return torch.cuda.max_memory_allocated(dev) / 2 ** 30, torch.cuda.max_memory_reserved(dev) / 2 ** 30
    return None, None


def precisions(device: str) -> tuple[str, ...]:
    """bf16 and fp32 where the device computes bf16 natively (CPUs via autocast, Ampere/Orin and newer GPUs);
    fp32 only elsewhere, instead of timing an emulation."""
    import torch

    if not device.startswith("cuda"):
        return ("bf16", "fp32")
    try:
        native = torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # PyTorch before 2.4 has no emulation flag
        native = torch.cuda.get_device_capability(torch.device(device))[0] >= 8
    return ("bf16", "fp32") if native else ("fp32",)


def random_images(s: int, hw: tuple[int, int], seed: int) -> np.ndarray:
    """Smooth random images (blocks of colour): random weights do not care, the layout is the engine's."""
    rng = np.random.default_rng(seed)
    h, w = hw
    coarse = rng.integers(0, 256, size=(s, h // 14 + 1, w // 14 + 1, 3), dtype=np.uint8)
    return np.repeat(np.repeat(coarse, 14, axis=1), 14, axis=2)[:, :h, :w]


def parity(reference: WindowPrediction, other: WindowPrediction) -> dict:
    """Relative error of every output (L2 of the difference over L2 of the reference), and feature cosines."""
    out = {}
    for name in OUTPUTS:
        a = np.asarray(getattr(reference, name), np.float64)
        b = np.asarray(getattr(other, name), np.float64)
        finite = np.isfinite(a) & np.isfinite(b)
        diff = a[finite] - b[finite]
        denom = float(np.linalg.norm(a[finite])) or 1.0
        out[name] = {"rel_l2": float(np.linalg.norm(diff) / denom),
                     "max_abs": float(np.max(np.abs(diff))) if diff.size else float("nan"),
                     "nonfinite_fp32": int((~np.isfinite(a)).sum()), "nonfinite_bf16": int((~np.isfinite(b)).sum())}
    fa = np.asarray(reference.instance_features, np.float64).reshape(-1, reference.instance_features.shape[-1])
    fb = np.asarray(other.instance_features, np.float64).reshape(-1, other.instance_features.shape[-1])
    cos = np.einsum("ij,ij->i", fa, fb) / np.maximum(np.linalg.norm(fa, axis=1) * np.linalg.norm(fb, axis=1), 1e-12)
    out["instance_feature_cosine"] = {"mean": float(np.mean(cos)), "p1": float(np.percentile(cos, 1)),
                                      "min": float(np.min(cos))}
    return out


def check_model(report: Report, args: argparse.Namespace, hw: tuple[int, int]) -> None:
    """Latency, peak memory and bf16-vs-fp32 parity per window size."""
    import torch

    from iggt_ros.engine.torch_engine import TorchEngine

    t = time.perf_counter()
    model = build_model(args.model, args.device)
    report.data["model_build_s"] = time.perf_counter() - t
    report.data["parameters"] = int(sum(p.numel() for p in model.parameters()))
    report.data["weights_gib"] = sum(p.numel() * p.element_size() for p in model.parameters()) / 2 ** 30
    report.data["precisions"] = list(precisions(args.device))
    engines = {prec: TorchEngine(model, hw, args.device, prec, max_views=max(args.sizes))
               for prec in report.data["precisions"]}
    report.save()
    for s in args.sizes:
        images = random_images(s, hw, seed=s)
        batch = torch.from_numpy(images).to(args.device).permute(0, 3, 1, 2).float().div(255.0)
        preds = {}
        for prec in engines:
            if not report.time_left(f"model S={s} {prec}"):
                continue
            engine = engines[prec]
            try:
                reset_peak(args.device)
                engine.forward(batch)  # warm-up: kernels, autotuning, allocator
                synchronize(args.device)
                times = []
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    engine.forward(batch)
                    synchronize(args.device)
                    times.append((time.perf_counter() - t0) * 1e3)
                t0 = time.perf_counter()
                preds[prec] = engine.infer(images, [ViewKey("cam", i) for i in range(s)])
                infer_ms = (time.perf_counter() - t0) * 1e3
                allocated, reserved = peak_gib(args.device)
                row = {"S": s, "precision": prec, "size": f"{hw[1]}x{hw[0]}",
                       "forward_ms_median": statistics.median(times), "forward_ms_min": min(times),
                       "infer_ms": infer_ms, "peak_allocated_gib": allocated, "peak_reserved_gib": reserved}
            except torch.cuda.OutOfMemoryError as exc:
                row = {"S": s, "precision": prec, "size": f"{hw[1]}x{hw[0]}", "error": f"out of memory: {exc}"}
                torch.cuda.empty_cache()
            report.data["model"].append(row)
            print("model", row, flush=True)
            report.save()
        if len(preds) == 2:
            report.data["parity"].append({"S": s, **parity(preds["fp32"], preds["bf16"])})
            report.save()
    del engines, model
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()


def sequence_windows(seq, size: int, count: int):
    """The sequence's frame sets for a one-camera pipeline (every step a keyframe)."""
    from iggt_ros.perception.frames import CameraFrame, FrameSet

    for step in seq.steps[: size + (count - 1) * (size // 2)]:
        frames = {v.camera: CameraFrame(v.camera, v.stamp_ns, v.rgb, v.intrinsics, f"{v.camera}_optical")
                  for v in step}
        yield FrameSet(step[0].stamp_ns, frames)


def pipeline_config(seq, hw: tuple[int, int], size: int, pixel_device: str):
    from iggt_ros.config import IggtConfig

    return IggtConfig().replace(**{
        "input.cameras": seq.rig.names, "input.image_width": hw[1], "input.image_height": hw[0],
        "window.size": size, "window.stride": size // 2, "window.min_translation_m": 0.0,
        "window.min_rotation_deg": 0.0, "window.min_image_change": 0.0,
        "clustering.pixel_device": pixel_device})


def run_pipeline(report: Report, name: str, engine, config, frames: list) -> None:
    from iggt_ros.perception.pipeline import Pipeline

    pipe = Pipeline(config, engine)
    rows = []
    for frameset in frames:
        result = pipe.push(frameset)
        if result is not None:
            rows.append(result.timings_ms)
    if len(rows) > 1:
        rows = rows[1:]  # the first window pays warm-up (kernels, caches)
    stages = sorted({k for r in rows for k in r})
    entry = {"case": name, "windows": len(rows), "pixel_device": config.clustering.pixel_device,
             "stages_ms_median": {k: statistics.median(r.get(k, 0.0) for r in rows) for k in stages}}
    report.data["pipeline"].append(entry)
    print("pipeline", entry, flush=True)
    report.save()


def check_pipeline(report: Report, args: argparse.Namespace, hw: tuple[int, int]) -> None:
    """The whole pipeline per window: model on the device in bf16; oracle features with GPU or numpy pixel passes."""
    try:
        import iggt_ros.config  # noqa: F401 - pyyaml
        import iggt_ros.perception.pipeline  # noqa: F401 - scipy, scikit-learn, ...
        from iggt_ros.engine.oracle import OracleEngine
        from iggt_ros.synthetic.sequence import make_sequence
    except ImportError as exc:
        missing = exc.name or str(exc)
        report.data["skipped"].append(f"pipeline: needs {missing} (pip install the package with its dependencies)")
        print(f"skipped pipeline: {missing} is not installed", flush=True)
        return
    from iggt_ros.engine.torch_engine import TorchEngine

    size = args.pipeline_window
    seq = make_sequence(args.seed, num_steps=size + (args.pipeline_windows - 1) * (size // 2), width=hw[1],
                        height=hw[0], num_objects=8)
    frames = list(sequence_windows(seq, size, args.pipeline_windows))
    pixel_device = args.device if args.device.startswith("cuda") else "cpu"
    if report.time_left("pipeline with the model"):
        prec = precisions(args.device)[0]
        engine = TorchEngine(build_model(args.model, args.device), hw, args.device, prec, max_views=size)
        run_pipeline(report, f"{args.model} model (random weights), {prec}, S={size}", engine,
                     pipeline_config(seq, hw, size, pixel_device), frames)
        del engine
    oracle = OracleEngine.from_sequence(seq, input_size=hw, similarity="full", window_local_features=True,
                                        boundary_px=1, seed=args.seed)
    for device in (pixel_device, "numpy"):
        if report.time_left(f"pipeline on oracle features, pixel passes on {device}"):
            run_pipeline(report, f"oracle features, S={size}", oracle, pipeline_config(seq, hw, size, device), frames)


def markdown(data: dict) -> str:
    env = data.get("environment", {})
    lines = ["# GPU check", "", "Environment: " + ", ".join(f"{k} {v}" for k, v in env.items()), "",
             f"Model: {data['args']['model']} architecture, random weights, {data.get('parameters', 0):,} parameters "
             f"(built in {data.get('model_build_s', float('nan')):.1f} s), FP32 weights "
             f"{data.get('weights_gib', float('nan')):.2f} GiB. Total time {data.get('elapsed_s', 0):.0f} s.",
             "", "Peak allocated: every PyTorch tensor (FP32 weights, in bf16 also autocast's bf16 weight copies, "
             "activations); peak reserved adds the caching allocator's reserve; neither counts the CUDA context.",
             "", "| S | precision | size | forward ms (median) | forward ms (min) | infer ms (with transfers) | "
             "peak allocated GiB | peak reserved GiB |", "|---|---|---|---|---|---|---|---|"]
    for r in data["model"]:
        if "error" in r:
            lines.append(f"| {r['S']} | {r['precision']} | {r['size']} | {r['error']} | | | | |")
            continue
        mem = ["" if r.get(k) is None else f"{r[k]:.2f}" for k in ("peak_allocated_gib", "peak_reserved_gib")]
        lines.append(f"| {r['S']} | {r['precision']} | {r['size']} | {r['forward_ms_median']:.1f} | "
                     f"{r['forward_ms_min']:.1f} | {r['infer_ms']:.1f} | {mem[0]} | {mem[1]} |")
    if data["parity"]:
        lines += ["", "bf16 against fp32 (relative L2 error of each output; instance features also as per-pixel "
                  "cosine):", "", "| S | " + " | ".join(OUTPUTS) + " | feature cosine mean / p1 / min |",
                  "|---|" + "---|" * (len(OUTPUTS) + 1)]
        for p in data["parity"]:
            c = p["instance_feature_cosine"]
            lines.append(f"| {p['S']} | " + " | ".join(f"{p[o]['rel_l2']:.2e}" for o in OUTPUTS)
                         + f" | {c['mean']:.4f} / {c['p1']:.4f} / {c['min']:.4f} |")
    if data["pipeline"]:
        stages = sorted({k for e in data["pipeline"] for k in e["stages_ms_median"]})
        lines += ["", "Pipeline per window (median over windows after the first, ms):", "",
                  "| case | pixel passes | windows | " + " | ".join(stages) + " |",
                  "|---|---|---|" + "---|" * len(stages)]
        for e in data["pipeline"]:
            lines.append(f"| {e['case']} | {e['pixel_device']} | {e['windows']} | "
                         + " | ".join(f"{e['stages_ms_median'].get(k, 0.0):.1f}" for k in stages) + " |")
    for what in ("skipped", "errors"):
        if data.get(what):
            lines += ["", f"{what.capitalize()}:", ""] + [f"- {x}" for x in data[what]]
    lines.append("")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=("official", "tiny"), default="official")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", default="504x336", help="model input WxH (multiples of 28)")
    parser.add_argument("--sizes", default="2,8,16,24", help="window sizes S for the model check")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--pipeline-window", type=int, default=8)
    parser.add_argument("--pipeline-windows", type=int, default=4)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--time-limit", type=float, default=420.0, help="no step starts after this many seconds")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "gpu_check"))
    args = parser.parse_args(argv)
    args.sizes = [int(x) for x in str(args.sizes).split(",") if x]
    return args


def main(argv: list[str] | None = None) -> int:
    import torch

    args = parse_args(argv)
    w, h = (int(x) for x in args.size.lower().split("x"))
    hw = (h, w)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("PyTorch sees no CUDA device: run on a CUDA machine, or with --device cpu --model tiny for a dry run",
              file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.ERROR)
    report = Report(Path(args.out), args)
    report.data["environment"] = environment(args.device)
    (report.out / "environment.txt").write_text("\n".join(f"{k}: {v}" for k, v in report.data["environment"].items())
                                                + "\n")
    report.save()
    for step in (check_model, check_pipeline):
        try:
            step(report, args, hw)
        except Exception as exc:  # keep what was measured and say what failed
            report.data["errors"].append(f"{step.__name__}: {type(exc).__name__}: {exc}")
            print(f"{step.__name__} failed: {exc}", file=sys.stderr, flush=True)
        report.save()
    print(markdown(report.data))
    return 1 if report.data["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
