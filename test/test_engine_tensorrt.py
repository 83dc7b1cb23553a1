"""TensorRT plans built from the exported ONNX, run against PyTorch on the GPU.

These need a CUDA device and the tensorrt package; elsewhere the whole module skips. (The cache-key
and compatibility rules are tested without CUDA in test_engine_plan_cache.py.)
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
tensorrt = pytest.importorskip("tensorrt")
pytest.importorskip("onnxscript")
if not torch.cuda.is_available():
    pytest.skip("TensorRT tests need a CUDA device", allow_module_level=True)

from iggt_ros.config import EngineConfig  # noqa: E402
from iggt_ros.engine.base import EngineError  # noqa: E402
from iggt_ros.engine.export import export_onnx, export_to_cache, random_batch, reference_outputs  # noqa: E402
from iggt_ros.engine.factory import create_engine  # noqa: E402
from iggt_ros.engine.plan_cache import PlanMetadata  # noqa: E402
from iggt_ros.engine.postprocess import OUTPUT_NAMES  # noqa: E402
from iggt_ros.engine.tensorrt_build import BuildSettings, build_plan  # noqa: E402
from iggt_ros.engine.tensorrt_engine import TensorRTEngine  # noqa: E402
from iggt_ros.engine.torch_engine import TorchEngine  # noqa: E402
from iggt_ros.model import Iggt, IggtModelConfig  # noqa: E402
from iggt_ros.model.checkpoint import save_model  # noqa: E402

SIZE = (56, 84)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("trt")
    torch.manual_seed(0)
    model = Iggt(IggtModelConfig.tiny()).eval()
    weights = save_model(model, root / "tiny.safetensors")
    onnx_file = export_onnx(model, root / "model.onnx", SIZE, max_frames=4)
    plans = {}
    variants = {"fp32": ("fp32", "strong"), "fp16": ("fp16", "strong")}
    if hasattr(tensorrt.BuilderFlag, "FP16"):  # weakly typed builds exist up to TensorRT 10
        variants["fp16-weak"] = ("fp16", "weak")
    for key, (precision, typing) in variants.items():
        settings = BuildSettings(profiles=((2, 2, 2), (1, 3, 4)), precision=precision, workspace_bytes=1 << 30,
                                 timing_cache=root / "timing.cache", typing=typing)
        plans[key] = root / f"{key}.plan"
        build_plan(onnx_file, plans[key], settings, "test-hash")
    return model, weights, plans, root


def _errors(model, plan, frames):
    engine = TensorRTEngine(plan)
    batch = random_batch(frames, SIZE, seed=frames)
    got = engine.run(batch)
    want = reference_outputs(model, batch, "cuda")
    return {name: (np.abs(g - w), np.abs(w)) for name, g, w in zip(OUTPUT_NAMES, got, want, strict=True)}


@pytest.mark.parametrize("frames", [2, 3])
def test_fp32_plan_matches_pytorch(built, frames):
    model, _, plans, _ = built
    for name, (diff, ref) in _errors(model, plans["fp32"], frames).items():
        # FP32 plans are built with TF32 off; the tolerance covers kernel and accumulation-order differences.
        assert np.all(diff <= 1e-3 + 1e-2 * ref), f"{name}: max abs {diff.max():.3e}"


@pytest.mark.parametrize("variant", ["fp16", "fp16-weak"])
def test_fp16_plan_keeps_geometry_close(built, variant):
    model, _, plans, _ = built
    if variant not in plans:
        pytest.skip(f"TensorRT {tensorrt.__version__} has no weakly typed builds")
    errors = _errors(model, plans[variant], 2)
    for name, (diff, ref) in errors.items():
        assert np.isfinite(diff).all(), name
        assert np.median(diff / (ref + 1e-3)) < 0.05, f"{name}: median rel {np.median(diff / (ref + 1e-3)):.3e}"


def test_tensorrt_engine_prediction_matches_torch_engine(built):
    model, _, plans, _ = built
    images = np.random.default_rng(0).integers(0, 256, (2, *SIZE, 3), dtype=np.uint8)
    a = TorchEngine(model, SIZE, device="cuda").infer(images)
    b = TensorRTEngine(plans["fp32"]).infer(images)
    assert b.engine == "tensorrt-fp32"
    for field in ("extrinsics", "depth", "world_points", "instance_features"):
        np.testing.assert_allclose(getattr(b, field), getattr(a, field), rtol=1e-2, atol=1e-3, err_msg=field)


def test_window_size_outside_every_profile_is_refused(built):
    _, _, plans, _ = built
    with pytest.raises(EngineError, match="S=5"):
        TensorRTEngine(plans["fp32"]).run(random_batch(5, SIZE))


def test_plan_of_another_tensorrt_version_is_refused_before_loading(built, tmp_path):
    _, _, plans, _ = built
    plan = tmp_path / "engine.plan"
    shutil.copy(plans["fp32"], plan)
    meta = json.loads(PlanMetadata.sidecar(plans["fp32"]).read_text())
    meta["device"]["tensorrt_version"] = "0.0.1"
    PlanMetadata.sidecar(plan).write_text(json.dumps(meta))
    with pytest.raises(EngineError, match="TensorRT 0.0.1 built it"):
        TensorRTEngine(plan)


def test_factory_builds_only_on_request_then_finds_the_plan(built, tmp_path):
    _, weights, _, _ = built
    config = EngineConfig(backend="tensorrt", checkpoint=str(weights), device="cuda", precision="fp16",
                          cache_dir=str(tmp_path))
    with pytest.raises(EngineError, match="iggt-ros export"):
        create_engine(config, input_size=SIZE, window_sizes=(2,))
    result = export_to_cache(config, SIZE, window_sizes=(2,), tensorrt=True)
    assert result.plan_path is not None and result.plan_path.is_file()
    assert json.loads(Path(f"{result.plan_path}.parity.json").read_text())["frames"] == 2
    engine = create_engine(config, input_size=SIZE, window_sizes=(2,))
    assert isinstance(engine, TensorRTEngine) and engine.input_size == SIZE
