"""Build a TensorRT plan from the exported ONNX with the TensorRT 10 Python builder API.

Precision: the matrix work (attention and MLP matmuls, convolutions of the backbone) runs in FP16 (or
BF16), while LayerNorms, the RoPE rotation and the dense heads stay FP32: the heads' exp/expm1
activations overflow FP16, and LayerNorm statistics and RoPE angles over 48 blocks are kept exact
as a precaution (the FP16 plan's error against PyTorch FP32 is what `build-engine` reports). The
attention's matmul-softmax-matmul is left in half precision so TensorRT can fuse it (its fused
kernels accumulate the softmax in FP32); pinned, it would materialise S*T x S*T scores per head --
773 M per global layer of the official model at S=8 and 504x336.

The default strongly typed build (`typing="strong"`, the only kind TensorRT 11 has) parses the
mixed-precision graph `mixed_precision` writes (FP16 initializers, FP32 where pinned), so nothing
can drop a pin. The weakly typed build (`typing="weak"`, FP16 only) pins layers by type
(normalisation) and by the same name patterns with OBEY_PRECISION_CONSTRAINTS. Either way, a
pattern that matches no node fails the build: a silently lost pin would run the heads in FP16.
TF32 is off unless asked for, so FP32 layers compute in FP32.

Shapes: one optimisation profile per configured window size, static S by default (dynamic shapes
with FP16 have been the least robust path on Jetson); a min/opt/max range is optional.

Memory: the workspace limit (default 2 GiB) caps TensorRT's tactic scratch only; the parsed weights,
their device copies and the activations of the tactics being timed come on top. Auxiliary streams
are off by default to keep the peak low. A timing cache per GPU and TensorRT version makes rebuilds
on the same machine fast.
"""

from __future__ import annotations

import logging
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from iggt_ros.engine.base import EngineError
from iggt_ros.engine.plan_cache import (
    DeviceInfo,
    PlanMetadata,
    Profile,
    atomic_write,
    check_profiles,
    produce_once,
    write_plan_files,
)
from iggt_ros.engine.tensorrt_support import import_tensorrt

log = logging.getLogger(__name__)

DEFAULT_FP32_PATTERNS = (
    r"norm",  # every LayerNorm / qk-norm / trunk norm (module paths and op names both say 'norm')
    r"(^|/)rope/",  # the RoPE rotation (export tags its nodes with 'rope')
    r"^(camera_head|depth_head|point_head|part_adaptor|part_head)[./]",  # the dense heads and the camera head
)
"""Regular expressions over layer names; a match keeps the layer in FP32."""
DEFAULT_FP32_LAYER_TYPES = ("NORMALIZATION",)
"""TensorRT layer types kept in FP32 whatever their names (weakly typed builds). Softmax is not among them:
pinning the attention softmax between two FP16 matrix multiplies stops TensorRT fusing the attention."""
NON_COMPUTE_LAYER_TYPES = ("SHAPE", "CONSTANT", "CAST", "IDENTITY", "ASSERTION", "CONDITION")
PRECISIONS = ("fp16", "bf16", "fp32")
HALF_PRECISIONS = ("fp16", "bf16")


