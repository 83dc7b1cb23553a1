"""Data-parallel training under torchrun: two gloo processes learn what one process learns from the same
global batch, rank 0 alone writes the checkpoint, and one process resumes it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from iggt_ros import cli
from iggt_ros.train.distributed import DistributedContext, DistributedError, ShardedSource, init_from_env, shutdown
from iggt_ros.train.losses import LossWeights
from iggt_ros.train.scenes import Curriculum, SyntheticWindowSource

# The tiny model at a small size; --micro-batch 1 seeds each window's random draws (drop-path, pixel samples)
# by its step and global index, which makes the split of the batch over processes irrelevant.
TRAIN_ARGS = ["--size", "56x84", "--frames", "2:2", "--samples", "128", "--warmup", "1", "--checkpoint-every",
              "100", "--micro-batch", "1", "--domain", "none", "--seed", "3"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(out: Path, processes: int, steps: int, batch: int = 2) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(processes),
               "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
               "-m", "iggt_ros.cli", "train", "--out", str(out), "--steps", str(steps), "--batch-size", str(batch),
               *TRAIN_ARGS]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # the limit only keeps a wedged process group from stalling the suite; the run takes seconds
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)


def _train(out: Path, steps: int, resume: bool = False, batch: int = 2) -> None:
    """One process, one thread as each torchrun process has: conv biases ahead of a BatchNorm get gradients
    that are pure rounding noise, which Adam scales up to full steps, so the thread count must match."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert cli.main(["train", "--out", str(out), "--steps", str(steps), "--threads", "1", "--batch-size",
                         str(batch), *TRAIN_ARGS, *(["--resume"] if resume else [])]) == 0
    finally:
        torch.set_num_threads(threads)


def _weights(out: Path) -> dict[str, torch.Tensor]:
    """The trained parameters (BatchNorm running statistics are buffers: DDP keeps rank 0's)."""
    from iggt_ros.model import Iggt, IggtModelConfig

    names = {n for n, _ in Iggt(IggtModelConfig.tiny()).named_parameters()}
    state = torch.load(out / "last.pt", weights_only=False)["model"]
    return {n: t for n, t in state.items() if n in names}


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=2e-5, rtol=1e-4), \
            f"{name}: max difference {float((a[name] - b[name]).abs().max()):.3g}"


@pytest.mark.slow
def test_two_gloo_processes_train_like_one_and_one_process_resumes(tmp_path):
    ddp, single = tmp_path / "ddp", tmp_path / "single"
    run = _torchrun(ddp, processes=2, steps=2)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    _train(single, steps=2)

    state = torch.load(ddp / "last.pt", weights_only=False)
    assert state["step"] == 2 and state["world_size"] == 2 and state["config"]["batch_size"] == 2
    # rank 0 wrote the log alone: one row per step, not one per process
    assert len((ddp / "train_log.csv").read_text().splitlines()) == 1 + 2
    trained = _weights(single)
    _assert_same_weights(_weights(ddp), trained)
    # training moved the weights, so the equality above is not that of two untouched models
    from iggt_ros.model import Iggt, IggtModelConfig

    torch.manual_seed(3)
    fresh = dict(Iggt(IggtModelConfig.tiny()).named_parameters())
    moved = [n for n in fresh if "aggregator" in n and not torch.allclose(fresh[n].detach(), trained[n], atol=1e-4)]
    assert moved

    # the two-process checkpoint continues in one process exactly as the one-process checkpoint does
    _train(ddp, steps=3, resume=True)
    _train(single, steps=3, resume=True)
    assert torch.load(ddp / "last.pt", weights_only=False)["step"] == 3
    _assert_same_weights(_weights(ddp), _weights(single))


