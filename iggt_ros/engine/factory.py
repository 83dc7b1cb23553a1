"""`create_engine`: an `EngineConfig` -> a ready `Engine`.

The node, the replay and the CLI create engines only through here, so every backend resolves
weights, cached exports and errors the same way. Backends import their heavy libraries only when
chosen. A TensorRT plan is never built behind the user's back: without a matching plan the
factory refuses with the export command to run, unless `engine.build_if_missing` asks for a build.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from iggt_ros.engine.base import Engine, EngineError
from iggt_ros.engine.preprocess import DEFAULT_INPUT_SIZE

if TYPE_CHECKING:  # the configuration module needs pyyaml; creating an engine does not
    from iggt_ros.config import EngineConfig, ThreadsConfig

log = logging.getLogger(__name__)

DEFAULT_WINDOW_SIZES = (8,)


def create_engine(
    config: EngineConfig,
    input_size: tuple[int, int] = DEFAULT_INPUT_SIZE,
    window_sizes: Sequence[int] = DEFAULT_WINDOW_SIZES,
    threads: ThreadsConfig | None = None,
) -> Engine:
    """Build the engine `config` describes.

    Args:
        config: the `engine` section of the configuration.
        input_size: (H, W) the pipeline feeds (input.image_height, input.image_width).
        window_sizes: frame counts S the engine must accept; selects (or builds) the TensorRT plan
            profiles and sizes the ONNX export. Torch and ONNX Runtime accept any S up to 12.
        threads: the thread policy (ONNX Runtime's pools are set per session; PyTorch's per process, by
            `iggt_ros.threads`); None = its defaults.

    Raises:
        EngineError: with what to change (config key, file, or command to run).
    """
    try:
        config.validate("engine")
    except ValueError as exc:
        raise EngineError(str(exc)) from exc
    backend = config.backend
    if backend == "oracle":
        raise EngineError("engine.backend 'oracle' answers from ground truth and is created by the replay of a "
                          "synthetic bag (iggt-ros replay / demo), not by create_engine; choose torch, "
                          "onnxruntime or tensorrt")
    if backend == "torch":
        from iggt_ros.engine.torch_engine import TorchEngine
        from iggt_ros.engine.weights import load_engine_model

        model, model_config, path = load_engine_model(config.checkpoint, config.model,
                                                      config.allow_partial_checkpoint)
        trained_hw = model_config.extra.get("input_hw") if not config.checkpoint else None
        if trained_hw and tuple(trained_hw) != tuple(input_size):
            # The embedded model knows one input size; any other costs time and quality.
            log.info("embedded model: input size %dx%d (its training size) instead of input.image_width x "
                     "image_height %dx%d", trained_hw[1], trained_hw[0], input_size[1], input_size[0])
            input_size = (int(trained_hw[0]), int(trained_hw[1]))
        log.info("torch engine: %s on %s (%s)", path, config.device, config.precision)
        return TorchEngine(model, input_size, config.device, config.precision)
    if backend == "onnxruntime":
        from iggt_ros.engine.onnxruntime_engine import OnnxRuntimeEngine

        if config.precision != "fp32":
            raise EngineError(f"engine.precision {config.precision!r} is not supported by onnxruntime: use 'fp32'")
        path = Path(config.engine_path).expanduser() if config.engine_path else _cached_onnx(config, input_size)
        return OnnxRuntimeEngine(path, config.device, threads=threads)
    if backend == "tensorrt":
        from iggt_ros.engine.tensorrt_engine import TensorRTEngine

        path = (Path(config.engine_path).expanduser() if config.engine_path
                else _cached_plan(config, input_size, window_sizes))
        return TensorRTEngine(path, config.device, input_size=input_size, window_sizes=window_sizes)
    raise EngineError(f"engine.backend {backend!r} is unknown")


def _cached_onnx(config: EngineConfig, input_size: tuple[int, int]) -> Path:
    """The ONNX export of the configured weights from the cache, exported now when build_if_missing."""
    from iggt_ros.engine import plan_cache
    from iggt_ros.engine.weights import checkpoint_path, file_sha256

    weights = checkpoint_path(config.checkpoint)
    key = plan_cache.onnx_cache_key(file_sha256(weights, config.cache_dir), input_size)
    path = plan_cache.onnx_path(config.cache_dir, key)
    if path.is_file():
        return path
    if not config.build_if_missing:
        raise EngineError(
            f"no ONNX export of {weights} at {input_size[0]}x{input_size[1]} in engine.cache_dir "
            f"({path.parent.parent}); set engine.engine_path to an ONNX file, run `iggt-ros export --onnx-only "
            f"--checkpoint {weights} --height {input_size[0]} --width {input_size[1]} --cache-dir {config.cache_dir}`,"
            " or set engine.build_if_missing: true")
    from iggt_ros.engine.export import export_to_cache

    log.warning("engine.build_if_missing: exporting %s to ONNX (this takes a while)", weights)
    return export_to_cache(config, input_size, window_sizes=(), tensorrt=False).onnx_path


def _cached_plan(config: EngineConfig, input_size: tuple[int, int], window_sizes: Sequence[int]) -> Path:
    """The TensorRT plan for this model, shape, precision, GPU and TensorRT version; built only on request."""
    from iggt_ros.engine import plan_cache
    from iggt_ros.engine.build_engine import cache_settings
    from iggt_ros.engine.weights import checkpoint_path, file_sha256

    weights = checkpoint_path(config.checkpoint)
    device = plan_cache.DeviceInfo.current(config.device)
    wanted = plan_cache.PlanShape(tuple(input_size), plan_cache.static_profiles(window_sizes))
    build = cache_settings(config.precision, window_sizes).key_fields()
    found = plan_cache.find_plan(config.cache_dir, file_sha256(weights, config.cache_dir), wanted, build, device)
    if found is not None:
        return found
    if not config.build_if_missing:
        sizes = " ".join(str(s) for s in window_sizes)
        raise EngineError(
            f"no TensorRT plan for {weights} ({input_size[0]}x{input_size[1]}, S={sizes}, {config.precision}) built "
            f"on this {device.describe()} in engine.cache_dir {config.cache_dir}; export a bundle where the weights "
            f"and PyTorch are (`iggt-ros export --checkpoint {weights} --height {input_size[0]} --width "
            f"{input_size[1]} --frames {sizes} --precision {config.precision} --onnx-only --output-dir BUNDLE`), "
            f"build the plan here (`iggt-ros build-engine BUNDLE --frames {sizes} --precision {config.precision} "
            f"--cache-dir {config.cache_dir}`, minutes) or set engine.build_if_missing: true to build at start-up")
    from iggt_ros.engine.export import export_to_cache

    log.warning("engine.build_if_missing: building a TensorRT plan for %s now (minutes on a Jetson)", weights)
    result = export_to_cache(config, input_size, window_sizes=window_sizes, tensorrt=True)
    assert result.plan_path is not None
    return result.plan_path
