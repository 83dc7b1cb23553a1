"""Where exported models live, and when a TensorRT plan may run on this machine.

A TensorRT plan is only valid for the weights, input shapes and precision it was built with, on the
GPU model and TensorRT version that built it. Every plan therefore carries a metadata file
(`<plan>.json`) and lives in a cache directory named by a key over all of those, so the node finds
the right plan at start-up or refuses with a clear message -- never rebuilding silently, never
running a plan of another GPU or TensorRT version.

Layout of `engine.cache_dir`:

    <cache_dir>/weights_sha256.json              memo of weight-file hashes (path, size, mtime)
    <cache_dir>/onnx-<key>/model.onnx            ONNX export (+ model.onnx.data when large)
    <cache_dir>/onnx-<key>/model.onnx.parity.json
    <cache_dir>/trt-<key>/engine.plan            TensorRT plan
    <cache_dir>/trt-<key>/engine.plan.json       its PlanMetadata
    <cache_dir>/trt-<key>/engine.plan.parity.json
    <cache_dir>/timing.cache                     TensorRT timing cache, shared by builds on this machine

Everything here is pure Python except `DeviceInfo.current`, so the rules are testable without CUDA.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from iggt_ros.engine.base import EngineError

PLAN_FORMAT = "iggt_ros.tensorrt/1"
PLAN_NAME = "engine.plan"
ONNX_NAME = "model.onnx"
ONNX_OPSET = 18
TIMING_CACHE_NAME = "timing.cache"

Profile = tuple[int, int, int]
"""(min, opt, max) frame counts S of one TensorRT optimisation profile."""


def static_profiles(window_sizes: Sequence[int]) -> tuple[Profile, ...]:
    """One static profile (S, S, S) per distinct window size, in ascending order."""
    sizes = sorted({int(s) for s in window_sizes})
    if not sizes or sizes[0] < 1:
        raise ValueError(f"window sizes must be positive frame counts; got {list(window_sizes)}")
    return tuple((s, s, s) for s in sizes)


def check_profiles(profiles: Sequence[Sequence[int]]) -> tuple[Profile, ...]:
    """Validate (min, opt, max) triples: 1 <= min <= opt <= max."""
    out = []
    for p in profiles:
        lo, opt, hi = (int(v) for v in p)
        if not 1 <= lo <= opt <= hi:
            raise ValueError(f"an optimisation profile needs 1 <= min <= opt <= max frames; got {tuple(p)}")
        out.append((lo, opt, hi))
    if not out:
        raise ValueError("at least one optimisation profile is needed")
    return tuple(out)


@dataclass(frozen=True)
class PlanShape:
    """Input shapes a plan accepts: (H, W) and its optimisation profiles over S."""

    input_size: tuple[int, int]
    profiles: tuple[Profile, ...]

    def accepts(self, frames: int) -> bool:
        return any(lo <= frames <= hi for lo, _, hi in self.profiles)

    def profile_for(self, frames: int) -> int | None:
        """Index of the profile that runs S frames: an exact static one first, else the narrowest range."""
        fitting = [(hi - lo, i) for i, (lo, _, hi) in enumerate(self.profiles) if lo <= frames <= hi]
        return min(fitting)[1] if fitting else None

    def describe(self) -> str:
        parts = [str(lo) if lo == hi else f"{lo}-{hi}" for lo, _, hi in self.profiles]
        return f"{self.input_size[0]}x{self.input_size[1]}, S in {{{', '.join(parts)}}}"


@dataclass(frozen=True)
class DeviceInfo:
    """The GPU and TensorRT a plan is built for or run on."""

    gpu_name: str
    compute_capability: str
    """'major.minor', e.g. '8.7' for Jetson Orin."""
    tensorrt_version: str

    def describe(self) -> str:
        return f"GPU {self.gpu_name} (sm {self.compute_capability}) with TensorRT {self.tensorrt_version}"

    @classmethod
    def current(cls, device: str = "cuda") -> DeviceInfo:
        """The running machine's GPU (via torch) and TensorRT version; EngineError when either is missing."""
        from iggt_ros.engine.tensorrt_support import import_tensorrt

        trt = import_tensorrt()
        import torch

        if not torch.cuda.is_available():
            raise EngineError("engine.backend 'tensorrt' needs a CUDA device, and PyTorch sees none")
        index = torch.device(device if device.startswith("cuda") else "cuda").index or 0
        major, minor = torch.cuda.get_device_capability(index)
        return cls(torch.cuda.get_device_name(index), f"{major}.{minor}", str(trt.__version__))


