"""One thread policy for the whole process, applied by every entry point before the libraries load.

A robot's CPU is shared with camera drivers, navigation and the DDS stack. The libraries this package
runs on each keep a pool of worker threads, and by default those threads spin while they wait for the
next parallel region: PyTorch's and numba's OpenMP runtimes (libgomp), OpenBLAS, ONNX Runtime. On an
idle machine spinning saves a few microseconds per region; on a busy one the kernel deschedules a
spinning thread, every region then waits for it, and a window takes many times its idle time
(benchmarks/results/contention.md). The policy makes those threads sleep while they wait (OpenMP's
passive wait policy, ONNX Runtime without spinning), keeps numpy's OpenBLAS to one thread (its
products here are too small to gain from more), and sizes every pool to the CPUs this process may use.

Most of these settings are read once, when a library loads: `environment()` gives the variables to set
before then, and `prepare_process()` sets them at the top of an entry point. Variables the user has set
in the environment are left as they are and win. `apply_runtime()` then sets what can be changed in a
running process (PyTorch's threads, OpenBLAS pools loaded already), and `in_force()` reports what the
process actually runs with, so the node can log it.

This module imports only the standard library (and `iggt_ros.config`, which needs only yaml): it must
be importable before numpy and torch.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass

from iggt_ros.config import ThreadsConfig


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask: taskset, cgroups cpusets), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


CPU_SHARE_VARIABLE = "IGGT_CPU_SHARE"
"""Set by a launcher that gives the process fewer CPUs than it may run on (a Ray task's CPUs)."""


def cpu_share(environ: Mapping[str, str] | None = None) -> int:
    """The CPUs a count of 0 stands for: IGGT_CPU_SHARE when a launcher set it, else every CPU the process may use.

    OMP_NUM_THREADS is not read here: the policy itself sets it (to PyTorch's count)."""
    environ = os.environ if environ is None else environ
    try:
        value = int(environ.get(CPU_SHARE_VARIABLE, ""))
    except ValueError:
        value = 0
    return value if value > 0 else available_cpus()


@dataclass(frozen=True)
class ThreadCounts:
    """The policy's counts with 0 ("every CPU this process may use") resolved."""

    torch: int
    torch_interop: int
    pixel: int
    openblas: int
    onnxruntime: int
    onnxruntime_interop: int


def resolve(policy: ThreadsConfig, cpus: int | None = None) -> ThreadCounts:
    cpus = cpus or cpu_share()

    def count(value: int) -> int:
        return cpus if value <= 0 else value

    return ThreadCounts(torch=count(policy.torch), torch_interop=count(policy.torch_interop),
                        pixel=count(policy.pixel), openblas=count(policy.openblas),
                        onnxruntime=count(policy.onnxruntime), onnxruntime_interop=count(policy.onnxruntime_interop))


def environment(policy: ThreadsConfig, cpus: int | None = None) -> dict[str, str]:
    """The variables the libraries read when they load (the launch file passes them to the node); `cpus`: the
    process's share (default: `cpu_share()`)."""
    counts = resolve(policy, cpus)
    return {
        "OMP_WAIT_POLICY": "PASSIVE",  # libgomp of PyTorch and of numba's OpenMP layer: waiting threads sleep
        "OMP_NUM_THREADS": str(counts.torch),  # PyTorch's (and MKL's) default intra-op count
        "NUMBA_NUM_THREADS": str(max(counts.pixel, 1)),  # numba's pool; the passes use `pixel` of them
        "OPENBLAS_NUM_THREADS": str(counts.openblas),
    }


def prepare_process(policy: ThreadsConfig | None = None, environ: MutableMapping[str, str] | None = None) -> dict:
    """Set the policy's variables that the environment does not already set; returns those it set.

    Call it before numpy, torch, numba or onnxruntime are imported: they read these once, at load."""
    environ = os.environ if environ is None else environ
    wanted = environment(policy or ThreadsConfig())
    applied = {key: value for key, value in wanted.items() if key not in environ}
    environ.update(applied)
    return applied


def policy_from_argv(argv: Sequence[str]) -> ThreadsConfig:
    """The `threads` section of the `--config FILE` among a command's arguments (defaults without one).

    Read before the command's own parser runs, because the parser's module imports the libraries. A file
    that does not load gives the defaults here; the command reports the error when it loads it."""
    from iggt_ros.config import ConfigError, load_config

    path = None
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            path = argv[i + 1]
        elif arg.startswith("--config="):
            path = arg.split("=", 1)[1]
    if path is None:
        return ThreadsConfig()
    try:
        return load_config(path).threads
    except (ConfigError, OSError):
        return ThreadsConfig()


def apply_runtime(policy: ThreadsConfig) -> None:
    """Set what a running process can still change: PyTorch's thread counts and the OpenBLAS pools loaded.

    PyTorch is only touched when it is already imported (an oracle replay need not load it); the
    inter-op count can be set once per process, before any inter-op work, and is left when it is too late."""
    counts = resolve(policy)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(counts.torch)
        if torch.get_num_interop_threads() != counts.torch_interop:
            # once the inter-op pool has started it stays as it is (in_force reports it)
            with contextlib.suppress(RuntimeError):
                torch.set_num_interop_threads(counts.torch_interop)
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # pragma: no cover - installed with scikit-learn, which hdbscan needs
        return
    ThreadpoolController().select(internal_api="openblas").limit(limits=counts.openblas)


def onnxruntime_options(policy: ThreadsConfig, options) -> None:
    """Thread counts of an `onnxruntime.SessionOptions`, and no spinning: ONNX Runtime's pools spin by default."""
    counts = resolve(policy)
    options.intra_op_num_threads = counts.onnxruntime
    options.inter_op_num_threads = counts.onnxruntime_interop
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")


def in_force() -> dict[str, object]:
    """What the process runs with now (environment as the libraries saw it at load, live thread counts)."""
    report: dict[str, object] = {"cpus": available_cpus(),
                                 "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "(library default: spin)")}
    torch = sys.modules.get("torch")
    if torch is not None:
        report["torch"] = torch.get_num_threads()
        report["torch_interop"] = torch.get_num_interop_threads()
    numba = sys.modules.get("numba")
    if numba is not None:
        report["numba_pool"] = numba.config.NUMBA_NUM_THREADS
    try:
        from threadpoolctl import threadpool_info
    except ImportError:  # pragma: no cover
        return report
    blas = sorted({i["num_threads"] for i in threadpool_info() if i.get("internal_api") == "openblas"})
    if blas:
        report["openblas"] = blas[0] if len(blas) == 1 else blas
    return report


def describe(policy: ThreadsConfig) -> str:
    """One log line: the policy and, where it differs from the policy, what is in force."""
    counts = resolve(policy)
    live = in_force()
    text = (f"thread policy: waiting threads sleep, torch {counts.torch} (+{counts.torch_interop} inter-op), "
            f"per-pixel passes {counts.pixel}, OpenBLAS {counts.openblas}, onnxruntime {counts.onnxruntime} "
            f"(+{counts.onnxruntime_interop} inter-op) on {live['cpus']} CPUs")
    if live["OMP_WAIT_POLICY"] != "PASSIVE":
        text += (f"; in force: OMP_WAIT_POLICY={live['OMP_WAIT_POLICY']} (from the environment the process started "
                 "with: OpenMP threads spin while they wait, many times slower when other processes use the cores)")
    for key, want in (("torch", counts.torch), ("openblas", counts.openblas)):
        if key in live and live[key] != want:
            text += f"; in force: {key} {live[key]}"
    return text
