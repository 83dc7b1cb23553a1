"""Where exported models live, when a TensorRT plan may run on this machine, and how the cache is written.

A TensorRT plan is only valid for the ONNX, input shapes and build settings it was built from, on the
GPU and TensorRT version that built it. Every plan therefore carries a metadata file (`<plan>.json`)
and lives in a cache directory named by a key over all of those, so the node finds the right plan at
start-up or refuses with a clear message -- never rebuilding silently, never running a plan of
another GPU or TensorRT version. The key covers:

* the weights (SHA-256) and this package's version (a newer exporter may write another graph);
* the input size and the optimisation profiles;
* every build setting that changes the plan: precision, typing, FP32 patterns and layer types,
  TF32, workspace limit, optimisation level, auxiliary streams, profiling verbosity;
* the GPU: name, compute capability, SM count and memory (every Jetson Orin module calls itself
  "Orin" with capability 8.7; SM count and memory tell an AGX from an NX or a Nano), and the TensorRT
  version.

Writers hold a per-entry file lock (fcntl) for the whole export or build, so two nodes asking for
the same plan build it once: the second waits and then reuses it. Files are produced in a private
temporary folder and moved into place with `os.replace`, metadata first and the plan (or the ONNX)
last, so a reader that sees the plan sees a complete entry.

Layout of `engine.cache_dir`:

    <cache_dir>/weights_sha256.json                 memo of weight-file hashes (path, size, mtime)
    <cache_dir>/onnx-<key>/export.json              what was exported, how, and its parity
    <cache_dir>/onnx-<key>/model.onnx               FP32 ONNX (+ model.onnx.data when large)
    <cache_dir>/onnx-<key>/model.fp16.onnx          mixed precision, FP16 initializers (+ .data)
    <cache_dir>/onnx-<key>/reference.npz            input and PyTorch FP32 outputs for parity checks
    <cache_dir>/trt-<key>/engine.plan               TensorRT plan
    <cache_dir>/trt-<key>/engine.plan.json          its PlanMetadata
    <cache_dir>/trt-<key>/engine.plan.parity.json
    <cache_dir>/timing-<device>.cache               TensorRT timing cache, one per GPU and TensorRT version

Everything here is pure Python except `DeviceInfo.current`, so the rules are testable without CUDA.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from iggt_ros import __version__ as PACKAGE_VERSION
from iggt_ros.engine.base import MAX_VIEWS, EngineError

log = logging.getLogger(__name__)

PLAN_FORMAT = "iggt_ros.tensorrt/2"
PLAN_NAME = "engine.plan"
ONNX_NAME = "model.onnx"
ONNX_OPSET = 18
DEFAULT_MAX_FRAMES = MAX_VIEWS
"""Largest S an ONNX export accepts unless told otherwise."""

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
    sm_count: int = 0
    """Streaming multiprocessors: 16 on an AGX Orin 64 GB, 8 on an Orin NX 16 GB or an Orin Nano 8 GB."""
    memory_gib: int = 0
    """Total device memory in GiB, rounded (unified memory on a Jetson: the module's RAM)."""

    def describe(self) -> str:
        return (f"GPU {self.gpu_name} (sm {self.compute_capability}, {self.sm_count} SMs, {self.memory_gib} GiB) "
                f"with TensorRT {self.tensorrt_version}")

    def slug(self) -> str:
        """A file-name-safe name of this GPU and TensorRT version (timing caches are specific to both)."""
        name = re.sub(r"[^A-Za-z0-9]+", "-", self.gpu_name).strip("-").lower() or "gpu"
        return (f"{name}-sm{self.compute_capability.replace('.', '')}-{self.sm_count}x-{self.memory_gib}g-"
                f"trt{self.tensorrt_version}")

    @classmethod
    def current(cls, device: str = "cuda") -> DeviceInfo:
        """The running machine's GPU (via torch) and TensorRT version; EngineError when either is missing."""
        from iggt_ros.engine.tensorrt_support import import_tensorrt

        trt = import_tensorrt()
        import torch

        if not torch.cuda.is_available():
            raise EngineError("engine.backend 'tensorrt' needs a CUDA device, and PyTorch sees none")
        index = torch.device(device if device.startswith("cuda") else "cuda").index or 0
        props = torch.cuda.get_device_properties(index)
        return cls(props.name, f"{props.major}.{props.minor}", str(trt.__version__),
                   int(props.multi_processor_count), round(props.total_memory / 2**30))


def _digest(payload: Mapping) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


def plan_cache_key(model_hash: str, shape: PlanShape, build: Mapping, device: DeviceInfo,
                   package_version: str = PACKAGE_VERSION) -> str:
    """Key of a plan: weights, package version, shapes, every build setting (`BuildSettings.key_fields`),
    the GPU (name, capability, SM count, memory) and the TensorRT version."""
    return _digest({
        "format": PLAN_FORMAT,
        "package_version": package_version,
        "model_sha256": model_hash,
        "input_size": list(shape.input_size),
        "profiles": [list(p) for p in shape.profiles],
        "build": dict(build),
        "device": asdict(device),
    })


def onnx_cache_key(model_hash: str, input_size: tuple[int, int], max_frames: int = DEFAULT_MAX_FRAMES,
                   opset: int = ONNX_OPSET, package_version: str = PACKAGE_VERSION) -> str:
    """Key of an ONNX export: weights, (H, W), the largest S, opset and the package version (which
    decides the graph, its node names and the precision rewrite)."""
    return _digest({"model_sha256": model_hash, "input_size": list(input_size), "max_frames": int(max_frames),
                    "opset": opset, "package_version": package_version})


def _root(cache_dir: str | Path) -> Path:
    return Path(os.path.expanduser(str(cache_dir)))


def onnx_path(cache_dir: str | Path, key: str) -> Path:
    return _root(cache_dir) / f"onnx-{key}" / ONNX_NAME


def plan_path(cache_dir: str | Path, key: str) -> Path:
    return _root(cache_dir) / f"trt-{key}" / PLAN_NAME


def timing_cache_path(cache_dir: str | Path, device: DeviceInfo) -> Path:
    """One timing cache per GPU and TensorRT version: TensorRT then never has to ignore a mismatch."""
    return _root(cache_dir) / f"timing-{device.slug()}.cache"


@dataclass
class PlanMetadata:
    """What a plan was built from and for; written next to the plan as `<plan>.json`."""

    model_sha256: str
    input_size: tuple[int, int]
    profiles: tuple[Profile, ...]
    build: dict
    """`BuildSettings.key_fields()`: precision, typing, FP32 patterns, TF32, workspace, ..."""
    device: DeviceInfo
    package_version: str = PACKAGE_VERSION
    onnx_file: str = ""
    format: str = PLAN_FORMAT

    @property
    def shape(self) -> PlanShape:
        return PlanShape(tuple(self.input_size), tuple(tuple(p) for p in self.profiles))

    @property
    def precision(self) -> str:
        return str(self.build.get("precision", ""))

    @property
    def cache_key(self) -> str:
        return plan_cache_key(self.model_sha256, self.shape, self.build, self.device, self.package_version)

    @staticmethod
    def sidecar(plan: str | Path) -> Path:
        return Path(f"{plan}.json")

    def to_json(self) -> str:
        data = asdict(self)
        data["cache_key"] = self.cache_key
        return json.dumps(data, indent=2) + "\n"

    def write(self, plan: str | Path) -> Path:
        """Write `<plan>.json` atomically."""
        path = self.sidecar(plan)
        atomic_write(path, self.to_json().encode())
        return path

    @classmethod
    def read(cls, plan: str | Path) -> PlanMetadata:
        path = cls.sidecar(plan)
        if not path.is_file():
            raise EngineError(f"TensorRT plan {plan} has no metadata file {path.name}, so nothing says which GPU "
                              "and TensorRT version built it; rebuild it with `iggt-ros build-engine`")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise EngineError(f"{path} is not a valid plan metadata file ({exc}); rebuild the plan with "
                              "`iggt-ros build-engine`") from exc
        if not isinstance(data, dict) or data.get("format") != PLAN_FORMAT:
            found = data.get("format") if isinstance(data, dict) else None
            raise EngineError(f"{plan} has metadata format {found!r}, this version reads {PLAN_FORMAT!r}; "
                              "rebuild it with `iggt-ros build-engine`")
        try:
            data.pop("cache_key", None)
            data["device"] = DeviceInfo(**data["device"])
            meta = cls(**data)
        except (KeyError, TypeError) as exc:
            raise EngineError(f"{path} is not a valid plan metadata file ({exc}); rebuild the plan with "
                              "`iggt-ros build-engine`") from exc
        meta.input_size = tuple(meta.input_size)
        meta.profiles = tuple(tuple(p) for p in meta.profiles)
        return meta


def plan_mismatches(meta: PlanMetadata, device: DeviceInfo) -> list[str]:
    """What differs between the machine a plan was built on and this one (empty: compatible)."""
    built = meta.device
    problems = []
    if built.tensorrt_version != device.tensorrt_version:
        problems.append(f"TensorRT {built.tensorrt_version} built it, this is TensorRT {device.tensorrt_version}")
    if built.compute_capability != device.compute_capability:
        problems.append(f"it was built for compute capability {built.compute_capability}, "
                        f"this GPU is {device.compute_capability}")
    if built.gpu_name != device.gpu_name:
        problems.append(f"it was built on {built.gpu_name!r}, this GPU is {device.gpu_name!r}")
    if built.sm_count != device.sm_count or built.memory_gib != device.memory_gib:
        problems.append(f"it was built on a GPU with {built.sm_count} SMs and {built.memory_gib} GiB, this one has "
                        f"{device.sm_count} SMs and {device.memory_gib} GiB (another module of the family)")
    return problems


def check_plan_compatible(meta: PlanMetadata, device: DeviceInfo, plan: str | Path) -> None:
    """Refuse (EngineError) a plan built on another GPU or TensorRT version, saying how to rebuild."""
    problems = plan_mismatches(meta, device)
    if meta.package_version != PACKAGE_VERSION:
        problems.append(f"iggt_ros {meta.package_version} built it, this is iggt_ros {PACKAGE_VERSION}")
    if problems:
        raise EngineError(
            f"TensorRT plan {plan} cannot run here: {'; '.join(problems)}. Plans are specific to the GPU, the "
            "TensorRT version and the exporter; build one on this machine with `iggt-ros build-engine` (the "
            "node never rebuilds at start-up unless engine.build_if_missing is set)")


def check_plan_shape(meta: PlanMetadata, plan: str | Path, input_size: Sequence[int] | None,
                     window_sizes: Sequence[int]) -> None:
    """Refuse (EngineError) a plan that cannot run the configured input size or every window size."""
    shape = meta.shape
    problems = []
    if input_size is not None and tuple(input_size) != tuple(shape.input_size):
        problems.append(f"input {input_size[0]}x{input_size[1]} (input.image_height x image_width) is configured")
    missing = [int(s) for s in window_sizes if not shape.accepts(int(s))]
    if missing:
        problems.append(f"window size S={', '.join(map(str, missing))} is configured (window.size)")
    if problems:
        frames = " ".join(str(int(s)) for s in window_sizes) or "S"
        raise EngineError(
            f"TensorRT plan {plan} accepts {shape.describe()}, but {' and '.join(problems)}; build a plan for "
            f"them (`iggt-ros build-engine BUNDLE --frames {frames}`) or change the configuration to match")


def find_plan(cache_dir: str | Path, model_hash: str, shape: PlanShape, build: Mapping,
              device: DeviceInfo) -> Path | None:
    """The cached plan for this key; else the newest plan of the same weights, shapes and precision built
    here with other settings (e.g. a smaller workspace given to `build-engine`); else None.

    Raises EngineError when the only plans for the same weights, shapes and precision were built on another
    GPU, TensorRT or package version, so the user learns why instead of reading "not found".
    """
    key = plan_cache_key(model_hash, shape, build, device)
    path = plan_path(cache_dir, key)
    if path.is_file():
        check_plan_compatible(PlanMetadata.read(path), device, path)
        return path
    usable, refused = [], None
    for other in sorted(_root(cache_dir).glob(f"trt-*/{PLAN_NAME}")):
        try:
            meta = PlanMetadata.read(other)
        except EngineError:
            continue
        if meta.model_sha256 != model_hash or meta.shape != shape or meta.precision != build.get("precision"):
            continue
        try:
            check_plan_compatible(meta, device, other)
        except EngineError as exc:
            refused = exc
            continue
        usable.append((other.stat().st_mtime_ns, other, meta))
    if usable:
        _, other, meta = max(usable, key=lambda u: u[0])
        changed = sorted(k for k in set(build) | set(meta.build) if build.get(k) != meta.build.get(k))
        log.info("using %s, built with other settings (%s)", other, ", ".join(changed))
        return other
    if refused is not None:
        raise refused
    return None


# ---------------------------------------------------------------------------------------------
# Writing: locks, atomic replacement, one producer per entry
# ---------------------------------------------------------------------------------------------
def atomic_write(path: str | Path, data: bytes) -> None:
    """Write `path` via a temporary file in the same folder and `os.replace`: readers see old or new, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def lock_path(target: str | Path) -> Path:
    target = Path(target)
    return target.parent / f".{target.name}.lock"


@contextlib.contextmanager
def file_lock(path: str | Path, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold an exclusive fcntl lock on `path` (created if needed); `on_wait` runs once if another holder
    makes us wait. The lock goes with the process, so a crashed builder never leaves the entry locked."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


@dataclass
class Produced:
    """How `produce_once` got its target."""

    path: Path
    built: bool
    """True: this call produced it; False: it was there (possibly made by the process we waited for)."""
    waited: bool = False
    """True: another process held the entry's lock when we asked."""


def produce_once(target: str | Path, produce: Callable[[Path], None], *, rebuild: bool = False,
                 on_wait: Callable[[], None] | None = None) -> Produced:
    """Make `target` exactly once across processes.

    Under the entry's lock: when `target` exists (and not `rebuild`) it is reused. Otherwise `produce(folder)`
    writes the entry's files into a private temporary folder beside `target`, named as they will be
    (`folder / target.name` among them); they are then moved into place, every other file first and
    `target` last, so the appearance of `target` means the entry is complete.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    waited = False

    def waiting() -> None:
        nonlocal waited
        waited = True
        log.info("another process is producing %s; waiting for it", target)
        if on_wait is not None:
            on_wait()

    with file_lock(lock_path(target), waiting):
        if target.is_file() and not rebuild:
            return Produced(target, built=False, waited=waited)
        folder = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
        try:
            produce(folder)
            if not (folder / target.name).is_file():
                raise RuntimeError(f"producing {target} wrote no {target.name}")
            files = sorted(p for p in folder.iterdir() if p.is_file() and p.name != target.name)
            for path in [*files, folder / target.name]:
                os.replace(path, target.parent / path.name)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    return Produced(target, built=True, waited=waited)


def write_plan_files(plan: str | Path, data: bytes, meta: PlanMetadata) -> None:
    """The plan's metadata, then the plan, each written atomically."""
    meta.write(plan)
    atomic_write(plan, data)
