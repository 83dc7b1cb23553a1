"""PyTorch -> ONNX -> TensorRT export, with a numeric parity report after each step.

ONNX: the model with its positional tables frozen for one (H, W) (`Iggt.fix_input_size`), so the
graph holds only float32 constants for them (no float64, no antialiased bicubic resize); the
frame count S stays dynamic; weights go to an external data file when the protobuf would pass
its 2 GB limit. Node names are rewritten to the module path that produced them
(`aggregator.frame_blocks.3.norm1/node_layer_norm_7`), so TensorRT precision rules can select
layers by name. TensorRT: see `tensorrt_build`.

A parity report (max abs/rel error per output against PyTorch fp32 on the same input) is printed
and saved as `<file>.parity.json` next to each exported file.
"""

from __future__ import annotations

import ast
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from iggt_ros.config import MAX_VIEWS
from iggt_ros.engine.postprocess import OUTPUT_NAMES

log = logging.getLogger(__name__)

EXTERNAL_DATA_BYTES = 1_500_000_000
"""Parameter bytes above which weights go to an external data file (protobuf's hard limit is 2 GB)."""
PARITY_RTOL = 1e-3
PARITY_ATOL = 1e-5
TENSORRT_TOLERANCE = {"fp32": (1e-2, 1e-3), "fp16": (5e-2, 1e-2)}
"""Indicative (rtol, atol) for plans: TensorRT uses TF32 for FP32 matmuls, and FP16 is FP16."""


