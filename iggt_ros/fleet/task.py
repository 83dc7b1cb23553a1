"""The task of a fleet evaluation: replay one bag with the replay code and say how it went.

The same function runs in the driver process (serial evaluation) and as a Ray task, so both give
the same per-bag results. Its outputs go under `<fleet out>/bags/<name>/` (the output bag and
the bag's own report); what it returns is small (counts and metrics.json's content), so a cluster
only streams numbers back to the driver.
"""

from __future__ import annotations

import multiprocessing
import socket
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from iggt_ros.config import IggtConfig
from iggt_ros.fleet.bags import BagJob

OK, FAILED, TIMEOUT = "ok", "failed", "timeout"
OUTPUT_BAG, REPORT_DIR = "output", "report"


@dataclass(frozen=True)
class ReplaySettings:
    """What every bag of a fleet is replayed with."""

    config: IggtConfig
    cameras: tuple[str, ...] | None = None
    storage: str = "mcap"
    timeout_s: float | None = None
    """A replay still running after this long is stopped and reported as timed out (None: no limit)."""
    save_query_state: bool = False
    embed: bool = False
    """Embed instances for text queries while replaying (costs time; the metrics do not use it)."""


@dataclass
class BagOutcome:
    """How the replay of one bag went: what the fleet report shows and `outcome.json` keeps."""

    name: str
    input_bag: str
    status: str
    """'ok', 'failed' or 'timeout'."""
    reason: str = ""
    """Why the bag failed or timed out ('' when ok)."""
    retryable: bool = False
    """Whether another attempt may succeed (a timeout, an error while processing); an unusable bag is not."""
    attempts: int = 1
    wall_s: float = 0.0
    host: str = ""
    images: int = 0
    windows: int = 0
    views: int = 0
    warnings: list[str] = field(default_factory=list)
    report_dir: str | None = None
    """The bag's own report, relative to the bag's folder in the fleet output."""
    output_bag: str | None = None
    metrics: dict[str, Any] | None = None
    """The content of the bag's metrics.json (None without ground truth or on failure)."""
    reused: bool = False
    """Taken from an earlier run of the same fleet output instead of replayed again."""

    @property
    def ok(self) -> bool:
        return self.status == OK

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BagOutcome:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def _replay(job: BagJob, bag_dir: Path, settings: ReplaySettings) -> BagOutcome:
    """Replay in this process; every error becomes an outcome (the driver must go on with the others)."""
    from iggt_ros.apps.replay import ReplayError, replay_bag

    started = time.monotonic()
    host = socket.gethostname()
    base = {"name": job.name, "input_bag": str(job.input_bag), "host": host}
    try:
        summary = replay_bag(job.input_bag, bag_dir / OUTPUT_BAG, settings.config, report_dir=bag_dir / REPORT_DIR,
                             cameras=list(settings.cameras) if settings.cameras else None, storage=settings.storage,
                             progress=False, save_query_state=settings.save_query_state, embed=settings.embed)
    except ReplayError as exc:
        return BagOutcome(**base, status=FAILED, reason=str(exc), retryable=False,
                          wall_s=time.monotonic() - started)
    except Exception as exc:  # an error of the stack on this bag: report it, let the driver decide on a retry
        frames = traceback.extract_tb(exc.__traceback__)
        where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
        return BagOutcome(**base, status=FAILED, reason=f"{type(exc).__name__}: {exc}{where}", retryable=True,
                          wall_s=time.monotonic() - started)
    report = summary.report
    return BagOutcome(
        **base,
        status=FAILED if summary.stopped else OK,
        reason=f"the replay stopped early: {summary.stopped}" if summary.stopped else "",
        retryable=bool(summary.stopped),
        wall_s=time.monotonic() - started,
        images=summary.images_read, windows=summary.windows, views=summary.views,
        warnings=[w.splitlines()[0] for w in summary.warnings],
        report_dir=None if report is None else str(Path(report.out_dir).relative_to(bag_dir)),
        output_bag=OUTPUT_BAG,
        metrics=None if report is None else report.metrics,
    )


def _child(job: BagJob, bag_dir: Path, settings: ReplaySettings, conn) -> None:
    conn.send(_replay(job, bag_dir, settings))
    conn.close()


def _replay_with_limit(job: BagJob, bag_dir: Path, settings: ReplaySettings) -> BagOutcome:
    """Replay in a child process that is stopped once `timeout_s` has passed (a replay has no cancel point)."""
    started = time.monotonic()
    ctx = multiprocessing.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_child, args=(job, bag_dir, settings, send), name=f"replay-{job.name}", daemon=True)
    child.start()
    send.close()
    outcome: BagOutcome | None = None
    if receive.poll(settings.timeout_s):
        try:
            outcome = receive.recv()
        except EOFError:  # the child died without an answer
            outcome = None
    if child.is_alive():
        child.kill()
    child.join()
    receive.close()
    if outcome is not None:
        return outcome
    base = {"name": job.name, "input_bag": str(job.input_bag), "host": socket.gethostname(),
            "wall_s": time.monotonic() - started, "retryable": True}
    if child.exitcode not in (None, 0) and time.monotonic() - started < settings.timeout_s:
        return BagOutcome(**base, status=FAILED, reason=f"the replay process died (exit code {child.exitcode})")
    return BagOutcome(**base, status=TIMEOUT,
                      reason=f"not finished after {settings.timeout_s:g} s (--timeout); stopped")


def evaluate_bag(job: BagJob, bag_dir: str | Path, settings: ReplaySettings) -> BagOutcome:
    """Replay `job` into `bag_dir` (created; left from an unfinished attempt, it is cleared first)."""
    import shutil

    bag_dir = Path(bag_dir)
    if bag_dir.exists():
        shutil.rmtree(bag_dir)
    bag_dir.mkdir(parents=True)
    if settings.timeout_s is None:
        return _replay(job, bag_dir, settings)
    return _replay_with_limit(job, bag_dir, settings)
