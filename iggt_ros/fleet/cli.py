"""`iggt-ros evaluate`: replay many bags with the same replay code and write one fleet report.

    iggt-ros evaluate BAG_OR_DIR... -o OUT [--ray ADDRESS|local] [--gpus-per-bag G] [--cpus-per-bag C]

Without --ray the bags are replayed one after another in this process; with it each bag is a Ray
task (see `iggt_ros.fleet.runners.RayRunner`). Both give the same per-bag results and totals.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from iggt_ros.config import ENGINE_BACKENDS, ConfigError, IggtConfig, load_config
from iggt_ros.fleet.bags import FleetInputError, find_bags, plan_jobs
from iggt_ros.fleet.evaluate import evaluate_fleet
from iggt_ros.fleet.report import FLEET_MD
from iggt_ros.fleet.runners import FleetRunnerError, RayRunner, SerialRunner
from iggt_ros.fleet.task import ReplaySettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bags", nargs="+", metavar="BAG_OR_DIR",
                        help="rosbag2 directories, .mcap files, or folders searched for them")
    parser.add_argument("-o", "--output", metavar="OUT", required=True,
                        help="fleet output folder: fleet.md, fleet.json, plots, bags/<name>/ (output bag, report); "
                             "running again into the same folder skips the bags already done")
    parser.add_argument("--ray", default=None, metavar="ADDRESS",
                        help="run each bag as a Ray task: 'local' starts Ray on this machine, 'auto' or HOST:PORT "
                             "joins a running cluster (default: one after another in this process)")
    parser.add_argument("--cpus-per-bag", type=float, default=1.0, metavar="C",
                        help="CPUs a bag's Ray task asks for (default 1)")
    parser.add_argument("--gpus-per-bag", type=float, default=0.0, metavar="G",
                        help="GPUs a bag's Ray task asks for, fractions allowed (default 0)")
    parser.add_argument("--retries", type=int, default=1, metavar="N",
                        help="further attempts of a bag that timed out or failed while processing (default 1)")
    parser.add_argument("--timeout", type=float, default=None, metavar="S",
                        help="stop a bag's replay after S seconds and report it as timed out (default: no limit)")
    parser.add_argument("--config", default=None, help="parameter file (YAML), as for the node; default: built-ins")
    parser.add_argument("--engine", choices=ENGINE_BACKENDS, default=None,
                        help="inference backend (default: engine.backend of the config)")
    parser.add_argument("--checkpoint", default=None, help="model weights (default: the embedded tiny model)")
    parser.add_argument("--engine-path", default=None, help="ONNX model or TensorRT plan")
    parser.add_argument("--cameras", nargs="+", default=None, metavar="NAME", help="cameras to replay")
    parser.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap", help="output bag storage")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace) -> IggtConfig:
    config = load_config(args.config)
    overrides: dict[str, Any] = {}
    for key, value in (("engine.backend", args.engine), ("engine.checkpoint", args.checkpoint),
                       ("engine.engine_path", args.engine_path)):
        if value:
            overrides[key] = value
    return config.replace(**overrides) if overrides else config


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.timeout is not None and args.timeout <= 0:
            raise FleetInputError(f"--timeout must be > 0 seconds (got {args.timeout}); leave it out for no limit")
        if args.retries < 0:
            raise FleetInputError(f"--retries must be >= 0 (got {args.retries})")
        settings = ReplaySettings(config=config_from_args(args), cameras=tuple(args.cameras) if args.cameras else None,
                                  storage=args.storage, timeout_s=args.timeout)
        jobs = plan_jobs(find_bags(args.bags, exclude=args.output))
        runner = SerialRunner() if args.ray is None else RayRunner(args.ray, args.cpus_per_bag, args.gpus_per_bag)
    except (FleetInputError, FleetRunnerError, ConfigError) as exc:
        print(f"iggt-ros evaluate: {exc}", file=sys.stderr)
        return 2
    result = evaluate_fleet(jobs, args.output, settings, runner, retries=args.retries, progress=not args.no_progress)
    counts = result.totals["counts"]
    print(f"{counts['ok']} of {counts['bags']} bags ok ({counts['reused']} from an earlier run), "
          f"{counts['failed']} failed, {counts['timeout']} timed out in {result.wall_s:.1f} s; "
          f"report: {result.out_dir / FLEET_MD}")
    for o in result.failed:
        print(f"  {o.name}: {o.status}: {o.reason.splitlines()[0] if o.reason else ''}", file=sys.stderr)
    return 1 if result.failed else 0
