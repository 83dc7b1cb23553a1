"""The training loop: windows in, AdamW steps, checkpoints, CSV log and loss curves out.

One loop serves both uses: training the tiny model from scratch on synthetic scenes drawn on
the fly, and fine-tuning any model (the official one on a GPU) on a dataset folder, in one
process or data-parallel over several under `torchrun` (`iggt_ros.train.distributed`).

The loss of a step is the mean over its windows of each window's loss, and each window's random
draws (contrastive pixel samples; drop-path too when windows are passed one at a time, see
`TrainConfig.micro_batch`) are seeded by its step and its index in the global batch. So the
gradient of a step does not depend on how the batch is split into processes or passes.
"""

from __future__ import annotations

import contextlib
import csv
import math
import time
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from tqdm import tqdm

from iggt_ros.model import Iggt
from iggt_ros.model.checkpoint import save_model
from iggt_ros.train import distributed
from iggt_ros.train.batch import TrainBatch, TrainWindow
from iggt_ros.train.distributed import DistributedContext, DistributedError, ShardedSource
from iggt_ros.train.losses import LossWeights, iggt_loss, normalize_truth
from iggt_ros.train.plots import plot_losses

LOG_COLUMNS = ("step", "seconds", "frames", "lr_backbone", "lr_heads", "loss", "camera", "depth", "points",
               "instance", "cpu_seconds")


class WindowSource(Protocol):
    """Anything that hands out batches of training windows by step index."""

    def batch(self, step: int, batch_size: int, progress: float) -> list[TrainWindow]: ...


@dataclass
class TrainConfig:
    """Optimisation settings. The backbone learns slower than the heads, as in the IGGT paper."""

    steps: int = 3000
    batch_size: int = 1
    """Windows per step over all processes (the global batch); each of N processes trains on batch_size / N."""
    micro_batch: int = 0
    """Windows per forward/backward pass (gradients accumulate over the passes of a step); 0: a process's
    whole share at once. Smaller passes need less memory; with 1 every random draw of a window depends only
    on its step and global index, so a run gives the same weights with any number of processes."""
    lr_backbone: float = 5e-4
    lr_heads: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 100
    min_lr_ratio: float = 0.05
    """Cosine decay ends at this fraction of the peak learning rates."""
    grad_clip: float = 1.0
    checkpoint_every: int = 100
    time_limit_s: float | None = None
    """Stop (and checkpoint) once this much wall time has passed; the schedule still runs on `steps`."""
    cpu_limit_s: float | None = None
    """Stop (and checkpoint) once the run has used this much CPU time (this process, all its threads, summed
    over resumed invocations). On a shared machine wall time depends on the neighbours; CPU time does not, so
    budgets in CPU time compare designs fairly."""
    budget_marks_s: tuple[float, ...] = ()
    """CPU-time budgets at which to keep a copy of the weights (`budget_<minutes>m.safetensors`)."""
    threads: int | None = None
    prefetch: int = 0
    """Worker processes rendering batches ahead, two batches in flight each (0: render in the training loop).
    Synthetic windows cost about as much to render as a CPU step takes, so one worker overlaps the two; a GPU
    step is far cheaper, so a GPU run needs a worker per spare core."""
    device: str = "cpu"
    seed: int = 0
    loss: LossWeights = field(default_factory=LossWeights)


def learning_rate_factor(step: int, config: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to `min_lr_ratio`."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    t = min(1.0, (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps))
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))


def start_instance_features_centered(model: Iggt, images: torch.Tensor) -> None:
    """Data-dependent start for the instance head's last layer before training from scratch.

    The last 1x1 convolution reads ReLU activations, whose mean is positive, so with the default
    initialisation every pixel's raw 8-D output is one large shared vector plus a small
    image-dependent part: the normalised features all point the same way and the contrastive
    loss starts collapsed. Setting the bias to minus the layer's mean response on `images`
    ([B,S,3,H,W] or [S,3,H,W]) removes the shared part, so features start out varying with the
    image.
    """
    last = model.part_head.scratch.output_conv2[-1]
    captured: list[torch.Tensor] = []
    handle = last.register_forward_hook(lambda _m, _i, out: captured.append(out.detach()))
    try:
        with torch.no_grad():
            model(images)
    finally:
        handle.remove()
    with torch.no_grad():
        last.bias -= captured[0].mean(dim=(0, 2, 3))


