"""`iggt-ros demo`: a sample bag, replayed on the embedded default model, with its evaluation report.

The first command to run after installing: it renders a synthetic scene into a rosbag2 with
ground truth (`iggt_ros.bag.sample`), replays it through the same pipeline the node runs
(`iggt_ros.apps.replay`), and writes into the output directory:

* `input.mcap/`  the sample bag (a rosbag2 directory: camera images, camera_info, TF, ground truth);
* `output.mcap/` the replay's output bag (every /iggt topic plus the inputs) and its query state;
* `report/`      summary.md, metrics.json and the PNG plots of the run.

Engine: `auto` (the default) runs the embedded tiny model on the torch backend when its weights are
installed. Without them it falls back to the ground-truth oracle engine and says so on stdout and
in the report, because oracle numbers measure the pipeline after the engine, not a model.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from iggt_ros.config import PATCH_MULTIPLE, ConfigError, load_config

log = logging.getLogger(__name__)

ENGINES = ("auto", "torch", "onnxruntime", "tensorrt", "oracle")
DEFAULT_SIZE = (504, 336)
DEFAULT_SCENE = 900_101
DEFAULT_OBJECTS = 8
DEFAULT_COVERAGE = 0.5
"""The default scene is the first sequence of the quality benchmark (benchmarks/quality.py, room-orbit-1cam):
a held-out seed, an object count inside the embedded model's training range (3-12), half an orbit. The
report can then be read next to benchmarks/results/quality.md. Any other scene: --scene, --objects."""
ORACLE_FALLBACK_NOTE = (
    "The embedded model weights (iggt_ros/data/tiny_iggt.safetensors) are not installed, so this demo ran the "
    "ground-truth ORACLE engine instead of a model: its numbers measure clustering, tracking and mapping on "
    "true geometry and features, not the network.")


@dataclass
class DemoPaths:
    """Where the demo writes."""

    root: Path

    @property
    def input_bag(self) -> Path:
        return self.root / "input.mcap"

    @property
    def output_bag(self) -> Path:
        return self.root / "output.mcap"

    @property
    def report(self) -> Path:
        return self.root / "report"


def embedded_weights_installed() -> bool:
    from iggt_ros.engine.weights import EMBEDDED_WEIGHTS

    return EMBEDDED_WEIGHTS.is_file()


def choose_engine(requested: str) -> tuple[str, list[str]]:
    """(backend, notes): `auto` is torch on the embedded weights when installed, else the oracle (with a note)."""
    if requested != "auto":
        return requested, []
    if embedded_weights_installed():
        return "torch", []
    return "oracle", [ORACLE_FALLBACK_NOTE]


def model_input_size(backend: str, width: int, height: int) -> tuple[int, int]:
    """(width, height) the engine runs at: the embedded tiny model's training size, else the image size."""
    if backend in ("torch", "onnxruntime", "tensorrt"):
        from iggt_ros.engine.weights import model_config

        hw = (model_config("tiny").extra or {}).get("input_hw")
        if hw:
            return int(hw[1]), int(hw[0])
    return width, height


