"""Data-parallel training under `torchrun`: process group, per-rank windows, averaged logging.

`torchrun --nproc_per_node N -m iggt_ros.cli train ...` starts N copies of the trainer and tells
each its place through environment variables (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
MASTER_PORT). `init_from_env` joins them into one process group (NCCL when training on CUDA,
gloo on the CPU); the trainer then wraps the model in DistributedDataParallel, which averages
the gradients of every step over the processes.

Every rank trains on a different part of the same global batch: window `i` of step `s` goes to
rank `i // per_rank`, and windows are pure functions of (seed, step, index), so no two ranks see
the same window, together they see exactly the windows one process would have seen, and a run can
be resumed with another number of processes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from iggt_ros.train.batch import TrainWindow

WORLD_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


class DistributedError(RuntimeError):
    """Distributed training cannot start as asked; the message says what to change."""


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands among the training processes (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    """'gloo' or 'nccl' when a process group is running; None in a single process."""

    @property
    def is_main(self) -> bool:
        """Rank 0 writes the checkpoints, the log and the curves; the others only train."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def device(self, requested: str) -> str:
        """The device of this rank: `cuda` means this node's GPU number `local_rank` under torchrun."""
        if self.distributed and requested == "cuda":
            return f"cuda:{self.local_rank}"
        return requested

    def local_batch(self, global_batch: int) -> int:
        """Windows per step on this rank; the global batch must split evenly across the ranks."""
        if global_batch % self.world_size:
            raise DistributedError(f"--batch-size {global_batch} is the global batch and must be a multiple of the "
                                   f"{self.world_size} training processes; use e.g. --batch-size "
                                   f"{self.world_size * max(1, global_batch // self.world_size)}")
        return global_batch // self.world_size

    # ---------------------------------------------------------------- collectives
    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """The mean of per-rank numbers (loss terms for the log); unchanged in a single process."""
        if not self.distributed:
            return values
        keys = sorted(values)
        t = torch.tensor([values[k] for k in keys], dtype=torch.float64)
        t = _all_reduce(t, dist.ReduceOp.SUM)
        return {k: float(v) / self.world_size for k, v in zip(keys, t.tolist(), strict=True)}

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on one (stop decisions must agree or the others hang)."""
        if not self.distributed:
            return flag
        t = _all_reduce(torch.tensor([1.0 if flag else 0.0], dtype=torch.float64), dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def agree(self, value: int) -> bool:
        """Whether every rank holds the same `value` (True in a single process)."""
        if not self.distributed:
            return True
        t = _all_reduce(torch.tensor([float(value), -float(value)], dtype=torch.float64), dist.ReduceOp.MAX)
        return bool(t[0].item() == -t[1].item())

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def _all_reduce(t: torch.Tensor, op: dist.ReduceOp) -> torch.Tensor:
    """All-reduce a small CPU tensor (moved to this rank's GPU and back under NCCL, which has no CPU path)."""
    if dist.get_backend() == "nccl":
        out = t.to(torch.device("cuda", torch.cuda.current_device()))
        dist.all_reduce(out, op=op)
        return out.cpu()
    dist.all_reduce(t, op=op)
    return t


def launched_by_torchrun() -> bool:
    """Whether the environment describes a process group of more than one process."""
    return all(k in os.environ for k in WORLD_ENV) and int(os.environ["WORLD_SIZE"]) > 1


def current() -> DistributedContext:
    """The context of the process group this process joined (single process when none)."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistributedContext()
    return DistributedContext(rank=dist.get_rank(), world_size=dist.get_world_size(),
                              local_rank=int(os.environ.get("LOCAL_RANK", dist.get_rank())),
                              backend=str(dist.get_backend()))


def init_from_env(device: str = "cpu") -> DistributedContext:
    """Join the process group torchrun described, or stay a single process when it described none.

    NCCL for CUDA training (one GPU per process, selected by LOCAL_RANK), gloo on the CPU.
    """
    if dist.is_available() and dist.is_initialized():
        return current()
    if not launched_by_torchrun():
        return DistributedContext()
    if not dist.is_available():
        raise DistributedError("this PyTorch build has no torch.distributed; install a standard PyTorch wheel")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        if not torch.cuda.is_available() or local_rank >= torch.cuda.device_count():
            raise DistributedError(f"process {os.environ['RANK']} wants GPU {local_rank}, but this node has "
                                   f"{torch.cuda.device_count()} visible; start torchrun with --nproc_per_node at "
                                   "most the number of GPUs per node, or train with --device cpu")
        torch.cuda.set_device(local_rank)
        backend = "nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend=backend)
    return current()


def shutdown(wait: bool = True) -> None:
    """Leave the process group (after the last checkpoint), so torchrun sees a clean exit.

    `wait=False` after an error: the other processes may never arrive, and torchrun stops them.
    """
    if dist.is_available() and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


@dataclass
class ShardedSource:
    """This rank's share of every global batch of a window source.

    Sources that build each window on its own (`frames_for_step` + `window`, as the synthetic
    scenes) render only this rank's windows; others are asked for the whole global batch and
    sliced, which is exact for any source whose batch is a pure function of the step.
    """

    source: object
    rank: int
    world_size: int

    def indices(self, batch_size: int) -> range:
        """Global window indices of this rank for a per-rank batch of `batch_size`."""
        return range(self.rank * batch_size, (self.rank + 1) * batch_size)

    def batch(self, step: int, batch_size: int, progress: float) -> list[TrainWindow]:
        src = self.source
        if hasattr(src, "frames_for_step") and hasattr(src, "window"):
            frames = src.frames_for_step(step, progress)
            return [src.window(step, i, frames, progress) for i in self.indices(batch_size)]
        windows = src.batch(step, batch_size * self.world_size, progress)
        return windows[self.rank * batch_size:(self.rank + 1) * batch_size]
