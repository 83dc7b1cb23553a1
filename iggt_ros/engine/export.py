"""PyTorch -> ONNX export bundle (step one of two; the plan is built from it by `build_engine`).

ONNX: the model with its positional tables frozen for one (H, W) (`Iggt.fix_input_size`), so the
graph holds only float32 constants for them (no float64, no antialiased bicubic resize); the
frame count S stays dynamic; weights go to an external data file when the protobuf would pass
its 2 GB limit. Node names are rewritten to the module path that produced them
(`aggregator.frame_blocks.3.norm1/node_layer_norm_7`), so precision rules can select layers by
name. Those paths come from the metadata PyTorch's ONNX exporter writes; an export without them
is refused, because every FP32 pin would silently miss.

The bundle (see `bundle`) adds the mixed-precision graph(s) with half-precision initializers, a
reference input with PyTorch FP32's outputs, and parity reports of ONNX Runtime against PyTorch,
so the target can build and check a plan without the PyTorch model.
"""

from __future__ import annotations

import ast
import gc
import inspect
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from iggt_ros.engine import plan_cache
from iggt_ros.engine.bundle import (
    HALF_TOLERANCE,
    ExportManifest,
    format_parity,
    mixed_name,
    onnxruntime_outputs,
    parity_report,
    random_batch,
    save_reference,
    write_parity,
)
from iggt_ros.engine.postprocess import OUTPUT_NAMES

log = logging.getLogger(__name__)

EXTERNAL_DATA_BYTES = 1_500_000_000
"""Parameter bytes above which weights go to an external data file (protobuf's hard limit is 2 GB)."""
MIN_EXPORT_TORCH = (2, 6)
"""`torch.onnx.export(dynamo=True, dynamic_shapes=..., external_data=...)` with per-node module scopes
(`pkg.torch.onnx.name_scopes`), which the FP32 pins select layers by."""


def check_exporter(torch_module) -> None:
    """ValueError unless this PyTorch's ONNX exporter has what the export relies on."""
    from iggt_ros.engine.tensorrt_support import parse_version

    version = parse_version(torch_module.__version__)
    params = inspect.signature(torch_module.onnx.export).parameters
    missing = [p for p in ("dynamo", "dynamic_shapes", "external_data") if p not in params]
    if version[:2] < MIN_EXPORT_TORCH or missing:
        raise ValueError(
            f"ONNX export needs PyTorch {'.'.join(map(str, MIN_EXPORT_TORCH))} or newer (its exporter writes the "
            f"module names the precision pins rely on); this is PyTorch {torch_module.__version__}. Export on a "
            "workstation with a recent PyTorch and copy the bundle to the target (`iggt-ros build-engine`)")


# ---------------------------------------------------------------------------------------------
# ONNX
# ---------------------------------------------------------------------------------------------
def export_onnx(
    model,
    path: str | Path,
    input_size: tuple[int, int],
    max_frames: int = plan_cache.DEFAULT_MAX_FRAMES,
    opset: int = plan_cache.ONNX_OPSET,
    sample_frames: int = 2,
) -> Path:
    """Export `model` (weights loaded) to ONNX for input [S,3,H,W], S dynamic in 1..max_frames.

    Raises ValueError when PyTorch is too old, when the graph lacks module names, or when it contains
    float64 or antialiased/bicubic resizes.
    """
    import torch

    from iggt_ros.model import IggtTensorOutputs

    check_exporter(torch)
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
    named = name_nodes_by_module(path)
    if not named:
        raise ValueError(f"the ONNX exporter of PyTorch {torch.__version__} wrote no module scopes into {path}; "
                         "the FP32 precision pins select layers by them. Export with PyTorch "
                         f"{'.'.join(map(str, MIN_EXPORT_TORCH))} or newer")
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


def name_nodes_by_module(path: str | Path) -> int:
    """Rename every node to '<module path>[/rope]/<old name>' (unique names stay unique); returns how
    many nodes got a module path."""
    import onnx

    path = Path(path)
    proto = onnx.load(str(path), load_external_data=False)
    named = 0
    for node in proto.graph.node:
        scope, rope = _module_scope(node)
        prefix = "/".join(part for part in (scope, "rope" if rope else "") if part)
        if prefix:
            node.name = f"{prefix}/{node.name}"
            named += bool(scope)
    onnx.save(proto, str(path))
    return named


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
# Parity against PyTorch, and the bundle
# ---------------------------------------------------------------------------------------------
def reference_outputs(model, batch: np.ndarray, device: str = "cpu") -> list[np.ndarray]:
    """PyTorch fp32 outputs in `OUTPUT_NAMES` order (pose_enc stacked) for a [S,3,H,W] float32 batch."""
    import torch

    from iggt_ros.model import IggtTensorOutputs

    wrapper = IggtTensorOutputs(model).eval().to(device)
    with torch.no_grad():
        out = wrapper(torch.from_numpy(batch).to(device))
    return [o.float().cpu().numpy() for o in out]


