"""`iggt-ros build-engine`: step two of deployment -- a TensorRT plan from an export bundle, on the target.

This imports no PyTorch model (nor `iggt_ros.model`): the bundle carries the graph, the weights hash
and PyTorch FP32's outputs on a reference input, so the target builds the plan and checks it against
those outputs with only TensorRT, the `torch` library for CUDA buffers, onnx and numpy. The builder
then has the memory to itself instead of sharing it with a 4.6 GiB FP32 model and a second copy in
ONNX Runtime.

Examples:
    iggt-ros build-engine /data/iggt_bundle --frames 8                   # FP16 plan into the engine cache
    iggt-ros build-engine /data/iggt_bundle --frames 8 --output /data/iggt_fp16.plan
    iggt-ros build-engine /data/iggt_bundle --check-onnx-only            # the bundle on ONNX Runtime (CPU)
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from iggt_ros.engine import plan_cache
from iggt_ros.engine.base import EngineError
from iggt_ros.engine.bundle import (
    HALF_TOLERANCE,
    PARITY_ATOL,
    PARITY_RTOL,
    TENSORRT_TOLERANCE,
    ExportManifest,
    format_parity,
    load_reference,
    onnxruntime_outputs,
    parity_report,
    reference_frames,
    write_parity,
)
from iggt_ros.engine.tensorrt_build import DEFAULT_FP32_PATTERNS, PRECISIONS, BuildSettings

log = logging.getLogger(__name__)


def cache_settings(precision: str, window_sizes: Sequence[int], workspace_gb: float = 2.0) -> BuildSettings:
    """The settings of plans the node finds in the cache by itself: defaults, one static profile per S."""
    return BuildSettings(profiles=plan_cache.static_profiles(window_sizes), precision=precision,
                         workspace_bytes=int(workspace_gb * (1 << 30)))


@dataclass
class BuildResult:
    plan_path: Path
    meta: plan_cache.PlanMetadata
    parity: dict | None


def build_from_bundle(source: str | Path, plan_file: Path | None, settings: BuildSettings, device: str = "cuda",
                      cache_dir: str | Path | None = None, rebuild: bool = True, parity: bool = True) -> BuildResult:
    """Build the plan for `settings` from the bundle at `source` (folder, or a file in it).

    `plan_file` None: into `cache_dir` under the key the node looks up. The plan is then run on each
    saved reference input its profiles accept and compared with PyTorch FP32's outputs.
    """
    from iggt_ros.engine.tensorrt_build import build_plan

    manifest = ExportManifest.read(source)
    folder = ExportManifest.folder_of(source)
    settings.validate()
    graph = manifest.graph(folder, settings.precision, settings.typing)
    if settings.precision in manifest.mixed and graph.name == manifest.mixed[settings.precision]["file"]:
        settings.fp32_patterns = tuple(manifest.mixed[settings.precision]["fp32_patterns"])
    if max(hi for _, _, hi in settings.profiles) > manifest.max_frames:
        raise EngineError(f"the bundle's graph accepts S up to {manifest.max_frames}; the profiles ask for "
                          f"{max(hi for _, _, hi in settings.profiles)} (re-export with --max-frames)")
    info = plan_cache.DeviceInfo.current(device)
    if settings.timing_cache is None and cache_dir is not None:
        settings.timing_cache = plan_cache.timing_cache_path(cache_dir, info)
    if plan_file is None:
        if cache_dir is None:
            raise ValueError("give a plan file or a cache directory")
        shape = plan_cache.PlanShape(tuple(manifest.input_size), settings.profiles)
        key = plan_cache.plan_cache_key(manifest.model_sha256, shape, settings.key_fields(), info)
        plan_file = plan_cache.plan_path(cache_dir, key)
    meta = build_plan(graph, plan_file, settings, manifest.model_sha256, device, rebuild=rebuild,
                      on_wait=lambda: print(f"another process is building {plan_file}; waiting for it", flush=True))
    report = plan_parity(plan_file, folder, device) if parity else None
    return BuildResult(Path(plan_file), meta, report)


def plan_parity(plan_file: str | Path, folder: str | Path, device: str = "cuda") -> dict | None:
    """The plan against the bundle's saved PyTorch FP32 outputs, on the first saved S its profiles accept."""
    from iggt_ros.engine.tensorrt_engine import TensorRTEngine

    engine = TensorRTEngine(plan_file, device)
    usable = [s for s in reference_frames(folder) if engine.shape.accepts(s)]
    if not usable:
        engine.close()
        print(f"no reference output in {folder} for {engine.shape.describe()}: plan parity not checked "
              "(re-export with --frames matching the plan)", file=sys.stderr)
        return None
    images, reference = load_reference(folder, usable[0])
    got = engine.run(images)
    engine.close()
    rtol, atol = TENSORRT_TOLERANCE[engine.precision]
    report = parity_report(reference, got, rtol=rtol, atol=atol)
    write_parity(report, plan_file, {"backend": f"tensorrt-{engine.precision}", "frames": usable[0],
                                     "reference": "PyTorch FP32 outputs saved by the export"})
    print(format_parity(report, f"TensorRT vs PyTorch FP32 reference ({plan_file})"))
    return report


