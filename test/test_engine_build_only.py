"""Two-step deployment: the build-only step imports no PyTorch model, and each step's peak memory.

Each step runs in its own process (benchmarks/deploy_memory.py), so what one step imports cannot
hide in the other. The ONNX check of the build-only step runs with `iggt_ros.model` and torch made
unimportable; the TensorRT build itself runs with `iggt_ros.model` unimportable (torch stays: its
CUDA buffers feed the plan), and on a machine without TensorRT it stops at the clear refusal.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "deploy_memory.py"
pytestmark = pytest.mark.slow


def load_script():
    spec = importlib.util.spec_from_file_location("deploy_memory", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("deploy") / "bundle"
    step = load_script().run_step(["export", "--height", "56", "--width", "84", "--frames", "2", "--max-frames", "4",
                                   "--onnx-only", "--output-dir", str(folder)])
    return folder, step


def test_export_step_writes_the_bundle_with_the_model_loaded(exported):
    folder, step = exported
    assert step["rc"] == 0, step.get("error") or step["stderr"]
    assert step["model_loaded"] and step["peak_rss_mib"] > 0
    names = {p.name for p in folder.iterdir()}
    assert {"export.json", "model.onnx", "model.fp16.onnx", "reference.npz"} <= names
    assert json.loads((folder / "export.json").read_text())["mixed"]["fp16"]["file"] == "model.fp16.onnx"
    print(f"export step peak RSS {step['peak_rss_mib']:.0f} MiB")


def test_build_only_onnx_check_needs_neither_torch_nor_the_model(exported):
    folder, _ = exported
    step = load_script().run_step(["build-engine", str(folder), "--check-onnx-only"],
                                  blocked=["iggt_ros.model", "torch"])
    assert step["rc"] == 0, step.get("error") or step["stderr"]
    assert not step["torch_loaded"] and not step["model_loaded"]
    assert "model.fp16.onnx) vs PyTorch FP32 reference, S=2: PASS" in step["stdout"]
    print(f"build-only (ONNX check) peak RSS {step['peak_rss_mib']:.0f} MiB")


def test_build_only_plan_build_never_imports_the_model(exported, tmp_path):
    folder, _ = exported
    step = load_script().run_step(["build-engine", str(folder), "--frames", "2", "--output",
                                   str(tmp_path / "engine.plan")], blocked=["iggt_ros.model"])
    assert not step.get("model_loaded", True) or "error" in step
    try:
        import tensorrt  # noqa: F401
        import torch

        gpu = torch.cuda.is_available()
    except ImportError:
        gpu = False
    if gpu:
        assert step["rc"] == 0, step["stderr"]
        assert (tmp_path / "engine.plan").is_file() and "TensorRT vs PyTorch FP32 reference" in step["stdout"]
    else:
        assert step["rc"] == 1 and "tensorrt Python package" in step["stderr"], step
        assert not step["model_loaded"]
    assert "iggt_ros.model" not in step["stderr"]  # no attempt to import the blocked model


def test_build_only_refuses_a_folder_that_is_not_a_bundle(tmp_path):
    step = load_script().run_step(["build-engine", str(tmp_path), "--check-onnx-only"], blocked=["iggt_ros.model"])
    assert step["rc"] == 1 and "is not an export bundle" in step["stderr"]