def onnx_parity(model, onnx_file: str | Path, batch: np.ndarray) -> dict:
    """ONNX Runtime (CPU) against PyTorch fp32 (CPU) on one batch."""
    return parity_report(reference_outputs(model, batch), onnxruntime_outputs(onnx_file, batch))


@dataclass
class ExportResult:
    onnx_path: Path
    plan_path: Path | None = None
    reports: dict[str, dict] = field(default_factory=dict)
    exported: bool = True
    """False when the bundle was already in the cache (made by this or another process)."""


def export_bundle(
    model,
    model_sha256: str,
    input_size: tuple[int, int],
    folder: str | Path,
    precisions: Sequence[str] = ("fp16",),
    fp32_patterns: Sequence[str] | None = None,
    reference_frames: Sequence[int] = (2,),
    max_frames: int = plan_cache.DEFAULT_MAX_FRAMES,
    rebuild: bool = True,
    on_wait: Callable[[], None] | None = None,
) -> ExportResult:
    """Write the export bundle (see `bundle`) into `folder`, atomically and under its lock.

    Args:
        precisions: half precisions ('fp16', 'bf16') whose mixed-precision graphs to write; 'fp32' needs none.
        fp32_patterns: layer-name patterns kept in FP32 (default: `tensorrt_build.DEFAULT_FP32_PATTERNS`).
        reference_frames: window sizes S to save PyTorch FP32 outputs for (the plans' S); ONNX Runtime
            is checked on the smallest.
        rebuild: False reuses a complete bundle already in `folder` (the engine cache).
    """
    import torch

    from iggt_ros import __version__
    from iggt_ros.engine.mixed_precision import write_mixed_precision
    from iggt_ros.engine.tensorrt_build import DEFAULT_FP32_PATTERNS

    patterns = list(fp32_patterns or DEFAULT_FP32_PATTERNS)
    halves = [p for p in dict.fromkeys(precisions) if p != "fp32"]
    frames = sorted({int(s) for s in reference_frames})
    if not frames or frames[0] < 1 or frames[-1] > max_frames:
        raise ValueError(f"reference window sizes {list(reference_frames)} must lie in 1..{max_frames}")
    folder = Path(folder)
    reports: dict[str, dict] = {}

    def produce(tmp: Path) -> None:
        log.info("exporting ONNX to %s", folder)
        onnx_file = export_onnx(model, tmp / plan_cache.ONNX_NAME, input_size, max_frames=max_frames)
        references = {}
        for s in frames:
            batch = random_batch(s, input_size, seed=s)
            references[s] = (batch, reference_outputs(model, batch))
        save_reference(tmp, references)
        batch, reference = references[frames[0]]
        manifest = ExportManifest(model_sha256=model_sha256, input_size=tuple(input_size), max_frames=max_frames,
                                  opset=plan_cache.ONNX_OPSET, package_version=__version__,
                                  torch_version=str(torch.__version__))
        report = parity_report(reference, onnxruntime_outputs(onnx_file, batch))
        write_parity(report, onnx_file, {"backend": "onnxruntime-cpu", "frames": int(batch.shape[0])})
        print(format_parity(report, f"ONNX Runtime vs PyTorch ({folder / onnx_file.name})"))
        reports["onnx"] = manifest.parity[onnx_file.name] = report
        for half in halves:
            mixed = tmp / mixed_name(half)
            summary = write_mixed_precision(onnx_file, mixed, patterns, half)
            log.info("%s: %s", mixed.name, summary.describe())
            manifest.mixed[half] = {"file": mixed.name, "fp32_patterns": patterns, "summary": summary.describe()}
            if half == "fp16":  # ONNX Runtime's CPU provider has no bf16 convolutions or matmuls
                rtol, atol = HALF_TOLERANCE
                report = parity_report(reference, onnxruntime_outputs(mixed, batch), rtol=rtol, atol=atol)
                print(format_parity(report, f"ONNX Runtime {half} graph vs PyTorch FP32 ({folder / mixed.name})"))
                reports[f"onnx-{half}"] = manifest.parity[mixed.name] = report
        manifest.write(tmp)

    done = plan_cache.produce_once(folder / plan_cache.ONNX_NAME, produce, rebuild=rebuild, on_wait=on_wait)
    if not done.built:
        manifest = ExportManifest.read(folder)
        missing = [h for h in halves if h not in manifest.mixed]
        if missing:
            raise ValueError(f"the cached export in {folder} has no {', '.join(missing)} graph; delete the folder "
                             "to export again")
        reports = {"onnx": manifest.parity.get(plan_cache.ONNX_NAME, {})}
    return ExportResult(folder / plan_cache.ONNX_NAME, reports=reports, exported=done.built)


