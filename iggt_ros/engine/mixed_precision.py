"""Mixed FP16/FP32 precision written into the ONNX graph itself, for strongly typed TensorRT builds.

Strongly typed networks (required from TensorRT 11, optional since 9) take every tensor's type from
the graph and ignore precision hints. This rewrite therefore puts the precision policy into the
graph: each matrix operation (MatMul, Gemm, Conv, ConvTranspose) whose node name matches none of
the FP32 patterns gets its inputs cast to FP16 and its output cast back to FP32; everything else
(LayerNorms, softmax, RoPE, residual adds, the dense heads) keeps computing in FP32. The result is
the same policy as the weakly typed build with precision constraints, but one TensorRT cannot drop.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

FP16_OPS = ("MatMul", "Gemm", "Conv", "ConvTranspose")


def fp16_nodes(names_ops: Sequence[tuple[str, str]], fp32_patterns: Sequence[str]) -> list[int]:
    """Indices of (name, op_type) nodes that run in FP16: matrix ops not matching any FP32 pattern."""
    compiled = [re.compile(p) for p in fp32_patterns]
    return [i for i, (name, op) in enumerate(names_ops)
            if op in FP16_OPS and not any(p.search(name) for p in compiled)]


def write_mixed_precision(src: str | Path, dst: str | Path, fp32_patterns: Sequence[str]) -> tuple[int, int]:
    """Write `dst`: `src` with FP16 casts around the selected matrix ops; returns (fp16 nodes, all nodes).

    `dst` must be in the same directory as `src` when the weights are external (it refers to the
    same data file).
    """
    import onnx
    from onnx import TensorProto, helper

    src, dst = Path(src), Path(dst)
    if src.parent.resolve() != dst.parent.resolve():
        raise ValueError("the mixed-precision graph must sit next to the original (shared external weights)")
    model = onnx.load(str(src), load_external_data=False)
    graph = model.graph
    nodes = list(graph.node)
    chosen = set(fp16_nodes([(n.name, n.op_type) for n in nodes], fp32_patterns))
    half_of: dict[str, str] = {}
    rewritten = []
    for index, node in enumerate(nodes):
        if index not in chosen:
            rewritten.append(node)
            continue
        for slot, tensor in enumerate(node.input):
            if not tensor:
                continue
            if tensor not in half_of:
                half_of[tensor] = f"{tensor}__fp16"
                rewritten.append(helper.make_node("Cast", [tensor], [half_of[tensor]], to=TensorProto.FLOAT16,
                                                  name=f"{node.name}/cast_in_{slot}"))
            node.input[slot] = half_of[tensor]
        rewritten.append(node)
        for slot, tensor in enumerate(node.output):
            half = f"{tensor}__fp16out"
            node.output[slot] = half
            rewritten.append(helper.make_node("Cast", [half], [tensor], to=TensorProto.FLOAT,
                                              name=f"{node.name}/cast_out_{slot}"))
    del graph.node[:]
    graph.node.extend(rewritten)
    onnx.save(model, str(dst))
    return len(chosen), len(nodes)
