"""The GPU check (benchmarks/gpu_check.py) runs end to end: here on the CPU with the tiny architecture.

On a CUDA machine the same script runs the official architecture; this dry run holds every step to
producing its results in the one output folder, so the single call a GPU machine gets is not spent on
a script error.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    module = load_script()
    code = module.main(["--model", "tiny", "--device", "cpu", "--size", "140x84", "--sizes", "2,3",
                        "--repeats", "1", "--pipeline-window", "4", "--pipeline-windows", "3",
                        "--out", str(out)])
    return code, out, json.loads((out / "gpu_check.json").read_text())


def test_dry_run_writes_every_result_into_one_folder(dry_run):
    code, out, data = dry_run
    assert code == 0, data["errors"]
    assert sorted(p.name for p in out.iterdir()) == ["environment.txt", "gpu_check.json", "gpu_check.md"]
    assert data["errors"] == [] and data["skipped"] == []
    assert "torch" in (out / "environment.txt").read_text()


def test_model_latency_and_parity_for_every_window_size_and_precision(dry_run):
    _, out, data = dry_run
    measured = {(r["S"], r["precision"]) for r in data["model"] if "error" not in r}
    assert measured == {(2, "bf16"), (2, "fp32"), (3, "bf16"), (3, "fp32")}
    assert all(r["forward_ms_median"] > 0 for r in data["model"])
    assert [p["S"] for p in data["parity"]] == [2, 3]
    for p in data["parity"]:
        # bf16 differs from fp32, but only a little: every output is compared
        assert all(math.isfinite(p[name]["rel_l2"]) and p[name]["rel_l2"] < 0.5 for name in load_script().OUTPUTS)
        assert p["instance_feature_cosine"]["mean"] > 0.9
    md = (out / "gpu_check.md").read_text()
    assert "| 3 | bf16 | 140x84 |" in md and "feature cosine" in md


def test_pipeline_per_window_with_the_model_and_with_pixel_passes_on_torch(dry_run):
    _, _, data = dry_run
    cases = [(e["case"], e["pixel_device"]) for e in data["pipeline"]]
    assert len(cases) == 3
    assert cases[0][0].startswith("tiny model") and cases[1][1] == "cpu" and cases[2][1] == "numpy"
    for entry in data["pipeline"]:
        assert entry["windows"] == 2  # the first window (warm-up) is left out
        assert {"inference", "clustering", "assignment", "postprocess"} <= set(entry["stages_ms_median"])


def test_time_limit_skips_the_remaining_steps(tmp_path):
    module = load_script()
    code = module.main(["--model", "tiny", "--device", "cpu", "--size", "140x84", "--sizes", "2",
                        "--time-limit", "0", "--out", str(tmp_path)])
    data = json.loads((tmp_path / "gpu_check.json").read_text())
    assert code == 0 and data["model"] == [] and data["pipeline"] == []
    assert len(data["skipped"]) == 5 and all("time limit" in s for s in data["skipped"])


def test_without_cuda_the_default_run_says_what_to_do(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the default run is the real check")
    assert load_script().main(["--out", str(tmp_path)]) == 2
    assert "--device cpu --model tiny" in capsys.readouterr().err


def test_model_step_runs_with_only_pytorch_installed(tmp_path):
    """pyyaml and scipy unimportable (a fresh CUDA machine with PyTorch only): the module imports, the model
    step measures, and the pipeline step is skipped naming what is missing."""
    import subprocess
    import sys

    code = (
        "import sys, importlib.util\n"
        "sys.modules['yaml'] = None; sys.modules['scipy'] = None\n"
        f"spec = importlib.util.spec_from_file_location('gpu_check', {str(SCRIPT)!r})\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        "sys.exit(module.main(['--model', 'tiny', '--device', 'cpu', '--size', '140x84', '--sizes', '2',\n"
        f"                     '--repeats', '1', '--out', {str(tmp_path)!r}]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads((tmp_path / "gpu_check.json").read_text())
    assert data["errors"] == []
    assert {(r["S"], r["precision"]) for r in data["model"]} == {(2, "bf16"), (2, "fp32")}
    assert any(s.startswith("pipeline: needs yaml") for s in data["skipped"]), data["skipped"]
    assert data["weights_gib"] > 0 and "Peak allocated: every PyTorch tensor" in (tmp_path / "gpu_check.md").read_text()


def test_tensorrt_check_without_a_gpu_says_so(tmp_path, capsys):
    """benchmarks/trt_check.py needs CUDA and TensorRT; here it stops at once with exit code 2 and a reason."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the check itself runs there")
    spec = importlib.util.spec_from_file_location("trt_check", SCRIPT.with_name("trt_check.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--out", str(tmp_path)]) == 2
    assert "needs a GPU with TensorRT 10" in capsys.readouterr().err
    layers = [{"Name": "aggregator.frame_blocks.0.attn/node_Softmax_342"},
              {"Name": "{ForeignNode[aggregator.global_blocks.0.attn/node_MatMul_1...node_MatMul_3]}"}]
    verdict = module.attention_fusion(layers)
    assert verdict["unfused_attention_softmax_layers"] == 1 and not verdict["fused"]
    assert module.attention_fusion(layers[1:])["fused"]
