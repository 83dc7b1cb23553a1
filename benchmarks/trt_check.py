"""TensorRT verification in one call: the parity fixture's model as a plan at 336x504, S=8, on this GPU.

For a machine with CUDA, PyTorch and TensorRT 10 (no network, no checkpoint: the fixture-sized model is
built with seeded random weights unless --checkpoint is given). It runs the two deployment steps the
way a Jetson would, in one process:

1. export the bundle (FP32 ONNX, mixed-precision ONNX, PyTorch FP32 reference outputs at S=8);
2. release the PyTorch model, then per precision build the plan from the bundle alone with detailed
   profiling verbosity, and check it against the saved reference outputs.

Per plan it reports: build time, plan size, the engine's activation memory (`device_memory_size_v2`),
the drop in free device memory when the engine and its context are created, latency, parity, and
whether the attention fused: the engine inspector lists every layer; a global or frame attention
whose softmax still appears as a layer of its own did not fuse (TensorRT's fused attention kernels
and Myelin regions swallow the softmax). The inspector's JSON is saved for a closer look.

    python benchmarks/trt_check.py --out benchmarks/results/trt_check            # fp16 and fp32 plans
    python benchmarks/trt_check.py --precisions fp16 bf16 --out /tmp/trt_check

Results: trt_check.json (rewritten after every step), trt_check.md, inspector_<precision>.json in --out.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path

try:  # an installed package is used as it is; else the source tree next to this file
    import iggt_ros  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ATTENTION_SCOPES = (".attn/", ".attn.")
"""Module paths of the backbone's frame and global attention (the heads' attention stays FP32 by design)."""


def save(out: Path, data: dict) -> None:
    (out / "trt_check.json").write_text(json.dumps(data, indent=2, default=str))
    (out / "trt_check.md").write_text(markdown(data))


def attention_fusion(layers: list[dict]) -> dict:
    """Which backbone attention softmaxes remain layers of their own (unfused) in the inspector's listing."""
    def name(layer) -> str:
        return str(layer.get("Name", layer)) if isinstance(layer, dict) else str(layer)

    def region(n: str) -> bool:  # a layer standing for several graph nodes (fused kernel, Myelin region)
        return any(tok in n for tok in ("ForeignNode", "+", "myl", "mha", "fmha", "Myelin"))

    backbone = [name(x) for x in layers if "aggregator." in name(x) and any(s in name(x) for s in ATTENTION_SCOPES)]
    softmax_alone = [n for n in backbone if "softmax" in n.lower() and not region(n)]
    fused = [n for n in backbone if region(n)]
    return {"layers": len(layers), "unfused_attention_softmax_layers": len(softmax_alone),
            "unfused_examples": softmax_alone[:5], "fused_or_myelin_layers_over_the_backbone": len(fused),
            "fused_examples": [f[:200] for f in fused[:5]], "fused": not softmax_alone}


def inspect_plan(plan: Path, device: str, out: Path, precision: str) -> dict:
    """Load the plan, list its layers, measure memory and latency."""
    import tensorrt as trt
    import torch

    dev = torch.device(device)
    torch.cuda.synchronize(dev)
    torch.cuda.empty_cache()
    free_before, total = torch.cuda.mem_get_info(dev)
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    with torch.cuda.device(dev):
        engine = runtime.deserialize_cuda_engine(plan.read_bytes())
        context = engine.create_execution_context()
    free_after, _ = torch.cuda.mem_get_info(dev)
    inspector = engine.create_engine_inspector()
    info = json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    (out / f"inspector_{precision}.json").write_text(json.dumps(info, indent=1))
    layers = info.get("Layers", []) if isinstance(info, dict) else []
    activation = getattr(engine, "device_memory_size_v2", None)
    if activation is None:
        activation = engine.device_memory_size
    result = {"plan_mib": plan.stat().st_size / 2**20, "activation_memory_mib": activation / 2**20,
              "engine_and_context_mib": (free_before - free_after) / 2**20, "gpu_total_gib": total / 2**30,
              "attention": attention_fusion(layers)}
    del context, engine
    gc.collect()
    return result


def latency(plan: Path, device: str, frames: int, size: tuple[int, int], repeats: int) -> dict:
    import torch

    from iggt_ros.engine.bundle import random_batch
    from iggt_ros.engine.tensorrt_engine import TensorRTEngine

    engine = TensorRTEngine(plan, device)
    x = torch.from_numpy(random_batch(frames, size)).to(device)
    engine.run_tensors(x)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        engine.run_tensors(x)  # synchronises its stream before returning
        times.append((time.perf_counter() - t0) * 1e3)
    engine.close()
    return {"ms_median": statistics.median(times), "ms_min": min(times)}