def _parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"size must look like 504x336, got {text!r}") from exc
    if w <= 0 or h <= 0 or w % PATCH_MULTIPLE or h % PATCH_MULTIPLE:
        raise argparse.ArgumentTypeError(f"both sides must be positive multiples of {PATCH_MULTIPLE}, got {text!r}")
    return w, h


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="iggt_demo", metavar="DIR", help="output directory (default ./iggt_demo)")
    parser.add_argument("--frames", type=int, default=40, metavar="N", help="time steps of the sample bag (default 40)")
    parser.add_argument("--cameras", type=int, default=1, metavar="N", help="cameras on the rig (default 1)")
    parser.add_argument("--scene", type=int, default=DEFAULT_SCENE, metavar="SEED",
                        help=f"scene seed (default {DEFAULT_SCENE}: the first quality-benchmark scene)")
    parser.add_argument("--objects", type=int, default=DEFAULT_OBJECTS, metavar="N",
                        help=f"objects in the scene (default {DEFAULT_OBJECTS}; 0 draws 5-30 from the seed)")
    parser.add_argument("--engine", choices=ENGINES, default="auto",
                        help="inference backend (default auto: the embedded model, or the oracle without it)")
    parser.add_argument("--size", type=_parse_size, default=DEFAULT_SIZE, metavar="WxH",
                        help="camera image size, multiples of 28 (default 504x336)")
    parser.add_argument("--config", default=None, metavar="FILE",
                        help="parameter file for everything the demo does not set itself (e.g. the thread policy)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _clear_previous(paths: DemoPaths) -> None:
    """Remove what an earlier demo wrote here (only bag directories and the report folder it recognises)."""
    for bag in (paths.input_bag, paths.output_bag):
        if bag.exists():
            if not (bag / "metadata.yaml").exists():
                raise FileExistsError(f"{bag} exists and is not a rosbag2 directory; choose another --out")
            shutil.rmtree(bag)
    if paths.report.exists():
        if not (paths.report / "summary.md").exists() and any(paths.report.iterdir()):
            raise FileExistsError(f"{paths.report} exists and is not a demo report; choose another --out")
        shutil.rmtree(paths.report)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    from iggt_ros.apps.replay import ReplayError, print_summary, replay_bag
    from iggt_ros.bag.sample import SampleBagSpec, write_sample_bag

    if args.frames < 1 or args.cameras < 1 or args.objects < 0:
        print("iggt-ros demo: --frames and --cameras must be >= 1 and --objects >= 0", file=sys.stderr)
        return 2
    paths = DemoPaths(Path(args.out))
    try:
        paths.root.mkdir(parents=True, exist_ok=True)
        _clear_previous(paths)
    except (OSError, FileExistsError) as exc:
        print(f"iggt-ros demo: {exc}", file=sys.stderr)
        return 2
    width, height = args.size
    backend, notes = choose_engine(args.engine)
    if backend == "oracle":
        banner = "!" * 100
        print(banner)
        print("ORACLE ENGINE: " + (notes[0] if notes else "the ground-truth oracle was requested (--engine oracle); "
                                   "the numbers measure the pipeline after the engine, not a model."))
        print(banner)
    model_w, model_h = model_input_size(backend, width, height)
    try:
        config = load_config(args.config).replace(**{"engine.backend": backend, "input.image_width": model_w,
                                                     "input.image_height": model_h})
    except ConfigError as exc:
        print(f"iggt-ros demo: {exc}", file=sys.stderr)
        return 2

    started = time.monotonic()
    spec = SampleBagSpec(seed=args.scene, cameras=args.cameras, frames=args.frames, width=width, height=height,
                         num_objects=args.objects or None, coverage=DEFAULT_COVERAGE)
    sample = write_sample_bag(paths.input_bag, spec)
    print(f"sample bag: {paths.input_bag} ({args.frames} frames x {len(sample.cameras)} camera(s) at {width}x{height}, "
          f"scene {args.scene}) in {time.monotonic() - started:.1f} s")
    try:
        summary = replay_bag(paths.input_bag, paths.output_bag, config, report_dir=paths.report,
                             progress=not args.no_progress,
                             notes=[*notes, f"Demo: scene {args.scene} ({args.objects or '5-30'} objects), "
                                    f"{args.frames} frames, {args.cameras} camera(s) at {width}x{height}, "
                                    f"model input {model_w}x{model_h}."])
    except ReplayError as exc:
        print(f"iggt-ros demo: {exc}", file=sys.stderr)
        return 2
    print_summary(summary)
    took = time.monotonic() - started
    print(f"\ndemo finished in {took:.1f} s; engine: {summary.engine}"
          + (" (ORACLE: ground truth, not a model)" if summary.oracle else ""))
    print(f"  input bag : {paths.input_bag}")
    print(f"  output bag: {paths.output_bag}  (ros2 bag play {paths.output_bag}, or open it in Foxglove)")
    if summary.report is not None:
        print(f"  report    : {summary.report.summary_md}")
        for name, png in summary.report.plots.items():
            print(f"  plot      : {png}  ({name})")
    if summary.query_state is not None:
        print(f"  query     : iggt-ros query {paths.output_bag} \"the red cube\"")
    return 1 if summary.stopped else 0
