"""Mixed FP16 (or BF16) / FP32 precision written into the ONNX graph itself, for strongly typed builds.

Strongly typed TensorRT networks (required from TensorRT 11, optional since 9) take every tensor's type
from the graph and ignore precision hints, so the precision policy goes into the graph:

* each matrix operation (MatMul, Gemm, Conv, ConvTranspose) whose node name matches no FP32 pattern
  runs in half precision, and its weights are stored in half precision in the file (the graph the
  target parses holds half the bytes of the FP32 export, and nothing is cast at build time);
* an attention softmax between two such matrix multiplies runs in half precision too, with no cast
  around it, so TensorRT can recognise matmul-softmax-matmul and fuse it (fused attention kernels
  accumulate the softmax in FP32);
* everything else (LayerNorms, RoPE, residual adds, the dense heads) computes in FP32: a half tensor
  reaches it through a Cast to FP32 named after the half node that produced it, so no cast is ever
  named after (or placed inside) a pinned module.

Patterns select nodes by the module paths `export` writes into node names. A pattern that matches no
node means those names are missing (an exporter without the metadata) or the pattern is wrong; the
rewrite then fails instead of running the heads in half precision without a word.
"""

from __future__ import annotations

import json
import logging
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from iggt_ros.engine.base import EngineError

log = logging.getLogger(__name__)

FP16_OPS = ("MatMul", "Gemm", "Conv", "ConvTranspose")
BF16_OPS = ("MatMul", "Gemm")
"""ONNX (opset 18) defines convolutions for float16, float and double only, so BF16 graphs keep them in FP32."""
PRECISION_KEY = "iggt_ros.precision"
PATTERNS_KEY = "iggt_ros.fp32_patterns"
EXTERNAL_DATA_BYTES = 1_500_000_000
FP16_MAX = 65504.0


def check_patterns_match(names: Sequence[str], patterns: Sequence[str], where: str) -> None:
    """EngineError naming every FP32 pattern that matches none of `names`."""
    missing = [p for p in patterns if not any(re.search(p, n) for n in names)]
    if missing:
        raise EngineError(
            f"FP32 pattern(s) {', '.join(repr(p) for p in missing)} match no node of {where}, so those layers "
            "would silently run in half precision. Node names carry module paths only in graphs written by "
            "`iggt-ros export` (PyTorch 2.6 or newer); re-export the model, or fix the --fp32-pattern values")


def fp16_nodes(names_ops: Sequence[tuple[str, str]], fp32_patterns: Sequence[str],
               ops: Sequence[str] = FP16_OPS) -> list[int]:
    """Indices of (name, op_type) nodes that run in half precision: matrix ops matching no FP32 pattern."""
    compiled = [re.compile(p) for p in fp32_patterns]
    return [i for i, (name, op) in enumerate(names_ops)
            if op in ops and not any(p.search(name) for p in compiled)]


@dataclass
class MixedPrecisionReport:
    precision: str
    half_nodes: int
    attention_softmax: int
    total_nodes: int
    half_initializers: int
    casts: int
    clipped_weights: int

    def describe(self) -> str:
        return (f"{self.half_nodes} of {self.total_nodes} nodes in {self.precision} ({self.attention_softmax} "
                f"attention softmax), {self.half_initializers} initializers stored in {self.precision}, "
                f"{self.casts} casts" + (f", {self.clipped_weights} weights clipped to the FP16 range"
                                         if self.clipped_weights else ""))


def _producers_consumers(nodes) -> tuple[dict[str, int], dict[str, list[int]]]:
    producer, consumers = {}, defaultdict(list)
    for i, node in enumerate(nodes):
        for t in node.output:
            producer[t] = i
        for t in node.input:
            if t:
                consumers[t].append(i)
    return producer, consumers


def _attention_softmaxes(nodes, half: set[int], fp32_patterns: Sequence[str]) -> set[int]:
    """Softmax nodes fed by a half MatMul and read only by half MatMuls (and matching no pattern)."""
    producer, consumers = _producers_consumers(nodes)
    compiled = [re.compile(p) for p in fp32_patterns]
    found = set()
    for i, node in enumerate(nodes):
        if node.op_type != "Softmax" or any(p.search(node.name) for p in compiled):
            continue
        src = producer.get(node.input[0])
        readers = consumers.get(node.output[0], [])
        if (src in half and nodes[src].op_type == "MatMul" and readers
                and all(r in half and nodes[r].op_type == "MatMul" for r in readers)):
            found.add(i)
    return found


def _transposed_weights(nodes, half: set[int], initializers: set[str], outputs: set[str]) -> set[int]:
    """Transpose nodes of an initializer whose every reader runs in half precision: they move the half
    weight, so the initializer itself can be stored in half precision."""
    _, consumers = _producers_consumers(nodes)
    found = set()
    for i, node in enumerate(nodes):
        if node.op_type != "Transpose" or node.input[0] not in initializers or node.output[0] in outputs:
            continue
        readers = consumers.get(node.output[0], [])
        if readers and all(r in half for r in readers) and consumers[node.input[0]] == [i]:
            found.add(i)
    return found