def plan_cache_key(model_hash: str, shape: PlanShape, precision: str, device: DeviceInfo) -> str:
    """Key of a plan: hash of weights, shapes, precision, GPU name and capability, TensorRT version."""
    payload = {
        "format": PLAN_FORMAT,
        "model_sha256": model_hash,
        "input_size": list(shape.input_size),
        "profiles": [list(p) for p in shape.profiles],
        "precision": precision,
        "gpu_name": device.gpu_name,
        "compute_capability": device.compute_capability,
        "tensorrt_version": device.tensorrt_version,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def onnx_cache_key(model_hash: str, input_size: tuple[int, int], opset: int = ONNX_OPSET) -> str:
    """Key of an ONNX export: weights, (H, W) and opset (the frame count is dynamic)."""
    payload = {"model_sha256": model_hash, "input_size": list(input_size), "opset": opset}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def _root(cache_dir: str | Path) -> Path:
    return Path(os.path.expanduser(str(cache_dir)))


def onnx_path(cache_dir: str | Path, key: str) -> Path:
    return _root(cache_dir) / f"onnx-{key}" / ONNX_NAME


def plan_path(cache_dir: str | Path, key: str) -> Path:
    return _root(cache_dir) / f"trt-{key}" / PLAN_NAME


def timing_cache_path(cache_dir: str | Path) -> Path:
    return _root(cache_dir) / TIMING_CACHE_NAME


@dataclass
class PlanMetadata:
    """What a plan was built from and for; written next to the plan as `<plan>.json`."""

    model_sha256: str
    input_size: tuple[int, int]
    profiles: tuple[Profile, ...]
    precision: str
    gpu_name: str
    compute_capability: str
    tensorrt_version: str
    fp32_patterns: list[str] = field(default_factory=list)
    workspace_bytes: int = 0
    onnx_file: str = ""
    typing: str = ""
    """'strong' (precision cast into the graph) or 'weak' (builder precision constraints)."""
    format: str = PLAN_FORMAT

    @property
    def shape(self) -> PlanShape:
        return PlanShape(tuple(self.input_size), tuple(tuple(p) for p in self.profiles))

    @property
    def device(self) -> DeviceInfo:
        return DeviceInfo(self.gpu_name, self.compute_capability, self.tensorrt_version)

    @property
    def cache_key(self) -> str:
        return plan_cache_key(self.model_sha256, self.shape, self.precision, self.device)

    @staticmethod
    def sidecar(plan: str | Path) -> Path:
        return Path(f"{plan}.json")

    def write(self, plan: str | Path) -> Path:
        path = self.sidecar(plan)
        data = asdict(self)
        data["cache_key"] = self.cache_key
        path.write_text(json.dumps(data, indent=2) + "\n")
        return path

    @classmethod
    def read(cls, plan: str | Path) -> PlanMetadata:
        path = cls.sidecar(plan)
        if not path.is_file():
            raise EngineError(f"TensorRT plan {plan} has no metadata file {path.name}, so nothing says which GPU "
                              "and TensorRT version built it; rebuild it with `iggt-ros export`")
        try:
            data = json.loads(path.read_text())
            data.pop("cache_key", None)
            meta = cls(**data)
        except (json.JSONDecodeError, TypeError) as exc:
            raise EngineError(f"{path} is not a valid plan metadata file ({exc}); rebuild with `iggt-ros export`") \
                from exc
        if meta.format != PLAN_FORMAT:
            raise EngineError(f"{plan} has metadata format {meta.format!r}, this version reads {PLAN_FORMAT!r}; "
                              "rebuild it with `iggt-ros export`")
        meta.input_size = tuple(meta.input_size)
        meta.profiles = tuple(tuple(p) for p in meta.profiles)
        return meta


def plan_mismatches(meta: PlanMetadata, device: DeviceInfo) -> list[str]:
    """What differs between the machine a plan was built on and this one (empty: compatible)."""
    problems = []
    if meta.tensorrt_version != device.tensorrt_version:
        problems.append(f"TensorRT {meta.tensorrt_version} built it, this is TensorRT {device.tensorrt_version}")
    if meta.compute_capability != device.compute_capability:
        problems.append(f"it was built for compute capability {meta.compute_capability}, "
                        f"this GPU is {device.compute_capability}")
    if meta.gpu_name != device.gpu_name:
        problems.append(f"it was built on {meta.gpu_name!r}, this GPU is {device.gpu_name!r}")
    return problems


def check_plan_compatible(meta: PlanMetadata, device: DeviceInfo, plan: str | Path) -> None:
    """Refuse (EngineError) a plan built on another GPU model or TensorRT version, saying how to rebuild."""
    problems = plan_mismatches(meta, device)
    if problems:
        raise EngineError(
            f"TensorRT plan {plan} cannot run here: {'; '.join(problems)}. Plans are specific to the GPU and the "
            "TensorRT version; build one on this machine with `iggt-ros export` (the node never rebuilds at "
            "start-up unless engine.build_if_missing is set)")


def find_plan(
    cache_dir: str | Path, model_hash: str, shape: PlanShape, precision: str, device: DeviceInfo
) -> Path | None:
    """The cached plan for exactly this key, or None; raises EngineError when a plan for the same weights
    and shapes exists but was built on another GPU or TensorRT version (so the user learns why)."""
    key = plan_cache_key(model_hash, shape, precision, device)
    path = plan_path(cache_dir, key)
    if path.is_file():
        check_plan_compatible(PlanMetadata.read(path), device, path)
        return path
    for other in sorted(_root(cache_dir).glob(f"trt-*/{PLAN_NAME}")):
        try:
            meta = PlanMetadata.read(other)
        except EngineError:
            continue
        if meta.model_sha256 == model_hash and meta.shape == shape and meta.precision == precision:
            check_plan_compatible(meta, device, other)
    return None
