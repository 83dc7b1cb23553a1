"""`iggt-ros export`: weights -> export bundle (ONNX, mixed-precision ONNX, reference outputs) [-> TensorRT plan].

Step one of deployment, run where the weights and a recent PyTorch are (a workstation). The bundle
goes into the engine cache (`--cache-dir`, the node's `engine.cache_dir`) under the key the node
looks up, or into `--output-dir`. Without `--onnx-only` the plan is built right after, from the
bundle alone, once the PyTorch model is released (`iggt-ros build-engine`, step two, does the same on
a target that has no PyTorch model).

Examples:
    iggt-ros export --onnx-only                                   # embedded model, ONNX for onnxruntime
    iggt-ros export --checkpoint iggt.safetensors --model official --frames 8 --onnx-only --output-dir bundle/
    iggt-ros export --checkpoint iggt.safetensors --frames 4 8    # a CUDA workstation: also the FP16 plan
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from iggt_ros.engine.base import EngineError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from iggt_ros.engine.build_engine import add_build_arguments

    parser.add_argument("--checkpoint", default="", help="weights file; empty: the embedded tiny model")
    parser.add_argument("--model", default="tiny",
                        help="configuration for weights without one: tiny, official, parity or a JSON file")
    parser.add_argument("--allow-partial", action="store_true", help="export even if the checkpoint misses keys")
    parser.add_argument("--height", type=int, default=336, help="input height, multiple of 28 (default 336)")
    parser.add_argument("--width", type=int, default=504, help="input width, multiple of 28 (default 504)")
    parser.add_argument("--max-frames", type=int, default=12, help="largest S the ONNX graph accepts (default 12)")
    parser.add_argument("--output-dir", default=None, help="write model.onnx / engine.plan here instead")
    parser.add_argument("--onnx-only", action="store_true",
                        help="stop after the bundle (build the plan on the target with `iggt-ros build-engine`)")
    parser.add_argument("--parity-frames", type=int, default=2,
                        help="S of the ONNX Runtime parity input (references are also saved for every --frames S)")
    add_build_arguments(parser)


def run(args: argparse.Namespace) -> int:
    import gc

    from iggt_ros.engine import plan_cache
    from iggt_ros.engine.build_engine import settings_from_args
    from iggt_ros.engine.export import export_bundle
    from iggt_ros.engine.preprocess import check_input_size
    from iggt_ros.engine.weights import file_sha256, load_engine_model

    try:
        size = check_input_size((args.height, args.width))
        settings = settings_from_args(args)
        profiles = settings.profiles
        if max(p[2] for p in profiles) > args.max_frames:
            raise ValueError(f"profiles reach S={max(p[2] for p in profiles)} but --max-frames is {args.max_frames}")
        model, _, weights = load_engine_model(args.checkpoint, args.model, args.allow_partial)
        sha = file_sha256(weights, args.cache_dir)
        out_dir = Path(args.output_dir).expanduser() if args.output_dir else None
        folder = out_dir or plan_cache.onnx_path(args.cache_dir, plan_cache.onnx_cache_key(sha, size,
                                                                                           args.max_frames)).parent
        frames = sorted({min(args.parity_frames, args.max_frames), *(opt for _, opt, _ in profiles)})
        result = export_bundle(model, sha, size, folder,
                               precisions=[args.precision] if args.typing == "strong" else [],
                               fp32_patterns=settings.fp32_patterns, reference_frames=frames,
                               max_frames=args.max_frames)
        del model  # the plan is built from the bundle alone: give the builder the memory
        gc.collect()
        print(f"export bundle: {folder} (ONNX: {result.onnx_path})")
        onnx_report = result.reports.get("onnx")
        if onnx_report is not None and not onnx_report["ok"]:
            print("iggt-ros export: ONNX Runtime differs from PyTorch beyond tolerance (see above); the export is "
                  "not trustworthy", file=sys.stderr)
            return 3
        if args.onnx_only:
            return 0
        from iggt_ros.engine.build_engine import build_from_bundle, print_plan

        built = build_from_bundle(folder, out_dir / plan_cache.PLAN_NAME if out_dir else None, settings,
                                  device=args.device, cache_dir=args.cache_dir, parity=not args.no_parity)
    except (EngineError, ValueError) as exc:
        print(f"iggt-ros export: {exc}", file=sys.stderr)
        return 1
    print_plan(built, "iggt-ros export")
    return 0
