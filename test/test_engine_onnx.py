"""ONNX export of the parity-fixture model: a clean graph, ONNX Runtime equal to PyTorch on every output,
OnnxRuntimeEngine equal to TorchEngine, the parity report, and the engine cache lookup.

One export (the parity fixture's 24-layer model at 112x112, S dynamic) is shared by every test here.
The fixture lives outside the repository: IGGT_PARITY_DIR, default <repo>/../shared/reference/parity;
without it the tests skip unless IGGT_REQUIRE_PARITY=1 (CI).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from iggt_ros.config import EngineConfig  # noqa: E402
from iggt_ros.engine import plan_cache  # noqa: E402
from iggt_ros.engine.base import EngineError  # noqa: E402
from iggt_ros.engine.export import check_onnx_graph, export_model, random_batch, reference_outputs  # noqa: E402
from iggt_ros.engine.factory import create_engine  # noqa: E402
from iggt_ros.engine.onnxruntime_engine import OnnxRuntimeEngine  # noqa: E402
from iggt_ros.engine.postprocess import OUTPUT_NAMES  # noqa: E402
from iggt_ros.engine.tensorrt_build import DEFAULT_FP32_LAYER_TYPES, DEFAULT_FP32_PATTERNS, keeps_fp32  # noqa: E402
from iggt_ros.engine.torch_engine import TorchEngine  # noqa: E402
from iggt_ros.engine.weights import file_sha256, load_engine_model  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SIZE = (112, 112)
RTOL, ATOL = 1e-3, 1e-5

pytestmark = pytest.mark.slow


def parity_weights() -> Path:
    root = Path(os.environ.get("IGGT_PARITY_DIR", REPO.parent / "shared" / "reference" / "parity"))
    path = root / "tiny_iggt.safetensors"
    if not path.is_file():
        why = f"parity fixture weights {path} are missing (set IGGT_PARITY_DIR to the parity folder)"
        if os.environ.get("IGGT_REQUIRE_PARITY") == "1":
            pytest.fail(why)
        pytest.skip(why)
    return path


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(config, model, onnx path, export result): exported into an engine cache the factory can find."""
    weights = parity_weights()
    cache = tmp_path_factory.mktemp("engines")
    config = EngineConfig(backend="onnxruntime", model="parity", checkpoint=str(weights), cache_dir=str(cache))
    model, _, _ = load_engine_model(config.checkpoint, config.model)
    key = plan_cache.onnx_cache_key(file_sha256(weights, cache), SIZE)
    onnx_file = plan_cache.onnx_path(cache, key)
    result = export_model(model, "", SIZE, onnx_file, parity_frames=2)
    return config, model, onnx_file, result


def test_graph_has_no_float64_or_antialiased_resize_and_names_modules(exported):
    import onnx

    _, _, onnx_file, _ = exported
    assert check_onnx_graph(onnx_file) == []
    names = [n.name for n in onnx.load(str(onnx_file), load_external_data=False).graph.node]
    assert any(n.startswith("aggregator.frame_blocks.") for n in names)
    assert any("/rope/" in n for n in names)
    # The TensorRT precision rules select the sensitive layers through these names.
    norms = [n for n in names if n.startswith("aggregator.global_blocks.3.norm1/")]
    assert norms and all(keeps_fp32(n, "ELEMENTWISE", DEFAULT_FP32_PATTERNS, ()) for n in norms)
    assert keeps_fp32("depth_head.scratch.output_conv2/node_conv_9", "CONVOLUTION", DEFAULT_FP32_PATTERNS, ())
    assert not keeps_fp32("aggregator.global_blocks.3.mlp.fc1/node_linear_3", "MATRIX_MULTIPLY",
                          DEFAULT_FP32_PATTERNS, ())
    assert keeps_fp32("x", "NORMALIZATION", (), DEFAULT_FP32_LAYER_TYPES)
    assert not keeps_fp32("x", "SOFTMAX", (), DEFAULT_FP32_LAYER_TYPES)  # attention may fuse