@dataclass
class BuildSettings:
    """How to build a plan. Every field but `timing_cache` and `extra` is part of the plan's cache key."""

    profiles: tuple[Profile, ...] = ((8, 8, 8),)
    """(min, opt, max) frame counts per optimisation profile; (S, S, S) is a static profile."""
    precision: str = "fp16"
    """'fp16' or 'bf16' (matrix work in half precision, sensitive layers pinned to FP32) or 'fp32'."""
    workspace_bytes: int = 2 << 30
    """Cap on TensorRT's tactic scratch memory only; weights and activations come on top."""
    fp32_patterns: Sequence[str] = DEFAULT_FP32_PATTERNS
    fp32_layer_types: Sequence[str] = DEFAULT_FP32_LAYER_TYPES
    timing_cache: Path | None = None
    optimization_level: int = 3
    max_aux_streams: int | None = 0
    """0 keeps peak memory low on Jetson; None lets TensorRT decide."""
    typing: str = "strong"
    """'strong': precision cast into the graph (TensorRT >= 9, required by 11; the only one for bf16);
    'weak': builder flags and per-layer precision constraints (TensorRT 10)."""
    tf32: bool = False
    """Let FP32 layers use TF32 tensor cores (TensorRT's default). Off: FP32 means FP32."""
    profiling_verbosity: str = "layer_names_only"
    """'detailed' lets the engine inspector report every layer and its kernels (the GPU verification)."""
    extra: dict = field(default_factory=dict)

    def validate(self) -> None:
        self.profiles = check_profiles(self.profiles)
        if self.typing not in ("strong", "weak"):
            raise ValueError(f"TensorRT typing must be 'strong' or 'weak'; got {self.typing!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"TensorRT precision must be one of {', '.join(PRECISIONS)}; got {self.precision!r}")
        if self.precision == "bf16" and self.typing != "strong":
            raise ValueError("TensorRT precision 'bf16' needs typing 'strong' (bf16 is written into the graph)")
        if self.workspace_bytes < (64 << 20):
            raise ValueError("the TensorRT workspace limit must be at least 64 MiB")
        if self.profiling_verbosity not in ("layer_names_only", "detailed"):
            raise ValueError(f"profiling_verbosity must be 'layer_names_only' or 'detailed'; got "
                             f"{self.profiling_verbosity!r}")
        for pattern in self.fp32_patterns:
            re.compile(pattern)

    def key_fields(self) -> dict:
        """The settings that change the plan, for its cache key and metadata."""
        return {"precision": self.precision, "typing": self.typing, "fp32_patterns": list(self.fp32_patterns),
                "fp32_layer_types": list(self.fp32_layer_types), "workspace_bytes": int(self.workspace_bytes),
                "optimization_level": int(self.optimization_level), "max_aux_streams": self.max_aux_streams,
                "tf32": bool(self.tf32), "profiling_verbosity": self.profiling_verbosity}


def keeps_fp32(name: str, type_name: str, patterns: Sequence[str], layer_types: Sequence[str]) -> bool:
    """Whether a layer of this name and TensorRT type (e.g. 'NORMALIZATION') is pinned to FP32."""
    if type_name in NON_COMPUTE_LAYER_TYPES:
        return False
    return type_name in layer_types or any(re.search(p, name) for p in patterns)


def _pin_fp32_layers(network, trt, settings: BuildSettings) -> tuple[int, int]:
    """Set FP32 precision and output types on the matching layers; returns (pinned, total).

    Raises EngineError when a pattern matches no layer (the pin would be lost without a word)."""
    from iggt_ros.engine.mixed_precision import check_patterns_match

    layers = [network.get_layer(i) for i in range(network.num_layers)]
    check_patterns_match([layer.name for layer in layers], settings.fp32_patterns, "the parsed network")
    float_types = (trt.float32, trt.float16)
    pinned = 0
    for layer in layers:
        if not keeps_fp32(layer.name, layer.type.name, settings.fp32_patterns, settings.fp32_layer_types):
            continue
        outputs = [j for j in range(layer.num_outputs) if layer.get_output(j).dtype in float_types]
        if not outputs:
            continue
        layer.precision = trt.float32
        for j in outputs:
            layer.set_output_type(j, trt.float32)
        pinned += 1
    return pinned, network.num_layers


def build_plan(onnx_file: str | Path, plan_file: str | Path, settings: BuildSettings, model_sha256: str,
               device: str = "cuda", *, rebuild: bool = True, on_wait: Callable[[], None] | None = None
               ) -> PlanMetadata:
    """Parse the ONNX, build and serialise the plan; returns its metadata.

    The build holds the plan's lock (a second process asking for the same plan waits, then reuses it
    unless `rebuild`), and the files appear atomically: `<plan>.json` first, the plan last.
    """
    trt = import_tensorrt()
    settings.validate()
    info = DeviceInfo.current(device)
    onnx_file, plan_file = Path(onnx_file), Path(plan_file)
    if not onnx_file.is_file():
        raise EngineError(f"ONNX file {onnx_file} does not exist; export it with `iggt-ros export --onnx-only`")

    def produce(folder: Path) -> None:
        data, meta = _build(trt, onnx_file, settings, model_sha256, info, device, folder)
        write_plan_files(folder / plan_file.name, data, meta)

    produce_once(plan_file, produce, rebuild=rebuild, on_wait=on_wait)
    meta = PlanMetadata.read(plan_file)
    log.info("TensorRT plan %s (%s)", plan_file, meta.shape.describe())
    return meta


def _source_graph(onnx_file: Path, settings: BuildSettings, scratch: Path) -> Path:
    """The graph the build parses: for strongly typed FP16/BF16 the mixed-precision graph (taken as it is
    when `onnx_file` already is one, else rewritten into `scratch`); the ONNX itself otherwise."""
    from iggt_ros.engine.mixed_precision import read_precision, write_mixed_precision

    written = read_precision(onnx_file)
    if written is not None:
        half, patterns = written
        if settings.typing != "strong" or settings.precision != half:
            raise EngineError(f"{onnx_file} is a {half} mixed-precision graph; build it with precision {half!r} "
                              "and typing 'strong', or give the FP32 model.onnx next to it")
        settings.fp32_patterns = tuple(patterns)
        return onnx_file
    if settings.typing == "strong" and settings.precision in HALF_PRECISIONS:
        source = scratch / f"{onnx_file.stem}.{settings.precision}.onnx"
        report = write_mixed_precision(onnx_file, source, settings.fp32_patterns, settings.precision)
        log.info("TensorRT: %s", report.describe())
        return source
    return onnx_file


def _build(trt, onnx_file: Path, settings: BuildSettings, model_sha256: str, info: DeviceInfo, device: str,
           scratch: Path) -> tuple[memoryview, PlanMetadata]:
    import torch

    strong = settings.typing == "strong"
    if not strong and not hasattr(trt.BuilderFlag, "FP16"):
        raise EngineError(f"TensorRT {trt.__version__} has no weakly typed builds; use typing='strong'")
    with tempfile.TemporaryDirectory(dir=scratch) as work, torch.cuda.device(torch.device(device)):
        source = _source_graph(onnx_file, settings, Path(work))
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        # TensorRT 10 networks are always explicit-batch; the only creation flag used is strong typing.
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strong else 0
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(source)):
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            raise EngineError(f"TensorRT cannot parse {source}: " + "; ".join(errors[:5]))
        images = network.get_input(0)
        _, channels, height, width = tuple(images.shape)
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(settings.workspace_bytes))
        config.builder_optimization_level = settings.optimization_level
        if settings.max_aux_streams is not None:
            config.max_aux_streams = settings.max_aux_streams
        if not settings.tf32:
            config.clear_flag(trt.BuilderFlag.TF32)  # FP32 layers compute in FP32, as promised
        if settings.profiling_verbosity == "detailed":
            config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
        if settings.precision == "fp16" and not strong:
            config.set_flag(trt.BuilderFlag.FP16)
            config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
            pinned, total = _pin_fp32_layers(network, trt, settings)
            log.info("TensorRT: %d of %d layers pinned to FP32", pinned, total)
        for lo, opt, hi in settings.profiles:
            profile = builder.create_optimization_profile()
            profile.set_shape(images.name, (lo, channels, height, width), (opt, channels, height, width),
                              (hi, channels, height, width))
            config.add_optimization_profile(profile)
        timing = _load_timing_cache(config, settings.timing_cache)
        serialized = builder.build_serialized_network(network, config)
        del parser, network  # the parsed weights are no longer needed
        if serialized is None:
            raise EngineError(f"TensorRT failed to build a plan from {source} (see the TensorRT log above); on a "
                              "Jetson lower the workspace (--workspace-gb) or the frames per profile, and stop "
                              "other GPU processes during the build")
        if timing is not None:
            atomic_write(timing, memoryview(config.get_timing_cache().serialize()))
    meta = PlanMetadata(model_sha256=model_sha256, input_size=(int(height), int(width)),
                        profiles=tuple(settings.profiles), build=settings.key_fields(), device=info,
                        onnx_file=str(onnx_file))
    return memoryview(serialized), meta


def _load_timing_cache(config, path: Path | None) -> Path | None:
    """Attach the timing cache at `path` (one per GPU and TensorRT version); a cache TensorRT refuses
    as mismatched is replaced by a fresh one, never used with its mismatch ignored."""
    data = Path(path).read_bytes() if path is not None and Path(path).is_file() else b""
    cache = config.create_timing_cache(data)
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        log.warning("TensorRT timing cache %s does not match this GPU or TensorRT; starting a new one", path)
        config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)
    return Path(path) if path is not None else None