def parameter_groups(model: Iggt, config: TrainConfig) -> list[dict]:
    """Aggregator (backbone) and everything else (camera, depth, point and instance heads)."""
    backbone = [p for n, p in model.named_parameters() if p.requires_grad and n.startswith("aggregator.")]
    heads = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("aggregator.")]
    return [
        {"params": backbone, "lr": config.lr_backbone, "base_lr": config.lr_backbone, "name": "backbone"},
        {"params": heads, "lr": config.lr_heads, "base_lr": config.lr_heads, "name": "heads"},
    ]


class Trainer:
    """Runs the loop and owns the output folder (checkpoints, log, curves, exported weights).

    Files in `out_dir`: `last.pt` (model, optimiser, step: enough to resume), `model.safetensors`
    (fp16 weights with the config, the shippable artefact), `train_log.csv`, `losses.png`.
    """

    def __init__(self, model: Iggt, source: WindowSource, config: TrainConfig, out_dir: str | Path,
                 context: DistributedContext | None = None) -> None:
        self.context = context if context is not None else distributed.current()
        self.device = self.context.device(config.device)
        self.local_batch = self.context.local_batch(config.batch_size)
        if config.micro_batch < 0:
            raise ValueError(f"micro_batch must be >= 0 (0: whole batch per pass), got {config.micro_batch}")
        self.model = model.to(self.device)
        self.source = source if not self.context.distributed else ShardedSource(source, self.context.rank,
                                                                                 self.context.world_size)
        self.config = config
        self.out_dir = Path(out_dir)
        if self.context.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        self.optimizer = torch.optim.AdamW(parameter_groups(self.model, config), weight_decay=config.weight_decay)
        self.parallel: torch.nn.Module = self.model
        if self.context.distributed:
            from torch.nn.parallel import DistributedDataParallel

            # Starts from rank 0's weights (broadcast here) and averages the gradients of every backward pass.
            self.parallel = DistributedDataParallel(
                self.model, device_ids=[self.device] if self.device.startswith("cuda") else None)
        self.step = 0
        self.elapsed_s = 0.0
        self.cpu_s = 0.0
        self.generator = torch.Generator().manual_seed(config.seed)

    # ------------------------------------------------------------------ files
    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / "last.pt"

    @property
    def log_path(self) -> Path:
        return self.out_dir / "train_log.csv"

    def save_checkpoint(self) -> None:
        """Write the resumable checkpoint (atomically) and the fp16 weights, then redraw the curves.

        Only rank 0 writes: every rank holds the same weights and optimiser state, so the checkpoint
        is the same whatever the number of processes, and resumes with any number.
        """
        if not self.context.is_main:
            return
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "step": self.step,
                 "elapsed_s": self.elapsed_s, "cpu_s": self.cpu_s, "config": asdict(self.config),
                 "model_config": self.model.config.to_dict(), "world_size": self.context.world_size}
        tmp = self.checkpoint_path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(self.checkpoint_path)
        self.model.config.extra = {**self.model.config.extra, "train_steps": self.step,
                                   "train_seconds": round(self.elapsed_s, 1),
                                   "train_cpu_seconds": round(self.cpu_s, 1)}
        save_model(self.model, self.out_dir / "model.safetensors", dtype=torch.float16)
        plot_losses(self.log_path, self.out_dir / "losses.png")

    def save_budget_weights(self, mark_s: float) -> Path | None:
        """Keep the fp16 weights reached at a CPU-time budget, for comparing designs at equal cost."""
        if not self.context.is_main:
            return None
        path = self.out_dir / f"budget_{mark_s / 60:g}m.safetensors"
        self.model.config.extra = {**self.model.config.extra, "train_steps": self.step,
                                   "train_seconds": round(self.elapsed_s, 1), "train_cpu_seconds": round(self.cpu_s, 1)}
        save_model(self.model, path, dtype=torch.float16)
        return path

    def resume(self) -> bool:
        """Continue from `last.pt` when it exists; False when starting fresh.

        Under torchrun every process reads the checkpoint; they must all find the same one (a
        process on a node that cannot see rank 0's `--out` would start from scratch and train a
        different model), so a disagreement stops every process with the reason.
        """
        found = self.checkpoint_path.exists()
        if found:
            state = torch.load(self.checkpoint_path, map_location=self.device, weights_only=False)
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.step = int(state["step"])
            self.elapsed_s = float(state.get("elapsed_s", 0.0))
            self.cpu_s = float(state.get("cpu_s", 0.0))
        if not self.context.agree(self.step if found else -1):
            raise DistributedError(f"the training processes found different checkpoints in {self.out_dir} (process "
                                   f"{self.context.rank}: {'step ' + str(self.step) if found else 'none'}); put "
                                   "--out on a file system every node sees, at the same path")
        return found

    def _append_log(self, row: dict) -> None:
        if not self.context.is_main:
            return
        new = not self.log_path.exists()
        columns = LOG_COLUMNS
        if not new:  # a log begun before a column was added keeps its header
            with open(self.log_path, newline="") as fh:
                columns = tuple(next(csv.reader(fh), LOG_COLUMNS))
        with open(self.log_path, "a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow({k: row.get(k, "") for k in columns})

    # ------------------------------------------------------------------ loop
    def window_seed(self, index: int) -> int:
        """Seed of the random draws of window `index` (in the global batch) at the current step.

        Window 0 uses the step's seed, so a one-window batch draws what it always did; a resumed
        run repeats the uninterrupted one.
        """
        step_seed = self.config.seed * 1_000_003 + self.step
        return step_seed if index == 0 else step_seed * 100_003 + index

    def train_step(self, batch: TrainBatch) -> dict[str, float]:
        """One optimisation step on this process's share of the batch; returns the loss terms (mean over ranks).

        The windows go through the model `micro_batch` at a time; each pass's gradient is weighted by its
        share of the windows, so the accumulated gradient is the mean over this process's windows, and
        DistributedDataParallel averages that over the processes (it synchronises on the last pass only).
        """
        factor = learning_rate_factor(self.step, self.config)
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor
        self.model.train()
        batch = batch.to(self.device)
        n = batch.images.shape[0]
        first = self.context.rank * n
        chunk = self.config.micro_batch or n
        progress = self.step / max(1, self.config.steps)
        self.optimizer.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        for start in range(0, n, chunk):
            part = _slice_batch(batch, start, min(n, start + chunk))
            last = start + chunk >= n
            torch.manual_seed(self.window_seed(first + start))  # drop-path of this pass
            sync = contextlib.nullcontext() if last or not self.context.distributed else self.parallel.no_sync()
            with sync:
                truth = normalize_truth(part.world_from_camera, part.intrinsics, part.depth)
                truth = type(truth)(**{k: v.to(self.device) for k, v in vars(truth).items()})
                out = self.parallel(part.images)
                loss = None
                for i in range(part.images.shape[0]):
                    self.generator.manual_seed(self.window_seed(first + start + i))
                    terms = iggt_loss(_slice_outputs(out, i), _slice_truth(truth, i), part.instance_ids[i:i + 1],
                                      self.config.loss, self.generator, progress)
                    loss = terms.total if loss is None else loss + terms.total
                    for k, v in terms.as_dict().items():
                        sums[k] = sums.get(k, 0.0) + v
                (loss / n).backward()
        if self.config.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.optimizer.step()
        return self.context.mean({k: v / n for k, v in sums.items()})

    def _batches(self, stop: int):
        """Yield (step, windows) from the current step to `stop`, rendered ahead when `prefetch` asks for it.

        Every batch is a pure function of its step and progress, so prefetching changes no result.
        """
        cfg = self.config
        progress = lambda step: step / max(1, cfg.steps)  # noqa: E731
        if not cfg.prefetch:
            for step in range(self.step, stop):
                yield step, self.source.batch(step, self.local_batch, progress(step))
            return
        import multiprocessing

        with ProcessPoolExecutor(cfg.prefetch, mp_context=multiprocessing.get_context("spawn")) as pool:
            pending: deque[tuple[int, Future]] = deque()
            next_step = self.step
            while True:
                while len(pending) < 2 * cfg.prefetch and next_step < stop:
                    pending.append((next_step, pool.submit(self.source.batch, next_step, self.local_batch,
                                                           progress(next_step))))
                    next_step += 1
                if not pending:
                    return
                step, future = pending.popleft()
                yield step, future.result()

    def run(self, until: int | None = None) -> int:
        """Train until `steps`, the time limit, or step `until` of this call; returns the last step reached.

        Stopping at `until` checkpoints there, so a later `resume()` + `run()` continues the same schedule.
        """
        cfg = self.config
        stop = cfg.steps if until is None else min(cfg.steps, until)
        if cfg.cpu_limit_s is not None and self.cpu_s >= cfg.cpu_limit_s:
            return self.step  # a resumed run whose CPU budget is already spent
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        start = time.monotonic() - self.elapsed_s
        cpu_start = time.process_time() - self.cpu_s
        marks = sorted(m for m in cfg.budget_marks_s if m > self.cpu_s)
        bar = tqdm(total=cfg.steps, initial=self.step, desc="train", unit="step", dynamic_ncols=True,
                   disable=not self.context.is_main)
        for step, windows in self._batches(stop):
            assert step == self.step
            batch = TrainBatch.stack(windows)
            terms = self.train_step(batch)
            self.step += 1
            self.elapsed_s = time.monotonic() - start
            self.cpu_s = time.process_time() - cpu_start
            lrs = [g["lr"] for g in self.optimizer.param_groups]
            self._append_log({"step": self.step, "seconds": round(self.elapsed_s, 2), "frames": batch.images.shape[1],
                              "cpu_seconds": round(self.cpu_s, 2),
                              "lr_backbone": lrs[0], "lr_heads": lrs[1], **terms})
            bar.update(1)
            bar.set_postfix(loss=f"{terms['loss']:.3f}", inst=f"{terms['instance']:.3f}", S=batch.images.shape[1])
            while marks and self.cpu_s >= marks[0]:
                self.save_budget_weights(marks.pop(0))
            out_of_time = self.context.any((cfg.time_limit_s is not None and self.elapsed_s >= cfg.time_limit_s)
                                           or (cfg.cpu_limit_s is not None and self.cpu_s >= cfg.cpu_limit_s))
            if self.step % cfg.checkpoint_every == 0 or self.step == stop or out_of_time:
                self.save_checkpoint()
            if out_of_time:
                break
        bar.close()
        self.context.barrier()  # the others wait until rank 0 has written the last checkpoint
        return self.step


def _slice_batch(batch: TrainBatch, start: int, stop: int) -> TrainBatch:
    return TrainBatch(*(t[start:stop] for t in (batch.images, batch.depth, batch.instance_ids, batch.intrinsics,
                                                  batch.world_from_camera)))


def _slice_outputs(out: dict, i: int) -> dict:
    """Window `i` of the model's outputs, batch dimension kept (the camera head gives a list per iteration)."""
    return {k: [t[i:i + 1] for t in v] if isinstance(v, list) else v[i:i + 1] for k, v in out.items()}


def _slice_truth(truth, i: int):
    return type(truth)(**{k: v[i:i + 1] for k, v in vars(truth).items()})


def compact_checkpoint(src: str | Path, dst: str | Path) -> Path:
    """Copy a resumable checkpoint with Adam's moments in bfloat16, to commit it under 20 MB.

    The weights stay float32; `torch.optim` casts the moments back to the parameters' dtype when a
    run resumes, so training continues in float32 (the moments lose precision once, not the weights).
    """
    state = torch.load(src, map_location="cpu", weights_only=False)
    for slot in state["optimizer"]["state"].values():
        for key in ("exp_avg", "exp_avg_sq"):
            if key in slot:
                slot[key] = slot[key].to(torch.bfloat16)
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, dst)
    return dst