def test_onnxruntime_matches_pytorch_on_every_output(exported):
    import onnxruntime as ort

    _, model, onnx_file, result = exported
    report = result.reports["onnx"]
    assert report["ok"], report
    assert set(report["outputs"]) == set(OUTPUT_NAMES)
    saved = json.loads(Path(f"{onnx_file}.parity.json").read_text())
    assert saved["ok"] and saved["frames"] == 2 and saved["outputs"]["depth"]["max_abs"] >= 0
    # Independently of the report: another frame count through the dynamic axis.
    batch = random_batch(3, SIZE, seed=5)
    got = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"]).run(None, {"images": batch})
    for name, want, have in zip(OUTPUT_NAMES, reference_outputs(model, batch), got, strict=True):
        np.testing.assert_allclose(have, want, rtol=RTOL, atol=ATOL, err_msg=name)


def test_mixed_precision_graph_halves_only_the_backbone_matrix_work(exported):
    import onnx
    import onnxruntime as ort

    _, model, onnx_file, _ = exported
    mixed = onnx_file.with_name("model.fp16.onnx")  # written by the export, beside the FP32 graph
    graph = onnx.load(str(mixed), load_external_data=False).graph
    half_inits = {t.name for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT16}
    readers = {}
    for n in graph.node:
        for t in n.input:
            readers.setdefault(t, []).append(n.name)
    weight_users = {name for t in half_inits for name in readers.get(t, [])}
    assert any(name.startswith("aggregator.global_blocks.") and ".mlp.fc1/" in name for name in weight_users)
    assert not [name for name in weight_users if name.startswith(("depth_head", "camera_head", "part_head"))]
    assert not [name for name in weight_users if "norm" in name]
    assert not [n.name for n in graph.node if n.op_type == "Cast" and n.name.startswith(("depth_head",
                                                                                          "camera_head", "part_head"))]
    batch = random_batch(2, SIZE, seed=7)
    got = ort.InferenceSession(str(mixed), providers=["CPUExecutionProvider"]).run(None, {"images": batch})
    for name, want, have in zip(OUTPUT_NAMES, reference_outputs(model, batch), got, strict=True):
        assert have.dtype == np.float32
        rel = np.abs(have - want) / (np.abs(want) + 1e-3)
        assert np.median(rel) < 1e-2, f"{name}: median relative error {np.median(rel):.2e}"


def test_onnxruntime_engine_equals_torch_engine(exported):
    config, model, onnx_file, _ = exported
    torch_engine = TorchEngine(model, SIZE)
    ort_engine = OnnxRuntimeEngine(onnx_file)
    assert ort_engine.input_size == SIZE
    images = np.random.default_rng(2).integers(0, 256, (2, *SIZE, 3), dtype=np.uint8)
    a, b = torch_engine.infer(images), ort_engine.infer(images)
    for field in ("extrinsics", "intrinsics", "depth", "depth_conf", "world_points", "world_points_conf",
                  "instance_features"):
        np.testing.assert_allclose(getattr(b, field), getattr(a, field), rtol=RTOL, atol=ATOL, err_msg=field)
    np.testing.assert_array_equal(a.images, b.images)
    assert b.engine == "onnxruntime-cpu"


def test_factory_finds_the_cached_export_and_refuses_a_missing_one(exported, tmp_path):
    config, _, _, _ = exported
    engine = create_engine(config, input_size=SIZE)
    assert isinstance(engine, OnnxRuntimeEngine) and engine.input_size == SIZE
    other = EngineConfig(**{**config.__dict__, "cache_dir": str(tmp_path)})
    with pytest.raises(EngineError, match="iggt-ros export --onnx-only"):
        create_engine(other, input_size=SIZE)
    with pytest.raises(EngineError, match="does not exist"):
        OnnxRuntimeEngine(tmp_path / "missing.onnx")


def test_export_cli_rejects_bad_sizes_before_loading(capsys):
    import argparse

    from iggt_ros.engine import export_cli

    parser = argparse.ArgumentParser()
    export_cli.add_arguments(parser)
    assert export_cli.run(parser.parse_args(["--height", "300", "--onnx-only"])) == 1
    assert "multiples of 28" in capsys.readouterr().err
    assert export_cli.run(parser.parse_args(["--frames", "16", "--max-frames", "12"])) == 1
