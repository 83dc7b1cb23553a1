"""Engine benchmark: latency and peak memory of the inference backends, side by side.

    .venv/bin/python benchmarks/engines.py [--height 336 --width 504] [--frames 2 4 8 16] [--repeats 3]

CPU (always): TorchEngine (fp32) vs OnnxRuntimeEngine (CPU provider) for the `tiny` and the parity
fixture (`parity`) configurations at each S. On a CUDA machine also: PyTorch bf16 and TensorRT FP16
for the `official` configuration (S = 2, 4, 8, 12; `--gpu-frames`). Random weights: speed and memory
do not depend on the values.

Latency: median of `--repeats` timed `Engine.infer` calls after one warm-up call (preprocessing
included, as the node sees it). Peak memory on the CPU: the process's resident-set high-water mark
during the timed calls minus the resident set before them (Linux /proc, with the mark reset through
/proc/self/clear_refs), i.e. the extra memory inference needs on top of the loaded model; without
that interface, the growth of getrusage's ru_maxrss (a lower bound). On the GPU: peak allocated by
PyTorch for torch, and the drop of free device memory for TensorRT.

ONNX Runtime's CPU attention materialises the full score matrix of the global attention
((S*P)^2 per head, P = tokens per frame): at 504x336 and S=16 that alone is about 3 GB per layer, and a
measured peak of +12.7 GB. Cases whose estimated attention memory exceeds `--max-attention-gb` are
skipped (and listed) so the benchmark cannot exhaust a shared machine.

Writes benchmarks/results/engines.md and engines.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from iggt_ros.threads import prepare_process  # noqa: E402

prepare_process()  # the package's thread policy, before numpy and torch load (they read it once)

import numpy as np  # noqa: E402
import torch  # noqa: E402

from iggt_ros.engine.onnxruntime_engine import OnnxRuntimeEngine  # noqa: E402
from iggt_ros.engine.torch_engine import TorchEngine  # noqa: E402
from iggt_ros.model import Iggt, IggtModelConfig  # noqa: E402

CONFIGS = {"tiny": IggtModelConfig.tiny, "parity": IggtModelConfig.parity_fixture,
           "official": IggtModelConfig.official}


@dataclass
class Row:
    config: str
    backend: str
    device: str
    frames: int
    latency_ms: float
    ms_per_frame: float
    peak_mem_mb: float
    mem_method: str
    runs: int


# ------------------------------------------------------------------------------ memory
def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class CpuPeak:
    """Peak resident memory above the level at entry, in MB."""

    def __enter__(self) -> CpuPeak:
        self.exact = _reset_peak() and _status_kb("VmHWM") is not None
        self.base_kb = _status_kb("VmRSS") if self.exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return self

    def __exit__(self, *exc) -> None:
        if self.exact:
            self.peak_mb = max(0, _status_kb("VmHWM") - self.base_kb) / 1024
            self.method = "VmHWM-VmRSS"
        else:
            self.peak_mb = max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - self.base_kb) / 1024
            self.method = "ru_maxrss growth"


# ------------------------------------------------------------------------------ timing
def time_engine(engine, images: np.ndarray, repeats: int) -> tuple[float, int]:
    engine.infer(images)  # warm-up: allocator, ONNX Runtime arena, CUDA kernels
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        engine.infer(images)
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times), repeats


def attention_gb(config: IggtModelConfig, size: tuple[int, int], frames: int) -> float:
    """Estimated peak of one materialised global attention (scores, softmax and its temporaries, float32)."""
    tokens = frames * ((size[0] // config.patch_size) * (size[1] // config.patch_size) + config.patch_start_idx)
    return 4 * config.num_heads * tokens**2 * 4 / 2**30


def cpu_rows(name: str, size: tuple[int, int], frames: list[int], repeats: int, workdir: Path,
             max_attention_gb: float, skipped: list[str]) -> list[Row]:
    from iggt_ros.engine.export import export_onnx

    torch.manual_seed(0)
    model = Iggt(CONFIGS[name]()).eval()
    onnx_file = workdir / f"{name}.onnx"
    t = time.perf_counter()
    export_onnx(model, onnx_file, size, max_frames=max(frames))
    print(f"[{name}] ONNX export {time.perf_counter() - t:.0f} s", flush=True)
    engines = {"torch-fp32": TorchEngine(model, size, max_views=max(frames)),
               "onnxruntime": OnnxRuntimeEngine(onnx_file, max_views=max(frames))}
    rows = []
    rng = np.random.default_rng(0)
    for s in frames:
        images = rng.integers(0, 256, (s, *size, 3), dtype=np.uint8)
        for backend, engine in engines.items():
            estimate = attention_gb(model.config, size, s)
            if backend == "onnxruntime" and estimate > max_attention_gb:
                skipped.append(f"{name} {backend} S={s} (estimated {estimate:.1f} GB of attention scores)")
                print(f"[{name}] {backend:<12} S={s:<2} skipped: ~{estimate:.1f} GB attention", flush=True)
                continue
            with CpuPeak() as mem:
                latency, runs = time_engine(engine, images, repeats)
            rows.append(Row(name, backend, "cpu", s, latency, latency / s, mem.peak_mb, mem.method, runs))
            print(f"[{name}] {backend:<12} S={s:<2} {latency:9.1f} ms  peak +{mem.peak_mb:7.0f} MB", flush=True)
    return rows


def gpu_rows(size: tuple[int, int], frames: list[int], repeats: int, workdir: Path) -> list[Row]:
    from iggt_ros.engine.export import export_onnx
    from iggt_ros.engine.tensorrt_build import BuildSettings, build_plan
    from iggt_ros.engine.tensorrt_engine import TensorRTEngine

    torch.manual_seed(0)
    model = Iggt(IggtModelConfig.official()).eval()
    rows = []
    rng = np.random.default_rng(0)
    engine = TorchEngine(model, size, device="cuda", precision="bf16")
    for s in frames:
        images = rng.integers(0, 256, (s, *size, 3), dtype=np.uint8)
        torch.cuda.reset_peak_memory_stats()
        latency, runs = time_engine(engine, images, repeats)
        peak = torch.cuda.max_memory_allocated() / 2**20
        rows.append(Row("official", "torch-bf16", "cuda", s, latency, latency / s, peak, "torch max allocated", runs))
        print(f"[official] torch-bf16 S={s:<2} {latency:9.1f} ms  peak {peak:7.0f} MB", flush=True)
    engine.close()
    model = model.cpu()
    torch.cuda.empty_cache()
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        print("tensorrt is not installed: TensorRT rows skipped", flush=True)
        return rows
    onnx_file = export_onnx(model, workdir / "official.onnx", size, max_frames=max(frames))
    for s in frames:
        plan = workdir / f"official_s{s}.plan"
        build_plan(onnx_file, plan, BuildSettings(profiles=((s, s, s),), precision="fp16",
                                                  workspace_bytes=4 << 30, timing_cache=workdir / "timing.cache"),
                   "benchmark")
        free_before = torch.cuda.mem_get_info()[0]
        trt_engine = TensorRTEngine(plan)
        images = rng.integers(0, 256, (s, *size, 3), dtype=np.uint8)
        latency, runs = time_engine(trt_engine, images, repeats)
        used = (free_before - torch.cuda.mem_get_info()[0]) / 2**20
        rows.append(Row("official", "tensorrt-fp16", "cuda", s, latency, latency / s, used, "free-memory drop", runs))
        print(f"[official] tensorrt-fp16 S={s:<2} {latency:9.1f} ms  device {used:7.0f} MB", flush=True)
        trt_engine.close()
    return rows


# ------------------------------------------------------------------------------ report
def markdown(rows: list[Row], meta: dict) -> str:
    lines = ["# Engine benchmark", "", f"Run {meta['date']} on {meta['machine']}.", "", meta["note"], "",
             f"Input {meta['height']}x{meta['width']}, random weights, median of {meta['repeats']} calls after "
             "a warm-up; latency is a whole `Engine.infer` (preprocessing, model, decoding).", ""]
    by_case: dict[tuple[str, str, int], dict[str, Row]] = {}
    for r in rows:
        by_case.setdefault((r.config, r.device, r.frames), {})[r.backend] = r
    backends = list(dict.fromkeys(r.backend for r in rows))
    lines.append("| config | device | S | " + " | ".join(f"{b} ms | {b} peak MB" for b in backends) + " |")
    lines.append("|---|---|---|" + "---|---|" * len(backends))
    for (config, device, s), cells in by_case.items():
        vals = []
        for b in backends:
            r = cells.get(b)
            vals += [f"{r.latency_ms:.0f}", f"{r.peak_mem_mb:.0f}"] if r else ["", ""]
        lines.append(f"| {config} | {device} | {s} | " + " | ".join(vals) + " |")
    methods = sorted({f"{r.backend}: {r.mem_method}" for r in rows})
    lines += ["", "Peak memory method: " + "; ".join(methods) + "."]
    if meta["skipped"]:
        lines += ["", "Skipped (memory guard `--max-attention-gb`): " + "; ".join(meta["skipped"]) + "."]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=336)
    parser.add_argument("--width", type=int, default=504)
    parser.add_argument("--frames", type=int, nargs="+", default=[2, 4, 8, 16])
    parser.add_argument("--gpu-frames", type=int, nargs="+", default=[2, 4, 8, 12])
    parser.add_argument("--configs", nargs="+", default=["tiny", "parity"], choices=["tiny", "parity"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-attention-gb", type=float, default=6.0,
                        help="skip ONNX Runtime cases whose materialised attention would exceed this")
    parser.add_argument("--note", default="", help="conditions of the run (load, other jobs) for the report")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "engines"))
    args = parser.parse_args()
    size = (args.height, args.width)
    rows: list[Row] = []
    skipped: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.configs:
            rows += cpu_rows(name, size, args.frames, args.repeats, Path(tmp), args.max_attention_gb, skipped)
        if torch.cuda.is_available():
            rows += gpu_rows((336, 504), args.gpu_frames, args.repeats, Path(tmp))
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
                   f"onnxruntime {__import__('onnxruntime').__version__}"
                   + (f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU"),
        "load_average": os.getloadavg(),
        "note": args.note or "No GPU in this run: TensorRT and PyTorch bf16 rows need a CUDA machine.",
        "height": args.height, "width": args.width, "repeats": args.repeats, "skipped": skipped,
    }
    text = markdown(rows, meta)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(text)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": [asdict(r) for r in rows]}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
