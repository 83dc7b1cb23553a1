"""Build a TensorRT plan from the exported ONNX with the TensorRT Python builder API.

Precision: the matrix work (attention and MLP matmuls, convolutions of the backbone) runs in FP16,
while LayerNorms, softmax, the RoPE rotation and the dense heads stay FP32. All-FP16 ports of VGGT
lost most of their pose accuracy (LayerNorm/softmax/RoPE accumulating in half precision over 48
blocks), and the heads' exp/expm1 activations overflow FP16. Layers are pinned to FP32 by layer type
(normalisation, softmax) and by name patterns over the module paths `export` writes into node names,
with OBEY_PRECISION_CONSTRAINTS so TensorRT cannot silently drop the pins. That is the weakly typed
build (`typing="weak"`, TensorRT 8.6-10). The default strongly typed build (`typing="strong"`, the
only kind TensorRT 11 has) writes the same policy into the graph as explicit casts
(`mixed_precision`), so TensorRT cannot fuse a pinned LayerNorm into an FP16 kernel either.

Shapes: one optimisation profile per configured window size, static S by default (dynamic shapes
with FP16 have been the least robust path on Jetson); a min/opt/max range is optional.

Memory: the workspace limit defaults to 2 GiB so builds fit an 8 GB Jetson; auxiliary streams are
off by default for the same reason. A timing cache file makes rebuilds on the same machine fast.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from iggt_ros.engine.base import EngineError
from iggt_ros.engine.plan_cache import DeviceInfo, PlanMetadata, Profile, check_profiles
from iggt_ros.engine.tensorrt_support import import_tensorrt

log = logging.getLogger(__name__)

DEFAULT_FP32_PATTERNS = (
    r"norm",  # every LayerNorm / qk-norm / trunk norm (module paths and op names both say 'norm')
    r"(^|/)rope/",  # the RoPE rotation (export tags its nodes with 'rope')
    r"^(camera_head|depth_head|point_head|part_adaptor|part_head)[./]",  # the dense heads and the camera head
)
"""Regular expressions over layer names; a match keeps the layer in FP32."""
DEFAULT_FP32_LAYER_TYPES = ("NORMALIZATION", "SOFTMAX")
"""TensorRT layer types kept in FP32 whatever their names."""
NON_COMPUTE_LAYER_TYPES = ("SHAPE", "CONSTANT", "CAST", "IDENTITY", "ASSERTION", "CONDITION")


@dataclass
class BuildSettings:
    """How to build a plan."""

    profiles: tuple[Profile, ...] = ((8, 8, 8),)
    """(min, opt, max) frame counts per optimisation profile; (S, S, S) is a static profile."""
    precision: str = "fp16"
    """'fp16' (matrix work in FP16, sensitive layers pinned to FP32) or 'fp32'."""
    workspace_bytes: int = 2 << 30
    fp32_patterns: Sequence[str] = DEFAULT_FP32_PATTERNS
    fp32_layer_types: Sequence[str] = DEFAULT_FP32_LAYER_TYPES
    timing_cache: Path | None = None
    optimization_level: int = 3
    max_aux_streams: int | None = 0
    """0 keeps peak memory low on Jetson; None lets TensorRT decide."""
    typing: str = "strong"
    """'strong': precision cast into the graph (TensorRT >= 9, required by 11); 'weak': builder flags and
    per-layer precision constraints (TensorRT 8.6-10)."""
    extra: dict = field(default_factory=dict)

    def validate(self) -> None:
        self.profiles = check_profiles(self.profiles)
        if self.typing not in ("strong", "weak"):
            raise ValueError(f"TensorRT typing must be 'strong' or 'weak'; got {self.typing!r}")
        if self.precision not in ("fp16", "fp32"):
            raise ValueError(f"TensorRT precision must be 'fp16' or 'fp32'; got {self.precision!r}")
        if self.workspace_bytes < (64 << 20):
            raise ValueError("the TensorRT workspace limit must be at least 64 MiB")
        for pattern in self.fp32_patterns:
            re.compile(pattern)


def keeps_fp32(name: str, type_name: str, patterns: Sequence[str], layer_types: Sequence[str]) -> bool:
    """Whether a layer of this name and TensorRT type (e.g. 'NORMALIZATION') is pinned to FP32."""
    if type_name in NON_COMPUTE_LAYER_TYPES:
        return False
    return type_name in layer_types or any(re.search(p, name) for p in patterns)


def _pin_fp32_layers(network, trt, settings: BuildSettings) -> tuple[int, int]:
    """Set FP32 precision and output types on the matching layers; returns (pinned, total)."""
    float_types = (trt.float32, trt.float16)
    pinned = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
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
               device: str = "cuda") -> PlanMetadata:
    """Parse the ONNX, build and serialise the plan, write `<plan>.json`; returns its metadata."""
    trt = import_tensorrt()
    settings.validate()
    info = DeviceInfo.current(device)
    onnx_file, plan_file = Path(onnx_file), Path(plan_file)
    strong = settings.typing == "strong"
    if not strong and not hasattr(trt.BuilderFlag, "FP16"):
        raise EngineError(f"TensorRT {trt.__version__} has no weakly typed builds; use typing='strong'")
    source = onnx_file
    if strong and settings.precision == "fp16":
        from iggt_ros.engine.mixed_precision import write_mixed_precision

        source = onnx_file.with_name(onnx_file.stem + ".mixed_fp16.onnx")
        half, total = write_mixed_precision(onnx_file, source, settings.fp32_patterns)
        log.info("TensorRT: %d of %d nodes cast to FP16 in %s", half, total, source)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
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
    cache_bytes = b""
    if settings.timing_cache is not None and Path(settings.timing_cache).is_file():
        cache_bytes = Path(settings.timing_cache).read_bytes()
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=True)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineError(f"TensorRT failed to build a plan from {onnx_file} (see the TensorRT log above); on a "
                          "Jetson try a smaller workspace (--workspace-gb) or fewer frames per profile")
    plan_file.parent.mkdir(parents=True, exist_ok=True)
    plan_file.write_bytes(bytes(serialized))
    if settings.timing_cache is not None:
        Path(settings.timing_cache).parent.mkdir(parents=True, exist_ok=True)
        Path(settings.timing_cache).write_bytes(bytes(config.get_timing_cache().serialize()))
    meta = PlanMetadata(
        model_sha256=model_sha256, input_size=(int(height), int(width)), profiles=tuple(settings.profiles),
        precision=settings.precision, gpu_name=info.gpu_name, compute_capability=info.compute_capability,
        tensorrt_version=info.tensorrt_version, fp32_patterns=list(settings.fp32_patterns),
        workspace_bytes=int(settings.workspace_bytes), onnx_file=str(onnx_file), typing=settings.typing,
    )
    meta.write(plan_file)
    log.info("TensorRT plan written to %s (%s)", plan_file, meta.shape.describe())
    return meta