def onnx_check(source: str | Path, precision: str = "fp16") -> dict:
    """The bundle's graph for `precision` on ONNX Runtime (CPU) against the saved outputs (smallest S)."""
    manifest = ExportManifest.read(source)
    folder = ExportManifest.folder_of(source)
    graph = manifest.graph(folder, precision)
    saved = reference_frames(folder)
    if not saved:
        raise EngineError(f"the bundle in {folder} has no reference outputs; re-export it with `iggt-ros export`")
    images, reference = load_reference(folder, saved[0])
    rtol, atol = (PARITY_RTOL, PARITY_ATOL) if precision == "fp32" else HALF_TOLERANCE
    report = parity_report(reference, onnxruntime_outputs(graph, images), rtol=rtol, atol=atol)
    print(format_parity(report, f"ONNX Runtime ({graph.name}) vs PyTorch FP32 reference, S={saved[0]}"))
    return report


def add_build_arguments(parser: argparse.ArgumentParser) -> None:
    """The TensorRT build options, shared by `iggt-ros build-engine` and `iggt-ros export`."""
    parser.add_argument("--frames", type=int, nargs="+", default=[8],
                        help="window sizes S; one static TensorRT profile each (default 8)")
    parser.add_argument("--frame-range", type=int, nargs=3, metavar=("MIN", "OPT", "MAX"),
                        help="one dynamic TensorRT profile instead of static ones")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp16",
                        help="fp16 (default), bf16 (strong typing; Ampere/Orin and newer) or fp32")
    parser.add_argument("--typing", choices=("strong", "weak"), default="strong",
                        help="strong: precision from the mixed-precision graph (default); weak: FP16 builder flag "
                             "with per-layer FP32 constraints")
    parser.add_argument("--workspace-gb", type=float, default=2.0,
                        help="cap on TensorRT's tactic scratch memory in GiB (default 2); weights and "
                             "activations come on top")
    parser.add_argument("--tf32", action="store_true", help="let FP32 layers use TF32 (off: FP32 is FP32)")
    parser.add_argument("--fp32-pattern", action="append", default=None, metavar="REGEX",
                        help="weak typing: layer-name pattern kept in FP32 (repeatable; replaces the defaults)")
    parser.add_argument("--timing-cache", default=None, help="timing cache file (default: one per GPU in the cache)")
    parser.add_argument("--cache-dir", default="~/.cache/iggt_ros/engines",
                        help="engine cache (the node's engine.cache_dir)")
    parser.add_argument("--device", default="cuda", help="CUDA device (default cuda)")
    parser.add_argument("--no-parity", action="store_true", help="skip the plan's check against the saved outputs")


def settings_from_args(args: argparse.Namespace) -> BuildSettings:
    """`BuildSettings` from the options of `add_build_arguments` (checked)."""
    profiles = (plan_cache.check_profiles([args.frame_range]) if args.frame_range
                else plan_cache.static_profiles(args.frames))
    settings = BuildSettings(profiles=profiles, precision=args.precision, typing=args.typing,
                             workspace_bytes=int(args.workspace_gb * (1 << 30)), tf32=args.tf32,
                             fp32_patterns=tuple(args.fp32_pattern or DEFAULT_FP32_PATTERNS),
                             timing_cache=Path(args.timing_cache).expanduser() if args.timing_cache else None)
    settings.validate()
    return settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="export bundle folder (or a file in it) written by `iggt-ros export`")
    add_build_arguments(parser)
    parser.add_argument("--output", default=None, help="write the plan here instead of into the cache")
    parser.add_argument("--check-onnx-only", action="store_true",
                        help="run the bundle's graph for --precision on ONNX Runtime (CPU) against the saved "
                             "outputs and stop; needs no GPU or TensorRT")


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.check_onnx_only:
            report = onnx_check(args.source, args.precision)
            return 0 if report["ok"] else 3
        settings = settings_from_args(args)
        out = Path(args.output).expanduser() if args.output else None
        result = build_from_bundle(args.source, out, settings, device=args.device, cache_dir=args.cache_dir,
                                   parity=not args.no_parity)
    except (EngineError, ValueError) as exc:
        print(f"iggt-ros build-engine: {exc}", file=sys.stderr)
        return 1
    print_plan(result, "iggt-ros build-engine")
    return 0


def print_plan(result, prog: str) -> None:
    """Where the plan is, and a warning when its parity check against PyTorch FP32 failed."""
    print(f"TensorRT plan: {result.plan_path}")
    if result.parity is not None and not result.parity["ok"]:
        print(f"{prog}: the plan differs from PyTorch FP32 beyond the indicative tolerance (see above); check the "
              "pose and depth errors before deploying it", file=sys.stderr)
