"""tools/train_cuda.sh: the prepared GPU training run resumes the committed study run and writes one folder.

Here it runs on the CPU (IGGT_TRAIN_DEVICE=cpu) for one step: the same script, arguments and files as on a
CUDA machine, only the device differs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
DESIGN = "tiny_fine_image"
"""The design whose study run the script continues by default."""


def test_script_resumes_the_committed_run_and_writes_its_outputs(tmp_path):
    committed = torch.load(REPO / "training" / DESIGN / "last.pt", map_location="cpu", weights_only=False)
    env = {**os.environ, "PYTHON": sys.executable, "IGGT_TRAIN_DEVICE": "cpu", "IGGT_TRAIN_BATCH": "1",
           "IGGT_TRAIN_MORE_STEPS": "1", "IGGT_TRAIN_CACHE_WINDOWS": "2"}
    env.pop("IGGT_TRAIN_DESIGN", None)
    done = subprocess.run(["bash", str(REPO / "tools" / "train_cuda.sh"), str(tmp_path), "600"], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    run = tmp_path / "run"
    state = torch.load(run / "last.pt", map_location="cpu", weights_only=False)
    assert state["step"] == committed["step"] + 1
    # the committed file keeps Adam's moments in bfloat16 (under 20 MB); resuming trains with them in float32
    moments = [v for s in state["optimizer"]["state"].values() for k, v in s.items() if k.startswith("exp_avg")]
    assert moments and all(m.dtype == torch.float32 for m in moments)
    for name in ("model.safetensors", "train_log.csv", "losses.png"):
        assert (run / name).exists(), name
    assert f"resuming {DESIGN} at step {committed['step']}" in done.stdout
    assert (tmp_path / "cache" / "cache.json").exists()


def test_script_names_the_committed_designs_when_asked_for_another(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "IGGT_TRAIN_DEVICE": "cpu", "IGGT_TRAIN_DESIGN": "no_such_design"}
    done = subprocess.run(["bash", str(REPO / "tools" / "train_cuda.sh"), str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and DESIGN in done.stderr
    assert not (tmp_path / "run").exists()


def test_script_refuses_without_cuda(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is visible: the refusal cannot happen here")
    env = {**os.environ, "PYTHON": sys.executable}
    env.pop("IGGT_TRAIN_DEVICE", None)
    done = subprocess.run(["bash", str(REPO / "tools" / "train_cuda.sh"), str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "IGGT_TRAIN_DEVICE=cpu" in done.stderr
    assert not (tmp_path / "run").exists()
