"""`iggt-ros`: the command line of the package.

Each subcommand lives in the module of the layer it belongs to and exposes
`add_arguments(parser)` and `run(args) -> int`; this file only dispatches, and imports a
subcommand's module when that subcommand runs, so `iggt-ros --help` stays fast and a missing
optional dependency only affects the command that needs it.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("iggt_ros.apps.demo", "make a sample bag, replay it on the embedded model, write the report"),
    "make-sample-bag": ("iggt_ros.bag.sample", "write a synthetic rosbag2 with ground truth"),
    "replay": ("iggt_ros.apps.replay", "run the pipeline over a rosbag2, write an output bag and a report"),
    "evaluate": ("iggt_ros.fleet.cli", "replay many bags (one after another, or as Ray tasks), write a fleet report"),
    "query": ("iggt_ros.vlm.query_cli", "answer a text query against the last state of a replay"),
    "train": ("iggt_ros.train.cli", "train or fine-tune IGGT with the paper's losses"),
    "export": ("iggt_ros.engine.export_cli", "export a model to an ONNX bundle (and a TensorRT plan)"),
    "build-engine": ("iggt_ros.engine.build_engine", "build a TensorRT plan from an export bundle, no PyTorch model"),
    "convert-checkpoint": ("iggt_ros.model.checkpoint", "convert an official .pt checkpoint to safetensors"),
    "map": ("iggt_ros.apps.map_cli", "save, load, list or inspect saved object maps"),
}


def prepare_threads(argv: Sequence[str]) -> None:
    """The thread policy (the `threads` section of `--config`, else its defaults) in the environment, before
    the command's module loads numpy, torch, numba or onnxruntime (they read it once, at load)."""
    from iggt_ros import threads

    threads.prepare_process(threads.policy_from_argv(argv))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="iggt-ros", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_module, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        parser = build_parser()
        if argv and argv[0] not in ("-h", "--help"):
            parser.print_usage(sys.stderr)
            print(f"iggt-ros: unknown command '{argv[0]}'; choose from {', '.join(COMMANDS)}", file=sys.stderr)
            return 2
        parser.print_help()
        return 0
    name, rest = argv[0], argv[1:]
    prepare_threads(rest)
    module_name, help_text = COMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"iggt-ros {name}", description=help_text)
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    if name == "train":
        return run_training(module, args)
    return int(module.run(args) or 0)


def run_training(module, args: argparse.Namespace) -> int:
    """`train` in one process, or in each of the processes `torchrun` started.

    Under torchrun (`torchrun --nproc_per_node N -m iggt_ros.cli train ...`, or the `iggt-ros`
    script in its place) every process joins the process group before the trainer is built and
    leaves it after the last checkpoint; the trainer then trains data-parallel.
    """
    from iggt_ros.train import distributed

    try:
        distributed.init_from_env(getattr(args, "device", "cpu"))
    except distributed.DistributedError as exc:
        print(f"iggt-ros train: {exc}", file=sys.stderr)
        return 2
    finished = False
    try:
        code = int(module.run(args) or 0)
        finished = True
        return code
    except distributed.DistributedError as exc:  # every process stops with the same reason
        print(f"iggt-ros train: {exc}", file=sys.stderr)
        return 2
    finally:
        distributed.shutdown(wait=finished)


if __name__ == "__main__":
    sys.exit(main())
