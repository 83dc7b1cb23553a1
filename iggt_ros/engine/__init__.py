"""Inference engines: one `Engine` interface over PyTorch, ONNX Runtime and TensorRT, plus export.

Importing this package is cheap (numpy only): torch, onnxruntime and tensorrt are imported by the
backend that needs them, when an engine is created.

    create_engine(EngineConfig, input_size, window_sizes)   an engine from the configuration
    preprocess_images / to_model_input / scale_intrinsics   the one preprocessing path
"""

from iggt_ros.engine.base import Engine, EngineError, ViewKey, WindowPrediction
from iggt_ros.engine.factory import create_engine
from iggt_ros.engine.preprocess import (
    DEFAULT_INPUT_SIZE,
    input_size_for_aspect,
    preprocess_images,
    scale_intrinsics,
    to_model_input,
)

__all__ = [
    "DEFAULT_INPUT_SIZE",
    "Engine",
    "EngineError",
    "ViewKey",
    "WindowPrediction",
    "create_engine",
    "input_size_for_aspect",
    "preprocess_images",
    "scale_intrinsics",
    "to_model_input",
]
