"""Export-friendliness of the model: window layouts without im2col, and an ONNX round trip with a
dynamic frame count and no float64 or antialiased resize in the graph."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from iggt_ros.model import OUTPUT_KEYS, Iggt, IggtModelConfig, IggtTensorOutputs
from iggt_ros.model.window_attention import overlapping_windows, scrambled_query_windows


def test_overlapping_windows_equal_unfold():
    x = torch.randn(2, 6, 16, 24)
    got = overlapping_windows(x, 8, 12)
    cols = F.unfold(x, kernel_size=12, stride=8, padding=2)  # [N, C*144, nW]
    want = cols.reshape(2, 6, 144, -1).permute(0, 3, 2, 1).reshape(-1, 144, 6)
    assert torch.equal(got, want)


def test_scrambled_query_windows_follow_the_release_layout():
    n, h, w, c, ws = 2, 16, 8, 16, 8
    q = torch.randn(n, h, w, c)
    got = scrambled_query_windows(q, ws)
    # Window k of batch b holds T[b, cg, hg, cl, hl, x] = Q[b, 8hg+hl, x, 8cg+cl], flattened in order.
    expected = torch.empty(n, c // ws, h // ws, ws, ws, w)
    for cg in range(c // ws):
        for hg in range(h // ws):
            for cl in range(ws):
                for hl in range(ws):
                    expected[:, cg, hg, cl, hl] = q[:, ws * hg + hl, :, ws * cg + cl]
    assert torch.equal(got, expected.reshape(-1, ws * ws, c))


@pytest.mark.slow
def test_onnx_export_with_dynamic_frame_count(tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    torch.manual_seed(0)
    config = dataclasses.replace(IggtModelConfig.tiny(), depth=4, intermediate_layers=(0, 1, 2, 3), dino_depth=1)
    model = Iggt(config).eval()
    height, width = 56, 84
    model.fix_input_size(height, width)
    wrapper = IggtTensorOutputs(model).eval()
    path = tmp_path / "iggt.onnx"
    frames = torch.export.Dim("S", min=1, max=16)
    torch.onnx.export(
        wrapper, (torch.rand(2, 3, height, width),), str(path), dynamo=True, opset_version=18,
        input_names=["images"], output_names=list(OUTPUT_KEYS), dynamic_shapes={"images": {0: frames}},
    )
    graph = onnx.load(str(path)).graph
    double = onnx.TensorProto.DOUBLE
    assert not [i.name for i in graph.initializer if i.data_type == double]
    for node in graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert not (node.op_type == "Cast" and attrs.get("to") == double), node.name
        assert not (node.op_type == "Resize" and attrs.get("antialias", 0)), node.name
        assert not (node.op_type == "Resize" and attrs.get("mode") == b"cubic"), node.name
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for frames_in in (1, 3):
        images = torch.rand(frames_in, 3, height, width)
        with torch.no_grad():
            expected = wrapper(images)
        got = session.run(None, {"images": images.numpy()})
        for name, want, have in zip(OUTPUT_KEYS, expected, got, strict=True):
            np.testing.assert_allclose(have, want.numpy(), rtol=1e-3, atol=1e-5, err_msg=f"S={frames_in} {name}")


# ---------------------------------------------------------------------------------------------
# The export bundle of the tiny model: mixed precision, pins, attention, build-only step
# ---------------------------------------------------------------------------------------------
BUNDLE_SIZE = (56, 84)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from iggt_ros.engine.export import export_bundle

    folder = tmp_path_factory.mktemp("bundle")
    torch.manual_seed(0)
    model = Iggt(IggtModelConfig.tiny()).eval()
    result = export_bundle(model, "tiny-sha", BUNDLE_SIZE, folder, precisions=("fp16", "bf16"),
                           reference_frames=(2, 3), max_frames=4)
    return folder, result


def _pinned(name: str) -> bool:
    import re

    from iggt_ros.engine.tensorrt_build import DEFAULT_FP32_PATTERNS

    return any(re.search(p, name) for p in DEFAULT_FP32_PATTERNS)


def _tensor_types(model) -> dict[str, int]:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True).graph
    types = {t.name: t.data_type for t in inferred.initializer}
    for value in [*inferred.input, *inferred.output, *inferred.value_info]:
        types[value.name] = value.type.tensor_type.elem_type
    return types


@pytest.mark.slow
def test_mixed_precision_graph_stores_fp16_weights_and_keeps_every_pinned_node_fp32(bundle):
    import onnx

    folder, _ = bundle
    model = onnx.load(str(folder / "model.fp16.onnx"))
    onnx.checker.check_model(model, full_check=True)
    graph = model.graph
    fp16, fp32 = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT
    half_weights = {t.name for t in graph.initializer if t.data_type == fp16}
    assert len(half_weights) > 20
    readers: dict[str, list] = {}
    for node in graph.node:
        for t in node.input:
            readers.setdefault(t, []).append(node)
    for name in half_weights:  # FP16 weights feed only unpinned matrix work (directly or via a Transpose)
        assert all(not _pinned(n.name) and n.op_type in ("MatMul", "Gemm", "Conv", "ConvTranspose", "Transpose")
                   for n in readers[name]), name
    types = _tensor_types(model)
    pinned = [n for n in graph.node if _pinned(n.name)]
    assert any(n.name.startswith("depth_head") for n in pinned) and any("/rope/" in n.name for n in pinned)
    for node in pinned:
        for t in [*node.input, *node.output]:
            assert types.get(t, fp32) != fp16, f"pinned node {node.name} touches FP16 tensor {t}"
    assert not [n.name for n in graph.node if n.op_type == "Cast"
                and n.name.startswith(("camera_head", "depth_head", "point_head", "part_head", "part_adaptor"))]
    # The half graph is what the target parses: smaller than the FP32 one.
    assert (folder / "model.fp16.onnx").stat().st_size < (folder / "model.onnx").stat().st_size


@pytest.mark.slow
def test_attention_matmul_softmax_matmul_is_left_whole_in_half_precision(bundle):
    import onnx

    folder, _ = bundle
    model = onnx.load(str(folder / "model.fp16.onnx"))
    types = _tensor_types(model)
    producer = {t: n for n in model.graph.node for t in n.output}
    readers: dict[str, list] = {}
    for node in model.graph.node:
        for t in node.input:
            readers.setdefault(t, []).append(node)
    softmax = [n for n in model.graph.node if n.op_type == "Softmax" and n.name.startswith("aggregator.")]
    assert softmax
    for node in softmax:
        assert producer[node.input[0]].op_type == "MatMul", node.name  # no Cast between the matmul and softmax
        assert [r.op_type for r in readers[node.output[0]]] == ["MatMul"], node.name
        assert types[node.input[0]] == types[node.output[0]] == onnx.TensorProto.FLOAT16, node.name


@pytest.mark.slow
def test_bundle_records_what_the_target_needs_and_the_fp16_graph_stays_close(bundle):
    from iggt_ros.engine.bundle import ExportManifest, load_reference, reference_frames

    folder, result = bundle
    manifest = ExportManifest.read(folder)
    assert manifest.model_sha256 == "tiny-sha" and manifest.input_size == BUNDLE_SIZE and manifest.max_frames == 4
    assert set(manifest.mixed) == {"fp16", "bf16"} and manifest.torch_version == torch.__version__
    assert reference_frames(folder) == [2, 3]
    images, outputs = load_reference(folder, 3)
    assert images.shape == (3, 3, *BUNDLE_SIZE) and outputs[0].shape[1] == 1
    assert result.reports["onnx"]["ok"]
    half = result.reports["onnx-fp16"]["outputs"]
    assert all(o["median_rel"] < 1e-2 for o in half.values()), half


@pytest.mark.slow
def test_bf16_graph_is_valid_and_keeps_convolutions_fp32(bundle):
    import onnx

    folder, _ = bundle
    model = onnx.load(str(folder / "model.bf16.onnx"))
    onnx.checker.check_model(model, full_check=True)
    bf16 = {t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.BFLOAT16}
    assert bf16
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert convs and not [n.name for n in convs if any(t in bf16 for t in n.input)]


@pytest.mark.slow
def test_a_default_pattern_matching_no_node_fails_the_rewrite(bundle, tmp_path):
    import onnx

    from iggt_ros.engine.base import EngineError
    from iggt_ros.engine.mixed_precision import write_mixed_precision
    from iggt_ros.engine.tensorrt_build import DEFAULT_FP32_PATTERNS

    folder, _ = bundle
    # A graph from an exporter without module scopes: node names without module paths.
    model = onnx.load(str(folder / "model.onnx"))
    for node in model.graph.node:
        node.name = node.name.rsplit("/", 1)[-1]
    bare = tmp_path / "bare.onnx"
    onnx.save(model, str(bare))
    with pytest.raises(EngineError, match="match no node") as err:
        write_mixed_precision(bare, tmp_path / "bare.fp16.onnx", DEFAULT_FP32_PATTERNS)
    # LayerNorm op names still say 'norm'; the module-path patterns (RoPE, the heads) find nothing.
    assert "(^|/)rope/" in str(err.value) and "camera_head|depth_head" in str(err.value)
    assert not (tmp_path / "bare.fp16.onnx").exists()
    with pytest.raises(EngineError, match="no_such_head"):
        write_mixed_precision(folder / "model.onnx", tmp_path / "x.onnx", [*DEFAULT_FP32_PATTERNS, r"^no_such_head\."])


def test_export_refuses_a_pytorch_without_the_exporter_it_relies_on():
    import types

    from iggt_ros.engine.export import check_exporter

    check_exporter(torch)  # the installed one is recent enough

    def old_export(model, args, f, export_params=True, dynamo=False, dynamic_shapes=None):
        """torch.onnx.export of PyTorch 2.5: no external_data argument."""

    stand_in = types.SimpleNamespace(__version__="2.5.1", onnx=types.SimpleNamespace(export=old_export))
    with pytest.raises(ValueError, match=r"PyTorch 2\.6 or newer.*this is PyTorch 2\.5\.1"):
        check_exporter(stand_in)
