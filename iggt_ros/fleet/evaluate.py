"""The fleet driver: plan the bags, skip those an earlier run finished, run the rest, retry, report.

`evaluate_fleet` is what `iggt-ros evaluate` calls. It submits every bag to a runner (serial or
Ray), and as each finishes it writes that bag's `outcome.json`, rewrites the fleet report and
advances the progress bar. A bag that failed in a way another attempt may fix (a timeout, an
error while processing) is submitted again, at most `retries` more times; a bag the replay
cannot use at all fails once. A bag whose `outcome.json` says it finished (from the same input
bag) is not replayed again, so an interrupted fleet run is continued by starting it again.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from iggt_ros.fleet.bags import BagJob
from iggt_ros.fleet.report import (
    LATENCY_PLOT,
    TMIOU_PLOT,
    FleetHeader,
    plot_fleet_latency,
    plot_fleet_tmiou,
    write_fleet_files,
)
from iggt_ros.fleet.runners import Runner, Submission
from iggt_ros.fleet.task import BagOutcome, ReplaySettings

BAGS_DIR, OUTCOME_JSON = "bags", "outcome.json"


@dataclass
class FleetResult:
    """Every bag's outcome (in job order) and the fleet totals as written to fleet.json."""

    out_dir: Path
    outcomes: list[BagOutcome]
    totals: dict
    wall_s: float

    @property
    def failed(self) -> list[BagOutcome]:
        return [o for o in self.outcomes if not o.ok]


def machine_load() -> str:
    """Load averages and cores of the driver's machine, for the report (empty where the OS has none)."""
    try:
        one, five, _ = os.getloadavg()
    except (AttributeError, OSError):
        return ""
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} cores"


def bag_dir(out: Path, job: BagJob) -> Path:
    return out / BAGS_DIR / job.name


def finished_earlier(out: Path, job: BagJob) -> BagOutcome | None:
    """The outcome of an earlier run of this fleet output for this bag, when that run finished it."""
    path = bag_dir(out, job) / OUTCOME_JSON
    if not path.is_file():
        return None
    try:
        outcome = BagOutcome.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError):
        return None  # half-written or from another version: replay it
    if not outcome.ok or Path(outcome.input_bag) != job.input_bag:
        return None
    outcome.reused = True
    return outcome


def _write_outcome(out: Path, job: BagJob, outcome: BagOutcome) -> None:
    folder = bag_dir(out, job)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{OUTCOME_JSON}.tmp"
    tmp.write_text(json.dumps(outcome.to_dict(), indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(folder / OUTCOME_JSON)


def evaluate_fleet(jobs: Sequence[BagJob], out: str | Path, settings: ReplaySettings, runner: Runner, *,
                   retries: int = 1, progress: bool = True, plots: bool = True) -> FleetResult:
    """Replay every job with `runner` into `out`; returns when every bag has an outcome.

    `retries`: further attempts of a bag whose failure is retryable (0: none).
    """
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    out = Path(out).resolve()  # the tasks may run on other nodes, in other working directories
    (out / BAGS_DIR).mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    header = FleetHeader(runner=getattr(runner, "description", type(runner).__name__), bags=len(jobs),
                         load=machine_load())
    outcomes: dict[str, BagOutcome] = {}
    for job in jobs:
        earlier = finished_earlier(out, job)
        if earlier is not None:
            outcomes[job.name] = earlier
    bar = tqdm(total=len(jobs), initial=len(outcomes), desc="bags", unit="bag", dynamic_ncols=True,
               disable=not progress)
    try:
        for job in jobs:
            if job.name not in outcomes:
                runner.submit(Submission(job, bag_dir(out, job), attempt=1), settings)
        header.wall_s = time.monotonic() - started
        write_fleet_files(out, header, list(outcomes.values()))
        while runner.pending:
            item, outcome = runner.next_done()
            outcome.attempts = item.attempt
            if not outcome.ok and outcome.retryable and item.attempt <= retries:
                why = outcome.reason.splitlines()[0] if outcome.reason else ""
                bar.write(f"{item.job.name}: {outcome.status} ({why}); attempt {item.attempt + 1} of {retries + 1}")
                runner.submit(Submission(item.job, item.bag_dir, item.attempt + 1), settings)
                continue
            _write_outcome(out, item.job, outcome)
            outcomes[item.job.name] = outcome
            bar.update(1)
            failed = sum(not o.ok for o in outcomes.values())
            bar.set_postfix(failed=failed, last=item.job.name)
            header.wall_s = time.monotonic() - started
            write_fleet_files(out, header, list(outcomes.values()))
    finally:
        bar.close()
        runner.close()
    ordered = [outcomes[j.name] for j in jobs if j.name in outcomes]
    header.wall_s = time.monotonic() - started
    header.finished = len(ordered) == len(jobs)
    names: list[str] = []
    if plots:
        plot_fleet_tmiou(ordered, out / TMIOU_PLOT)
        plot_fleet_latency(ordered, out / LATENCY_PLOT)
        names = [TMIOU_PLOT, LATENCY_PLOT]
    totals = write_fleet_files(out, header, ordered, names)
    return FleetResult(out, ordered, totals, header.wall_s)