# ---------------------------------------------------------------------------------------------
# ONNX
# ---------------------------------------------------------------------------------------------
def export_onnx(
    model,
    path: str | Path,
    input_size: tuple[int, int],
    max_frames: int = MAX_VIEWS,
    opset: int = 18,
    sample_frames: int = 2,
) -> Path:
    """Export `model` (weights loaded) to ONNX for input [S,3,H,W], S dynamic in 1..max_frames.

    Raises ValueError when the exported graph contains float64 or antialiased/bicubic resizes.
    """
    import torch

    from iggt_ros.model import IggtTensorOutputs

    if opset < 17:
        raise ValueError(f"opset {opset} is too old: 17 or newer is needed (native LayerNormalization)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = input_size
    model = model.float().eval()
    model.fix_input_size(height, width)
    wrapper = IggtTensorOutputs(model).eval()
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    frames = torch.export.Dim("S", min=1, max=max_frames)
    sample = torch.rand(min(max(sample_frames, 2), max_frames), 3, height, width)
    with torch.no_grad():
        torch.onnx.export(
            wrapper, (sample,), str(path), dynamo=True, opset_version=opset, input_names=["images"],
            output_names=list(OUTPUT_NAMES), dynamic_shapes={"images": {0: frames}},
            external_data=param_bytes > EXTERNAL_DATA_BYTES,
        )
    name_nodes_by_module(path)
    problems = check_onnx_graph(path)
    if problems:
        raise ValueError(f"exported graph {path} is not engine-friendly: " + "; ".join(problems[:10]))
    return path


def _module_scope(node) -> tuple[str, bool]:
    """(module path, comes from the RoPE code) of an ONNX node exported by torch.onnx (dynamo)."""
    meta = {p.key: p.value for p in node.metadata_props}
    scope = ""
    try:
        scopes = ast.literal_eval(meta.get("pkg.torch.onnx.name_scopes", "[]"))
        if len(scopes) >= 2:
            scope = scopes[-2].removeprefix("model.")
    except (ValueError, SyntaxError):
        scope = ""
    # The trace ends at the innermost module's source line; RoPE is a function called from there.
    innermost = "\n".join(meta.get("pkg.torch.onnx.stack_trace", "").strip().splitlines()[-2:])
    return scope, "apply_rope" in innermost or "rope.py" in innermost


def name_nodes_by_module(path: str | Path) -> None:
    """Rename every node to '<module path>[/rope]/<old name>' (unique names stay unique)."""
    import onnx

    path = Path(path)
    proto = onnx.load(str(path), load_external_data=False)
    for node in proto.graph.node:
        scope, rope = _module_scope(node)
        prefix = "/".join(part for part in (scope, "rope" if rope else "") if part)
        if prefix:
            node.name = f"{prefix}/{node.name}"
    onnx.save(proto, str(path))


def check_onnx_graph(path: str | Path) -> list[str]:
    """Engine-unfriendly content of an ONNX graph: float64 tensors or casts, antialiased or cubic resizes."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    double = onnx.TensorProto.DOUBLE
    problems = [f"float64 initializer {i.name}" for i in graph.initializer if i.data_type == double]
    for node in graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Cast" and attrs.get("to") == double:
            problems.append(f"cast to float64 in {node.name}")
        if node.op_type == "Constant" and getattr(attrs.get("value"), "data_type", None) == double:
            problems.append(f"float64 constant {node.name}")
        if node.op_type == "Resize" and (attrs.get("antialias", 0) or attrs.get("mode") == b"cubic"):
            problems.append(f"antialiased or cubic resize {node.name}")
    return problems


# ---------------------------------------------------------------------------------------------
# Parity
# ---------------------------------------------------------------------------------------------
def parity_report(
    reference: Sequence[np.ndarray],
    candidate: Sequence[np.ndarray],
    names: Sequence[str] = OUTPUT_NAMES,
    rtol: float = PARITY_RTOL,
    atol: float = PARITY_ATOL,
) -> dict:
    """Per output: max abs error, max relative error (where |ref| > 10*atol), and whether every
    element satisfies |got - ref| <= atol + rtol * |ref|."""
    outputs = {}
    for name, ref, got in zip(names, reference, candidate, strict=True):
        ref = np.asarray(ref, np.float64)
        got = np.asarray(got, np.float64)
        if ref.shape != got.shape:
            outputs[name] = {"shape_reference": list(ref.shape), "shape_candidate": list(got.shape), "ok": False}
            continue
        diff = np.abs(got - ref)
        significant = np.abs(ref) > 10 * atol
        rel = diff[significant] / np.abs(ref[significant]) if significant.any() else np.zeros(1)
        bad = ~(diff <= atol + rtol * np.abs(ref))
        outputs[name] = {
            "max_abs": float(diff.max()) if diff.size else 0.0,
            "max_rel": float(rel.max()) if rel.size else 0.0,
            "violations": int(bad.sum()),
            "ok": bool(not bad.any()),
        }
    return {"rtol": rtol, "atol": atol, "ok": all(o["ok"] for o in outputs.values()), "outputs": outputs}


def format_parity(report: Mapping, title: str) -> str:
    lines = [f"{title}: {'PASS' if report['ok'] else 'FAIL'} (rtol {report['rtol']:g}, atol {report['atol']:g})",
             f"  {'output':<18} {'max abs':>11} {'max rel':>11} {'violations':>10}"]
    for name, o in report["outputs"].items():
        if "max_abs" not in o:
            lines.append(f"  {name:<18} shape {o['shape_candidate']} vs reference {o['shape_reference']}")
            continue
        lines.append(f"  {name:<18} {o['max_abs']:11.3e} {o['max_rel']:11.3e} {o['violations']:10d}")
    return "\n".join(lines)


def write_parity(report: dict, exported: str | Path, extra: Mapping | None = None) -> Path:
    path = Path(f"{exported}.parity.json")
    path.write_text(json.dumps({**(extra or {}), **report}, indent=2) + "\n")
    return path


def reference_outputs(model, batch: np.ndarray, device: str = "cpu") -> list[np.ndarray]:
    """PyTorch fp32 outputs in `OUTPUT_NAMES` order (pose_enc stacked) for a [S,3,H,W] float32 batch."""
    import torch

    from iggt_ros.model import IggtTensorOutputs

    wrapper = IggtTensorOutputs(model).eval().to(device)
    with torch.no_grad():
        out = wrapper(torch.from_numpy(batch).to(device))
    return [o.float().cpu().numpy() for o in out]


def random_batch(frames: int, input_size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """A reproducible [S,3,H,W] float32 batch, quantised to uint8 levels like real camera input."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (frames, 3, *input_size)).astype(np.float32) / np.float32(255.0)


def onnx_parity(model, onnx_file: str | Path, batch: np.ndarray) -> dict:
    """ONNX Runtime (CPU) against PyTorch fp32 (CPU) on one batch."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": batch})
    return parity_report(reference_outputs(model, batch), got)


# ---------------------------------------------------------------------------------------------
# Whole export into the engine cache
# ---------------------------------------------------------------------------------------------
@dataclass
class ExportResult:
    onnx_path: Path
    plan_path: Path | None = None
    reports: dict[str, dict] = field(default_factory=dict)


def export_model(
    model,
    model_sha256: str,
    input_size: tuple[int, int],
    onnx_file: str | Path,
    plan_file: str | Path | None = None,
    build_settings=None,
    parity_frames: int = 2,
    max_frames: int = MAX_VIEWS,
    reuse_onnx: bool = False,
    parity: bool = True,
) -> ExportResult:
    """Export to ONNX (unless `reuse_onnx` and it exists) and optionally build a TensorRT plan.

    Args:
        build_settings: `tensorrt_build.BuildSettings`; required with `plan_file`.
        parity_frames: frames of the random parity input (clamped to what every profile accepts).
    """
    onnx_file = Path(onnx_file)
    result = ExportResult(onnx_file)
    if not (reuse_onnx and onnx_file.is_file()):
        log.info("exporting ONNX to %s", onnx_file)
        export_onnx(model, onnx_file, input_size, max_frames=max_frames)
    if parity:
        batch = random_batch(min(parity_frames, max_frames), input_size)
        report = onnx_parity(model, onnx_file, batch)
        write_parity(report, onnx_file, {"backend": "onnxruntime-cpu", "frames": int(batch.shape[0])})
        print(format_parity(report, f"ONNX Runtime vs PyTorch ({onnx_file})"))
        result.reports["onnx"] = report
    if plan_file is not None:
        from iggt_ros.engine.tensorrt_build import build_plan

        if build_settings is None:
            raise ValueError("a TensorRT plan needs build settings")
        plan_file = Path(plan_file)
        build_plan(onnx_file, plan_file, build_settings, model_sha256)
        result.plan_path = plan_file
        if parity:
            result.reports["tensorrt"] = tensorrt_parity(model, plan_file, parity_frames)
    return result


def tensorrt_parity(model, plan_file: str | Path, frames: int, device: str = "cuda") -> dict:
    """A built plan against PyTorch fp32 on the GPU, on a random batch every profile of the plan accepts."""
    from iggt_ros.engine.tensorrt_engine import TensorRTEngine

    engine = TensorRTEngine(plan_file, device)
    if not engine.shape.accepts(frames):
        frames = engine.shape.profiles[0][1]
    batch = random_batch(frames, engine.input_size)
    got = engine.run(batch)
    engine.close()
    rtol, atol = TENSORRT_TOLERANCE[engine.precision]
    report = parity_report(reference_outputs(model, batch, device), got, rtol=rtol, atol=atol)
    write_parity(report, plan_file, {"backend": f"tensorrt-{engine.precision}", "frames": frames,
                                     "reference": "pytorch fp32 on the same GPU"})
    print(format_parity(report, f"TensorRT vs PyTorch ({plan_file})"))
    return report


def export_to_cache(config, input_size: tuple[int, int], window_sizes: Sequence[int], tensorrt: bool,
                    workspace_gb: float = 2.0) -> ExportResult:
    """Export the weights an `EngineConfig` names into its cache directory (see `plan_cache`)."""
    from iggt_ros.engine import plan_cache
    from iggt_ros.engine.weights import file_sha256, load_engine_model

    model, _, weights = load_engine_model(config.checkpoint, config.model, config.allow_partial_checkpoint)
    sha = file_sha256(weights, config.cache_dir)
    onnx_file = plan_cache.onnx_path(config.cache_dir, plan_cache.onnx_cache_key(sha, input_size))
    plan_file = settings = None
    if tensorrt:
        from iggt_ros.engine.tensorrt_build import BuildSettings

        device = plan_cache.DeviceInfo.current(config.device)
        shape = plan_cache.PlanShape(tuple(input_size), plan_cache.static_profiles(window_sizes))
        plan_file = plan_cache.plan_path(config.cache_dir, plan_cache.plan_cache_key(sha, shape, config.precision,
                                                                                     device))
        settings = BuildSettings(profiles=shape.profiles, precision=config.precision,
                                 workspace_bytes=int(workspace_gb * (1 << 30)),
                                 timing_cache=plan_cache.timing_cache_path(config.cache_dir))
    return export_model(model, sha, input_size, onnx_file, plan_file, settings, reuse_onnx=True)
