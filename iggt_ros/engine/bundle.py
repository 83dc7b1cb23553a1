"""The export bundle: what a workstation export hands to the target that builds the TensorRT plan.

The official model is 4.6 GiB in FP32; holding it, a second copy in ONNX Runtime and the TensorRT
builder at once does not fit an Orin. Deployment is therefore two steps. The workstation (with
PyTorch and the weights) exports and checks parity where the model is; the target builds the plan
from the bundle alone and checks it against the outputs saved here, loading no PyTorch model.

A bundle folder holds:

    export.json              this manifest: weights hash, input size, S range, versions, parity reports
    model.onnx (+ .data)     FP32 graph (ONNX Runtime backend, FP32 plans)
    model.fp16.onnx (+.data) mixed precision with FP16 initializers (the FP16 plan's source)
    reference.npz            a parity input ('images', [S,3,H,W] float32) and PyTorch FP32's outputs

This module needs numpy only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from iggt_ros.engine.base import EngineError
from iggt_ros.engine.postprocess import OUTPUT_NAMES

EXPORT_FORMAT = "iggt_ros.export/1"
MANIFEST_NAME = "export.json"
REFERENCE_NAME = "reference.npz"
PARITY_RTOL = 1e-3
PARITY_ATOL = 1e-5
HALF_TOLERANCE = (5e-2, 1e-2)
"""Indicative (rtol, atol) for half-precision graphs and plans against PyTorch FP32."""
TENSORRT_TOLERANCE = {"fp32": (1e-2, 1e-3), "fp16": HALF_TOLERANCE, "bf16": (1e-1, 2e-2)}
"""Indicative (rtol, atol) of plans against PyTorch FP32. FP32 plans are built with TF32 off."""


def mixed_name(precision: str) -> str:
    return f"model.{precision}.onnx"


@dataclass
class ExportManifest:
    """What was exported and how; `export.json` in the bundle folder."""

    model_sha256: str
    input_size: tuple[int, int]
    max_frames: int
    opset: int
    package_version: str
    torch_version: str
    onnx: str = "model.onnx"
    mixed: dict[str, dict] = field(default_factory=dict)
    """precision -> {'file': ..., 'fp32_patterns': [...], 'summary': ...}."""
    reference: str = REFERENCE_NAME
    parity: dict[str, dict] = field(default_factory=dict)
    """graph file -> parity report of ONNX Runtime (CPU) against PyTorch FP32 on the reference input."""
    format: str = EXPORT_FORMAT

    def write(self, folder: str | Path) -> Path:
        path = Path(folder) / MANIFEST_NAME
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path

    @staticmethod
    def folder_of(source: str | Path) -> Path:
        source = Path(source).expanduser()
        return source if source.is_dir() else source.parent

    @classmethod
    def read(cls, source: str | Path) -> ExportManifest:
        """The manifest of a bundle folder, or of the folder an ONNX file of a bundle sits in."""
        path = cls.folder_of(source) / MANIFEST_NAME
        if not path.is_file():
            raise EngineError(f"{source} is not an export bundle (no {MANIFEST_NAME} beside it); write one with "
                              "`iggt-ros export --onnx-only --output-dir DIR` where the weights and PyTorch are")
        try:
            data = json.loads(path.read_text())
            if data.get("format") != EXPORT_FORMAT:
                raise EngineError(f"{path} has format {data.get('format')!r}, this version reads {EXPORT_FORMAT!r}; "
                                  "re-export with this version of iggt_ros")
            manifest = cls(**data)
        except (json.JSONDecodeError, TypeError, AttributeError) as exc:
            raise EngineError(f"{path} is not a valid export manifest ({exc}); re-export the bundle") from exc
        manifest.input_size = tuple(manifest.input_size)
        return manifest

    def graph(self, folder: str | Path, precision: str, typing: str = "strong") -> Path:
        """The graph a plan of `precision` is built from: the mixed one for strongly typed FP16/BF16."""
        folder = Path(folder)
        if precision == "fp32" or typing == "weak":
            return folder / self.onnx
        if precision not in self.mixed:
            have = ", ".join(["fp32", *self.mixed]) or "fp32"
            raise EngineError(f"the bundle in {folder} has no {precision} graph (it has: {have}); re-export with "
                              f"`iggt-ros export --precision {precision} --onnx-only`, or build another precision")
        return folder / self.mixed[precision]["file"]


def random_batch(frames: int, input_size: tuple[int, int], seed: int = 0) -> np.ndarray:
    """A reproducible [S,3,H,W] float32 batch, quantised to uint8 levels like real camera input."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (frames, 3, *input_size)).astype(np.float32) / np.float32(255.0)


def save_reference(folder: str | Path, references: Mapping[int, tuple[np.ndarray, Sequence[np.ndarray]]]) -> Path:
    """Save {S: (images [S,3,H,W], PyTorch FP32 outputs in OUTPUT_NAMES order)}."""
    arrays = {}
    for frames, (images, outputs) in references.items():
        arrays[f"S{frames}/images"] = np.asarray(images, np.float32)
        arrays.update({f"S{frames}/{name}": np.asarray(o) for name, o in zip(OUTPUT_NAMES, outputs, strict=True)})
    path = Path(folder) / REFERENCE_NAME
    np.savez(path, **arrays)
    return path


def reference_frames(folder: str | Path) -> list[int]:
    """The window sizes S the bundle holds reference outputs for."""
    path = Path(folder) / REFERENCE_NAME
    if not path.is_file():
        return []
    with np.load(path) as data:
        return sorted({int(k.split("/")[0][1:]) for k in data.files if k.endswith("/images")})


def load_reference(folder: str | Path, frames: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """(images, outputs in OUTPUT_NAMES order) saved by the export for S = `frames`."""
    path = Path(folder) / REFERENCE_NAME
    saved = reference_frames(folder)
    if frames not in saved:
        raise EngineError(f"the bundle in {folder} has reference outputs for S={saved or 'none'}, not S={frames}; "
                          f"re-export it with `iggt-ros export --frames {frames} ...`")
    with np.load(path) as data:
        return data[f"S{frames}/images"], [data[f"S{frames}/{name}"] for name in OUTPUT_NAMES]


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
            "median_rel": float(np.median(rel)) if rel.size else 0.0,
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


def onnxruntime_outputs(onnx_file: str | Path, images: np.ndarray) -> list[np.ndarray]:
    """A graph on ONNX Runtime's CPU provider (half-precision nodes run through its inserted casts)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": images})