@pytest.mark.slow
def test_accumulated_passes_in_each_process_match_one_process(tmp_path):
    """A global batch of 4: each of 2 processes makes two passes per step (DDP synchronises on the last).

    Summing four window gradients in another order rounds differently, and biases just ahead of a
    BatchNorm have a true gradient of zero, so Adam turns their rounding noise into small steps;
    the backbone and the weights as a whole must still match.
    """
    ddp, single = tmp_path / "ddp", tmp_path / "single"
    run = _torchrun(ddp, processes=2, steps=2, batch=4)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    _train(single, steps=2, batch=4)
    a, b = _weights(ddp), _weights(single)
    from iggt_ros.model import Iggt, IggtModelConfig

    torch.manual_seed(3)
    fresh = {n: p.detach() for n, p in Iggt(IggtModelConfig.tiny()).named_parameters()}
    moved = torch.cat([(b[n] - fresh[n]).flatten() for n in fresh]).norm()
    apart = torch.cat([(a[n] - b[n]).flatten() for n in fresh]).norm()
    assert apart < 1e-3 * moved, f"runs differ by {float(apart / moved):.2g} of the update"
    _assert_same_weights({n: t for n, t in a.items() if n.startswith("aggregator.")},
                         {n: t for n, t in b.items() if n.startswith("aggregator.")})


def _tiny_trainer(out: Path, context=None):
    from iggt_ros.model import Iggt, IggtModelConfig
    from iggt_ros.train.trainer import TrainConfig, Trainer

    torch.manual_seed(0)
    source = SyntheticWindowSource(56, 84, seed=1, domain=None,
                                   curriculum=Curriculum(min_frames=2, start_max_frames=2, end_max_frames=2))
    config = TrainConfig(steps=1, batch_size=2, warmup_steps=1, loss=LossWeights(samples=64))
    return Trainer(Iggt(IggtModelConfig.tiny()), source, config, out, context=context)


def _rank_main(rank: int, port: int, root: str) -> None:
    """One of two gloo processes (started by torch.multiprocessing.spawn): collectives and a resume that
    finds a checkpoint on rank 0 only."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    context = init_from_env("cpu")
    result = {"rank": context.rank, "backend": context.backend, "mean": context.mean({"loss": float(rank)}),
              "any": context.any(rank == 1), "agree_same": context.agree(5), "agree_different": context.agree(rank)}
    trainer = _tiny_trainer(Path(root) / ("with_checkpoint" if rank == 0 else "empty"), context)
    try:
        trainer.resume()
        result["resume"] = "resumed"
    except DistributedError as exc:
        result["resume"] = str(exc)
    (Path(root) / f"rank{rank}.json").write_text(json.dumps(result))
    shutdown()


def test_collectives_and_a_checkpoint_only_some_processes_see(tmp_path):
    single = _tiny_trainer(tmp_path / "with_checkpoint")  # a checkpoint where rank 0 looks, none where rank 1 does
    torch.save({"model": single.model.state_dict(), "optimizer": single.optimizer.state_dict(), "step": 1},
               single.checkpoint_path)
    torch.multiprocessing.spawn(_rank_main, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for r, result in enumerate(results):
        assert result["rank"] == r and result["backend"] == "gloo"
        assert result["mean"] == {"loss": 0.5} and result["any"] is True
        assert result["agree_same"] is True and result["agree_different"] is False
        # both stop with the reason instead of rank 1 silently training a fresh model
        assert "found different checkpoints" in result["resume"] and "file system every node sees" in result["resume"]


def test_ranks_share_each_global_batch_without_overlap():
    source = SyntheticWindowSource(28, 56, seed=5, domain=None,
                                   curriculum=Curriculum(min_frames=2, start_max_frames=2, end_max_frames=2))
    whole = source.batch(step=4, batch_size=4, progress=0.5)
    shares = [ShardedSource(source, rank, 2).batch(step=4, batch_size=2, progress=0.5) for rank in range(2)]
    together = [w for share in shares for w in share]
    assert len(together) == 4
    for a, b in zip(whole, together, strict=True):
        assert np.array_equal(a.rgb, b.rgb) and np.array_equal(a.instance_ids, b.instance_ids)
    assert not np.array_equal(shares[0][0].rgb, shares[1][0].rgb)


def test_sources_without_per_window_access_are_sliced_from_the_global_batch():
    class Numbered:
        def batch(self, step, batch_size, progress):
            return [(step, i) for i in range(batch_size)]

    assert ShardedSource(Numbered(), 1, 3).batch(7, 2, 0.0) == [(7, 2), (7, 3)]


def test_a_global_batch_that_does_not_split_evenly_is_refused_with_the_fix():
    context = DistributedContext(rank=1, world_size=2)
    assert context.local_batch(4) == 2 and not context.is_main
    with pytest.raises(DistributedError, match="multiple of the 2 training processes"):
        context.local_batch(3)
    assert context.device("cuda") == "cuda:0" and DistributedContext().device("cuda") == "cuda"