def markdown(data: dict) -> str:
    env = data.get("environment", {})
    lines = ["# TensorRT check", "", "Environment: " + ", ".join(f"{k} {v}" for k, v in env.items()), "",
             f"Model: {data.get('model')} ({data.get('parameters', 0):,} parameters), input {data.get('size')}, "
             f"S={data.get('frames')}. Export {data.get('export_s', float('nan')):.0f} s.", "",
             "| precision | build s | plan MiB | activation MiB | engine+context MiB | ms median | parity | "
             "worst max rel | attention fused | unfused softmax layers |", "|---|---|---|---|---|---|---|---|---|---|"]
    for p in data.get("plans", []):
        if "error" in p:
            lines.append(f"| {p['precision']} | {p['error'][:200]} | | | | | | | | |")
            continue
        parity = p.get("parity") or {}
        worst = max((o.get("max_rel", 0.0) for o in parity.get("outputs", {}).values()), default=float("nan"))
        att = p["inspect"]["attention"]
        lines.append(f"| {p['precision']} | {p['build_s']:.0f} | {p['inspect']['plan_mib']:.1f} | "
                     f"{p['inspect']['activation_memory_mib']:.0f} | {p['inspect']['engine_and_context_mib']:.0f} | "
                     f"{p['latency']['ms_median']:.1f} | {'PASS' if parity.get('ok') else 'FAIL'} | {worst:.2e} | "
                     f"{att['fused']} | {att['unfused_attention_softmax_layers']} |")
    for p in data.get("plans", []):
        if p.get("parity"):
            lines += ["", f"{p['precision']} against PyTorch FP32 (rtol {p['parity']['rtol']}, atol "
                      f"{p['parity']['atol']}):", "", "| output | max abs | max rel | median rel | violations |",
                      "|---|---|---|---|---|"]
            for name, o in p["parity"]["outputs"].items():
                lines.append(f"| {name} | {o.get('max_abs', float('nan')):.2e} | {o.get('max_rel', float('nan')):.2e} "
                             f"| {o.get('median_rel', float('nan')):.2e} | {o.get('violations', '')} |")
    if data.get("errors"):
        lines += ["", "Errors:", ""] + [f"- {e}" for e in data["errors"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="parity", help="tiny, parity (default), official or a JSON config")
    parser.add_argument("--checkpoint", default="", help="weights; default: seeded random weights")
    parser.add_argument("--size", default="504x336", help="input WxH (default 504x336)")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--precisions", nargs="+", default=["fp16", "fp32"], choices=("fp16", "bf16", "fp32"))
    parser.add_argument("--workspace-gb", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "trt_check"))
    args = parser.parse_args(argv)

    import torch

    from iggt_ros.engine.base import EngineError
    from iggt_ros.engine.build_engine import build_from_bundle
    from iggt_ros.engine.export import export_bundle
    from iggt_ros.engine.tensorrt_build import BuildSettings
    from iggt_ros.engine.tensorrt_support import import_tensorrt

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    width, height = (int(x) for x in args.size.lower().split("x"))
    data: dict = {"model": args.model, "size": f"{width}x{height}", "frames": args.frames, "plans": [], "errors": []}
    if not torch.cuda.is_available():
        print("no CUDA device: this check needs a GPU with TensorRT 10", file=sys.stderr)
        return 2
    try:
        trt = import_tensorrt()
    except EngineError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    props = torch.cuda.get_device_properties(torch.device(args.device))
    data["environment"] = {"gpu": props.name, "sm": f"{props.major}.{props.minor}", "sms": props.multi_processor_count,
                           "memory_gib": round(props.total_memory / 2**30, 1), "torch": torch.__version__,
                           "tensorrt": trt.__version__}
    save(out, data)

    t0 = time.perf_counter()
    if args.checkpoint:
        from iggt_ros.engine.weights import file_sha256, load_engine_model

        model, _, weights = load_engine_model(args.checkpoint, args.model)
        sha = file_sha256(weights)
    else:
        from iggt_ros.engine.weights import model_config
        from iggt_ros.model import Iggt

        torch.manual_seed(0)
        model, sha = Iggt(model_config(args.model)).eval(), f"random-{args.model}-seed0"
    data["parameters"] = int(sum(p.numel() for p in model.parameters()))
    bundle = out / "bundle"
    export_bundle(model, sha, (height, width), bundle, precisions=[p for p in args.precisions if p != "fp32"],
                  reference_frames=(args.frames,), max_frames=max(args.frames, 2))
    data["export_s"] = time.perf_counter() - t0
    del model  # the plans are built from the bundle alone, as on a Jetson
    gc.collect()
    save(out, data)

    for precision in args.precisions:
        entry: dict = {"precision": precision}
        try:
            settings = BuildSettings(profiles=((args.frames,) * 3,), precision=precision,
                                     workspace_bytes=int(args.workspace_gb * (1 << 30)),
                                     profiling_verbosity="detailed", timing_cache=out / "timing.cache")
            t0 = time.perf_counter()
            built = build_from_bundle(bundle, out / f"{precision}.plan", settings, device=args.device)
            entry["build_s"] = time.perf_counter() - t0
            entry["parity"] = built.parity
            entry["inspect"] = inspect_plan(built.plan_path, args.device, out, precision)
            entry["latency"] = latency(built.plan_path, args.device, args.frames, (height, width), args.repeats)
        except Exception as exc:  # keep what was measured, say what failed, go on with the next precision
            entry["error"] = f"{type(exc).__name__}: {exc}"
            data["errors"].append(f"{precision}: {entry['error']}")
        data["plans"].append(entry)
        save(out, data)
        print(json.dumps(entry, default=str)[:2000], flush=True)
    print(markdown(data))
    return 1 if data["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