def _to_half(tensor, precision: str) -> tuple[object, int]:
    """A half-precision copy of a float32 initializer and how many values were clipped to the FP16 range."""
    from onnx import TensorProto, numpy_helper

    values = numpy_helper.to_array(tensor).astype(np.float32, copy=False)
    if precision == "fp16":
        clipped = int(np.count_nonzero(np.abs(values) > FP16_MAX))
        out = numpy_helper.from_array(np.clip(values, -FP16_MAX, FP16_MAX).astype(np.float16), tensor.name)
        return out, clipped
    # bfloat16: the upper 16 bits of float32, rounded to nearest even (numpy has no bfloat16 type).
    bits = np.ascontiguousarray(values).view(np.uint32)
    rounded = ((bits + np.uint32(0x7FFF) + ((bits >> 16) & np.uint32(1))) >> 16).astype(np.uint16)
    out = TensorProto()
    out.name = tensor.name
    out.data_type = TensorProto.BFLOAT16
    out.dims.extend(values.shape)
    out.raw_data = rounded.tobytes()
    return out, 0


def write_mixed_precision(src: str | Path, dst: str | Path, fp32_patterns: Sequence[str],
                          precision: str = "fp16") -> MixedPrecisionReport:
    """Write `dst`: `src` with its unpinned matrix work (and attention softmax) in `precision` ('fp16' or
    'bf16'), half-precision weights stored as such; a self-contained file (+ `<dst>.data` when large)."""
    import onnx
    from onnx import TensorProto, helper

    if precision not in ("fp16", "bf16"):
        raise ValueError(f"mixed precision is 'fp16' or 'bf16'; got {precision!r}")
    half_type = TensorProto.FLOAT16 if precision == "fp16" else TensorProto.BFLOAT16
    src, dst = Path(src), Path(dst)
    model = onnx.load(str(src), load_external_data=True)
    graph = model.graph
    nodes = list(graph.node)
    check_patterns_match([n.name for n in nodes], fp32_patterns, str(src))
    initializers = {t.name: t for t in graph.initializer}
    graph_outputs = {o.name for o in graph.output}
    ops = FP16_OPS if precision == "fp16" else BF16_OPS
    half = set(fp16_nodes([(n.name, n.op_type) for n in nodes], fp32_patterns, ops))
    softmax = _attention_softmaxes(nodes, half, fp32_patterns)
    half |= softmax
    half |= _transposed_weights(nodes, half, set(initializers), graph_outputs)
    producer, consumers = _producers_consumers(nodes)

    def half_name(tensor: str) -> str:
        return f"{tensor}__{precision}"

    converted: set[str] = set()
    cast_in: dict[str, str] = {}
    clipped = casts = 0
    renamed: set[str] = set()
    rewritten = []
    for index, node in enumerate(nodes):
        if index not in half:
            rewritten.append(node)
            continue
        for slot, tensor in enumerate(node.input):
            if not tensor:
                continue
            if producer.get(tensor) in half:
                node.input[slot] = half_name(tensor)
            elif (tensor in initializers and tensor not in graph_outputs
                  and initializers[tensor].data_type == TensorProto.FLOAT
                  and all(c in half for c in consumers[tensor])):
                if tensor not in converted:
                    new, n_clipped = _to_half(initializers[tensor], precision)
                    initializers[tensor].CopyFrom(new)
                    clipped += n_clipped
                    converted.add(tensor)
            else:
                if tensor not in cast_in:
                    cast_in[tensor] = f"{tensor}__to_{precision}"
                    rewritten.append(helper.make_node("Cast", [tensor], [cast_in[tensor]], to=half_type,
                                                      name=f"{node.name}/cast_to_{precision}_{slot}"))
                    casts += 1
                node.input[slot] = cast_in[tensor]
        rewritten.append(node)
        for slot, tensor in enumerate(node.output):
            node.output[slot] = half_name(tensor)
            renamed.add(tensor)
            if tensor in graph_outputs or any(c not in half for c in consumers.get(tensor, [])):
                rewritten.append(helper.make_node("Cast", [half_name(tensor)], [tensor], to=TensorProto.FLOAT,
                                                  name=f"{node.name}/cast_to_fp32_{slot}"))
                casts += 1
    del graph.node[:]
    graph.node.extend(rewritten)
    kept_info = [v for v in graph.value_info if v.name not in renamed and v.name not in converted]
    del graph.value_info[:]
    graph.value_info.extend(kept_info)
    for key, value in ((PRECISION_KEY, precision), (PATTERNS_KEY, json.dumps(list(fp32_patterns)))):
        entry = next((p for p in model.metadata_props if p.key == key), None) or model.metadata_props.add()
        entry.key, entry.value = key, value
    dst.parent.mkdir(parents=True, exist_ok=True)
    data = Path(f"{dst}.data")
    if data.exists():
        data.unlink()
    large = sum(len(t.raw_data) for t in graph.initializer) > EXTERNAL_DATA_BYTES
    onnx.save(model, str(dst), save_as_external_data=large, all_tensors_to_one_file=True, location=data.name)
    report = MixedPrecisionReport(precision, len(half - softmax), len(softmax), len(nodes), len(converted), casts,
                                  clipped)
    if clipped:
        log.warning("%s: %d weights beyond the FP16 range were clipped", dst, clipped)
    return report


def read_precision(path: str | Path) -> tuple[str, list[str]] | None:
    """(precision, FP32 patterns) of a graph `write_mixed_precision` wrote; None for any other graph."""
    try:
        import onnx
    except ImportError as exc:
        raise EngineError("building a plan reads the ONNX graph's metadata with the onnx package: pip install "
                          "onnx (the only package the build needs besides TensorRT, torch and numpy)") from exc

    props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    if PRECISION_KEY not in props:
        return None
    return props[PRECISION_KEY], list(json.loads(props.get(PATTERNS_KEY, "[]")))
