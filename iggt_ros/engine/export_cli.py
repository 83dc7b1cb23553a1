"""`iggt-ros export`: weights -> ONNX -> TensorRT plan, each followed by a parity report.

By default the files go into the engine cache (`--cache-dir`, the node's `engine.cache_dir`) under
the keys the node looks up, so a node configured with the same weights, input size, window sizes
and precision finds them at start-up. `--output-dir` writes plain `model.onnx` / `engine.plan`
files instead (then point `engine.engine_path` at them).

Examples:
    iggt-ros export --onnx-only                                   # embedded model, ONNX for onnxruntime
    iggt-ros export --checkpoint iggt.safetensors --frames 4 8    # TensorRT FP16, static S=4 and S=8
    iggt-ros export --checkpoint iggt.pt --model official --frame-range 2 8 12
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from iggt_ros.engine.base import EngineError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", default="", help="weights file; empty: the embedded tiny model")
    parser.add_argument("--model", default="tiny",
                        help="configuration for weights without one: tiny, official, parity or a JSON file")
    parser.add_argument("--allow-partial", action="store_true", help="export even if the checkpoint misses keys")
    parser.add_argument("--height", type=int, default=336, help="input height, multiple of 28 (default 336)")
    parser.add_argument("--width", type=int, default=504, help="input width, multiple of 28 (default 504)")
    parser.add_argument("--frames", type=int, nargs="+", default=[8],
                        help="window sizes S; one static TensorRT profile each (default 8)")
    parser.add_argument("--frame-range", type=int, nargs=3, metavar=("MIN", "OPT", "MAX"),
                        help="one dynamic TensorRT profile instead of static ones")
    parser.add_argument("--max-frames", type=int, default=12, help="largest S the ONNX graph accepts (default 12)")
    parser.add_argument("--precision", choices=("fp16", "fp32"), default="fp16", help="TensorRT precision")
    parser.add_argument("--workspace-gb", type=float, default=2.0,
                        help="TensorRT workspace limit in GiB (default 2, fits an 8 GB Jetson)")
    parser.add_argument("--fp32-pattern", action="append", default=None, metavar="REGEX",
                        help="layer-name pattern kept in FP32 (repeatable; replaces the defaults)")
    parser.add_argument("--typing", choices=("strong", "weak"), default="strong",
                        help="strong: FP16/FP32 casts written into the graph (TensorRT 9+, required by 11); "
                             "weak: per-layer precision constraints (TensorRT 8.6-10)")
    parser.add_argument("--timing-cache", default=None, help="TensorRT timing cache file (default: in the cache)")
    parser.add_argument("--cache-dir", default="~/.cache/iggt_ros/engines", help="engine cache directory")
    parser.add_argument("--output-dir", default=None, help="write model.onnx / engine.plan here instead")
    parser.add_argument("--onnx-only", action="store_true", help="stop after the ONNX export")
    parser.add_argument("--device", default="cuda", help="CUDA device for TensorRT (default cuda)")
    parser.add_argument("--parity-frames", type=int, default=2, help="frames of the random parity input")
    parser.add_argument("--no-parity", action="store_true", help="skip the parity reports")


def run(args: argparse.Namespace) -> int:
    from iggt_ros.engine import plan_cache
    from iggt_ros.engine.export import export_model
    from iggt_ros.engine.preprocess import check_input_size
    from iggt_ros.engine.weights import file_sha256, load_engine_model

    try:
        size = check_input_size((args.height, args.width))
        if args.frame_range:
            profiles = plan_cache.check_profiles([args.frame_range])
        else:
            profiles = plan_cache.static_profiles(args.frames)
        if max(p[2] for p in profiles) > args.max_frames:
            raise ValueError(f"profiles reach S={max(p[2] for p in profiles)} but --max-frames is {args.max_frames}")
        model, _, weights = load_engine_model(args.checkpoint, args.model, args.allow_partial)
        sha = file_sha256(weights, args.cache_dir)
        out_dir = Path(args.output_dir).expanduser() if args.output_dir else None
        onnx_file = (out_dir / plan_cache.ONNX_NAME if out_dir
                     else plan_cache.onnx_path(args.cache_dir, plan_cache.onnx_cache_key(sha, size)))
        plan_file = settings = None
        if not args.onnx_only:
            from iggt_ros.engine.tensorrt_build import DEFAULT_FP32_PATTERNS, BuildSettings

            device = plan_cache.DeviceInfo.current(args.device)
            shape = plan_cache.PlanShape(size, profiles)
            plan_file = (out_dir / plan_cache.PLAN_NAME if out_dir else
                         plan_cache.plan_path(args.cache_dir, plan_cache.plan_cache_key(sha, shape, args.precision,
                                                                                         device)))
            timing = Path(args.timing_cache) if args.timing_cache else plan_cache.timing_cache_path(args.cache_dir)
            settings = BuildSettings(profiles=profiles, precision=args.precision,
                                     workspace_bytes=int(args.workspace_gb * (1 << 30)),
                                     fp32_patterns=tuple(args.fp32_pattern or DEFAULT_FP32_PATTERNS),
                                     timing_cache=timing, typing=args.typing)
            settings.validate()
        result = export_model(model, sha, size, onnx_file, plan_file, settings, parity_frames=args.parity_frames,
                              max_frames=args.max_frames, parity=not args.no_parity)
    except (EngineError, ValueError) as exc:
        print(f"iggt-ros export: {exc}", file=sys.stderr)
        return 1
    print(f"ONNX: {result.onnx_path}")
    if result.plan_path is not None:
        print(f"TensorRT plan: {result.plan_path}")
    trt_report = result.reports.get("tensorrt")
    if trt_report is not None and not trt_report["ok"]:
        print("iggt-ros export: the TensorRT plan differs from PyTorch beyond the indicative tolerance (see above); "
              "check the pose and depth errors before deploying it", file=sys.stderr)
    onnx_report = result.reports.get("onnx")
    if onnx_report is not None and not onnx_report["ok"]:
        print("iggt-ros export: ONNX Runtime differs from PyTorch beyond tolerance (see above); the export is "
              "not trustworthy", file=sys.stderr)
        return 3
    return 0
