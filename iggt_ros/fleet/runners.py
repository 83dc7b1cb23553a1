"""Where the bag tasks run: one after another in this process, or as Ray tasks on a cluster.

Both runners take the same (job, folder, settings) submissions and hand back `BagOutcome`s as
tasks finish; the driver (`iggt_ros.fleet.evaluate`) decides retries and writes the report, so
serial and Ray runs differ only in where and when `evaluate_bag` runs.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from iggt_ros.config import ThreadsConfig
from iggt_ros.fleet.bags import BagJob
from iggt_ros.fleet.task import FAILED, BagOutcome, ReplaySettings, evaluate_bag


class FleetRunnerError(RuntimeError):
    """The runner cannot start (Ray missing or unreachable); the message says what to do."""


@dataclass(frozen=True)
class Submission:
    job: BagJob
    bag_dir: Path
    attempt: int


class Runner(Protocol):
    """Runs submitted bag tasks; `next_done` blocks until one finishes and returns it with its outcome."""

    def submit(self, item: Submission, settings: ReplaySettings) -> None: ...

    def next_done(self) -> tuple[Submission, BagOutcome]: ...

    @property
    def pending(self) -> int: ...

    def close(self) -> None: ...


class SerialRunner:
    """The tasks one after another in this process (the results a Ray run must reproduce)."""

    description = "serial (this process)"

    def __init__(self) -> None:
        self._queue: deque[tuple[Submission, ReplaySettings]] = deque()

    def submit(self, item: Submission, settings: ReplaySettings) -> None:
        self._queue.append((item, settings))

    def next_done(self) -> tuple[Submission, BagOutcome]:
        item, settings = self._queue.popleft()
        return item, evaluate_bag(item.job, item.bag_dir, settings)

    @property
    def pending(self) -> int:
        return len(self._queue)

    def close(self) -> None:
        self._queue.clear()


class RayRunner:
    """Each bag a Ray task with declared resources (CPUs, GPUs per bag), scheduled by Ray across its nodes.

    `address`: 'local' starts a Ray instance on this machine; anything else is a running cluster's
    address ('auto' finds one started with `ray start --head` on this node). When Ray is already
    initialised in this process (a test, a notebook), that instance is used as it is. Ray retries a
    task whose worker or node died up to `system_retries` times; errors of the replay itself come
    back as outcomes and the driver decides on those.

    The input bags and the fleet output folder must be at the same paths on every node (a shared
    file system), and every node needs iggt_ros installed in the Python that runs its Ray workers.
    """

    def __init__(self, address: str = "local", cpus_per_bag: float = 1.0, gpus_per_bag: float = 0.0,
                 system_retries: int = 1) -> None:
        try:
            import ray
        except ImportError as exc:
            raise FleetRunnerError("Ray is not installed: pip install 'iggt_ros[ray]' (or 'ray>=2.9'), or leave "
                                   "out --ray to evaluate the bags one after another here") from exc
        if cpus_per_bag <= 0 or gpus_per_bag < 0:
            raise FleetRunnerError(f"--cpus-per-bag must be > 0 and --gpus-per-bag >= 0 (got {cpus_per_bag}, "
                                   f"{gpus_per_bag})")
        self._ray = ray
        self._owns = False
        if not ray.is_initialized():
            try:
                if address == "local":
                    ray.init(include_dashboard=False, log_to_driver=False,
                             runtime_env={"env_vars": _worker_env(cpus_per_bag)})
                else:
                    ray.init(address=address, log_to_driver=False)
            except Exception as exc:
                raise FleetRunnerError(f"cannot connect to Ray at '{address}': {exc}; start a cluster with "
                                       "`ray start --head` and pass its address (or 'auto' on a node of it), "
                                       "or use --ray local") from exc
            self._owns = True
        resources = ray.cluster_resources()
        if resources.get("CPU", 0) < cpus_per_bag or resources.get("GPU", 0) < gpus_per_bag:
            self.close()
            raise FleetRunnerError(f"the Ray cluster has {resources.get('CPU', 0):g} CPUs and "
                                   f"{resources.get('GPU', 0):g} GPUs; a bag asks for {cpus_per_bag:g} CPUs and "
                                   f"{gpus_per_bag:g} GPUs (--cpus-per-bag, --gpus-per-bag), so none would ever start")
        self._task = ray.remote(evaluate_bag).options(num_cpus=cpus_per_bag, num_gpus=gpus_per_bag,
                                                      max_retries=system_retries, retry_exceptions=False)
        self._pending: dict[Any, Submission] = {}
        self.description = (f"Ray ({resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs; "
                            f"{cpus_per_bag:g} CPU, {gpus_per_bag:g} GPU per bag)")

    def submit(self, item: Submission, settings: ReplaySettings) -> None:
        ref = self._task.remote(item.job, str(item.bag_dir), settings)
        self._pending[ref] = item

    def next_done(self) -> tuple[Submission, BagOutcome]:
        ray = self._ray
        done, _ = ray.wait(list(self._pending), num_returns=1)
        ref = done[0]
        item = self._pending.pop(ref)
        try:
            return item, ray.get(ref)
        except Exception as exc:  # the worker or its node died more often than Ray retries
            return item, BagOutcome(name=item.job.name, input_bag=str(item.job.input_bag), status=FAILED,
                                    reason=f"the Ray task failed: {type(exc).__name__}: {str(exc).splitlines()[0]}",
                                    retryable=False)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def close(self) -> None:
        for ref in list(getattr(self, "_pending", {})):
            self._ray.cancel(ref, force=True)
        self._pending = {}
        if self._owns and self._ray.is_initialized():
            self._ray.shutdown()
            self._owns = False


def _worker_env(cpus_per_bag: float) -> dict[str, str]:
    """What a local Ray instance's workers need: the thread policy sized to one bag's CPUs (set before their
    libraries load; a bag's `threads` counts of 0 then mean that share) and the driver's iggt_ros."""
    from iggt_ros.threads import CPU_SHARE_VARIABLE, environment

    share = max(1, int(cpus_per_bag))
    env = {**environment(ThreadsConfig(), cpus=share), CPU_SHARE_VARIABLE: str(share)}
    if os.environ.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env
