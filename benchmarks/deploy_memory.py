"""Peak memory of the two deployment steps, each in its own process, on what runs here.

Step one (`iggt-ros export --onnx-only`) holds the PyTorch model, exports the ONNX, saves the
reference outputs and runs ONNX Runtime twice (FP32 and mixed-precision graph). Step two
(`iggt-ros build-engine`) is run with `iggt_ros.model` and torch made unimportable: on a CPU machine
its measurable part is `--check-onnx-only` (load the bundle's graph, ONNX Runtime against the saved
outputs); the TensorRT build itself needs a GPU (see benchmarks/trt_check.py).

The number is the process's peak resident set (ru_maxrss), which on a Jetson's unified memory is
what competes with everything else on the module.

    python benchmarks/deploy_memory.py --model tiny --size 140x84 --frames 8 --out benchmarks/results/deploy_memory
    python benchmarks/deploy_memory.py --model parity --size 504x336 --frames 8 --out ...
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

STEP = textwrap.dedent("""
    import json, resource, sys
    blocked = json.loads(sys.argv[1])
    for name in blocked:
        sys.modules[name] = None  # importing it now raises ImportError
    from iggt_ros.cli import main
    code = main(sys.argv[2:])
    print("STEP-RESULT " + json.dumps({
        "rc": code,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "torch_loaded": sys.modules.get("torch") is not None,
        "model_loaded": any(m == "iggt_ros.model" or m.startswith("iggt_ros.model.") for m in sys.modules
                            if sys.modules[m] is not None),
    }))
""")


def run_step(argv: list[str], blocked: list[str] = (), env: dict | None = None) -> dict:
    """One `iggt-ros` command in a fresh process; its exit code, peak RSS and what it imported."""
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", STEP, json.dumps(list(blocked)), *argv], capture_output=True,
                          text=True, env=env or os.environ.copy())
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("STEP-RESULT ")]
    if not lines:
        return {"rc": proc.returncode, "error": proc.stderr[-2000:], "stdout": proc.stdout[-2000:]}
    result = json.loads(lines[-1].removeprefix("STEP-RESULT "))
    result.update({"wall_s": time.monotonic() - t0, "stdout": proc.stdout[-4000:], "stderr": proc.stderr[-2000:]})
    return result


def measure(model: str, size: tuple[int, int], frames: int, folder: Path, checkpoint: str = "") -> dict:
    width, height = size
    export = run_step(["export", "--model", model, *(["--checkpoint", checkpoint] if checkpoint else []),
                       "--height", str(height), "--width", str(width), "--frames", str(frames),
                       "--max-frames", str(max(frames, 2)), "--parity-frames", str(min(2, frames)),
                       "--onnx-only", "--output-dir", str(folder)])
    check = run_step(["build-engine", str(folder), "--check-onnx-only", "--precision", "fp16"],
                     blocked=["iggt_ros.model", "torch"])
    files = {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")}
    return {"model": model, "size": f"{width}x{height}", "frames": frames, "export": export, "build_only": check,
            "bundle_bytes": files}


def markdown(rows: list[dict]) -> str:
    lines = ["| model | input | S | export peak RSS MiB | build-only (ONNX check) peak RSS MiB | torch in build-only |"
             " FP32 ONNX MB | FP16 ONNX MB |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        e, b, f = r["export"], r["build_only"], r["bundle_bytes"]
        fp32 = (f.get("model.onnx", 0) + f.get("model.onnx.data", 0)) / 1e6
        fp16 = (f.get("model.fp16.onnx", 0) + f.get("model.fp16.onnx.data", 0)) / 1e6
        lines.append(f"| {r['model']} | {r['size']} | {r['frames']} | {e.get('peak_rss_mib', float('nan')):.0f} | "
                     f"{b.get('peak_rss_mib', float('nan')):.0f} | {b.get('torch_loaded')} | {fp32:.1f} | {fp16:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="tiny", help="tiny, parity, official or a JSON config")
    parser.add_argument("--checkpoint", default="", help="weights (default: the embedded tiny model)")
    parser.add_argument("--size", default="140x84", help="input WxH")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--out", default=None, help="folder for deploy_memory.json/.md (default: print only)")
    args = parser.parse_args(argv)
    width, height = (int(x) for x in args.size.lower().split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        row = measure(args.model, (width, height), args.frames, Path(tmp) / "bundle", args.checkpoint)
    for step in ("export", "build_only"):
        if row[step].get("rc") != 0:
            print(f"{step} failed: {row[step].get('error') or row[step].get('stderr')}", file=sys.stderr)
    print(markdown([row]))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"deploy_memory_{args.model}_{args.size}_S{args.frames}.json").write_text(json.dumps(row, indent=2))
    return 0 if all(row[s].get("rc") == 0 for s in ("export", "build_only")) else 1


if __name__ == "__main__":
    sys.exit(main())