def export_model(
    model,
    model_sha256: str,
    input_size: tuple[int, int],
    onnx_file: str | Path,
    plan_file: str | Path | None = None,
    build_settings=None,
    parity_frames: int = 2,
    max_frames: int = plan_cache.DEFAULT_MAX_FRAMES,
    reuse_onnx: bool = False,
    parity: bool = True,
    device: str = "cuda",
) -> ExportResult:
    """Export the bundle into `onnx_file`'s folder (reused when `reuse_onnx` and complete), then optionally
    build a TensorRT plan from it and check the plan against the saved PyTorch outputs.

    The caller should drop its reference to `model` before a plan build on a small device; the
    build itself (`build_engine.build_from_bundle`) needs only the bundle.
    """
    onnx_file = Path(onnx_file)
    if onnx_file.name != plan_cache.ONNX_NAME:
        raise ValueError(f"the export writes a bundle folder; name the ONNX file {plan_cache.ONNX_NAME}")
    precisions = [build_settings.precision] if build_settings is not None else ["fp16"]
    typing = build_settings.typing if build_settings is not None else "strong"
    frames = {min(parity_frames, max_frames)}
    if build_settings is not None:
        frames |= {opt for _, opt, _ in build_settings.profiles}
    result = export_bundle(model, model_sha256, input_size, onnx_file.parent,
                           precisions=precisions if typing == "strong" else [],
                           fp32_patterns=getattr(build_settings, "fp32_patterns", None),
                           reference_frames=sorted(frames), max_frames=max_frames, rebuild=not reuse_onnx)
    if plan_file is not None:
        from iggt_ros.engine.build_engine import build_from_bundle

        if build_settings is None:
            raise ValueError("a TensorRT plan needs build settings")
        del model
        gc.collect()
        built = build_from_bundle(onnx_file.parent, Path(plan_file), build_settings, device=device, parity=parity)
        result.plan_path = built.plan_path
        if built.parity is not None:
            result.reports["tensorrt"] = built.parity
    return result


def export_to_cache(config, input_size: tuple[int, int], window_sizes: Sequence[int], tensorrt: bool,
                    workspace_gb: float = 2.0) -> ExportResult:
    """Export the weights an `EngineConfig` names into its cache directory (see `plan_cache`), and build
    the plan the factory looks up when `tensorrt`. Another process doing the same is waited for."""
    from iggt_ros.engine.weights import file_sha256, load_engine_model

    model, _, weights = load_engine_model(config.checkpoint, config.model, config.allow_partial_checkpoint)
    sha = file_sha256(weights, config.cache_dir)
    onnx_file = plan_cache.onnx_path(config.cache_dir, plan_cache.onnx_cache_key(sha, input_size))
    precisions = [config.precision] if tensorrt else []
    frames = sorted({2, *window_sizes}) if tensorrt else [2]
    result = export_bundle(model, sha, input_size, onnx_file.parent, precisions=precisions,
                           reference_frames=[s for s in frames if s <= plan_cache.DEFAULT_MAX_FRAMES], rebuild=False)
    del model
    gc.collect()
    if tensorrt:
        from iggt_ros.engine.build_engine import build_from_bundle, cache_settings

        settings = cache_settings(config.precision, window_sizes, workspace_gb)
        built = build_from_bundle(onnx_file.parent, None, settings, device=config.device,
                                  cache_dir=config.cache_dir, rebuild=False)
        result.plan_path = built.plan_path
        if built.parity is not None:
            result.reports["tensorrt"] = built.parity
    return result
