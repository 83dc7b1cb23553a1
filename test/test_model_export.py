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
