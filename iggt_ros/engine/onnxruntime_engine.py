"""ONNX Runtime backend: runs the exported model (`iggt-ros export --onnx-only`) on the CPU or CUDA.

The exported graph has a dynamic frame count S and a fixed (H, W), read back from the model's
input so the engine always reports the size it was exported for.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from iggt_ros.config import MAX_VIEWS, ThreadsConfig
from iggt_ros.engine.base import Engine, EngineError, ViewKey, WindowPrediction
from iggt_ros.engine.postprocess import OUTPUT_NAMES, run_window
from iggt_ros.engine.preprocess import check_window
from iggt_ros.threads import onnxruntime_options


class OnnxRuntimeEngine(Engine):
    """An `InferenceSession` over an exported IGGT graph.

    Args:
        path: the .onnx file (its external data file, if any, next to it).
        device: 'cpu', or 'cuda' / 'cuda:N' for the CUDA execution provider (must be available).
        threads: the thread policy (`threads` section): pool sizes and no spinning while waiting, which
            ONNX Runtime does by default and which stalls it on a shared CPU; None = the policy's defaults.
        max_views: largest window accepted (the graph was exported for up to this many frames).
    """

    name = "onnxruntime"

    def __init__(self, path: str | Path, device: str = "cpu", threads: ThreadsConfig | None = None,
                 max_views: int = MAX_VIEWS) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise EngineError("engine.backend 'onnxruntime' needs the onnxruntime package "
                              "(pip install 'iggt_ros[onnx]')") from exc
        path = Path(path)
        if not path.is_file():
            raise EngineError(f"ONNX model {path} does not exist; export one with `iggt-ros export --onnx-only`")
        if device == "cpu":
            providers: list = ["CPUExecutionProvider"]
        else:
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise EngineError(f"engine.device is {device!r} but this onnxruntime has no CUDA provider "
                                  f"(available: {ort.get_available_providers()}); install onnxruntime-gpu")
            index = int(device.split(":")[1]) if ":" in device else 0
            providers = [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
        options = ort.SessionOptions()
        onnxruntime_options(threads or ThreadsConfig(), options)
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise EngineError(f"onnxruntime cannot load {path}: {exc}") from exc
        inputs = self.session.get_inputs()
        outputs = [o.name for o in self.session.get_outputs()]
        if len(inputs) != 1 or tuple(outputs) != OUTPUT_NAMES:
            raise EngineError(f"{path} is not an IGGT export: inputs {[i.name for i in inputs]}, outputs {outputs} "
                              f"(expected one input 'images' and outputs {list(OUTPUT_NAMES)})")
        shape = inputs[0].shape
        if len(shape) != 4 or not all(isinstance(d, int) for d in shape[2:]):
            raise EngineError(f"{path}: input shape {shape} must be [S,3,H,W] with a fixed H and W")
        self._input_name = inputs[0].name
        self._size = (int(shape[2]), int(shape[3]))
        self.fixed_views = shape[0] if isinstance(shape[0], int) else None
        self.path = path
        self.device = device
        self.max_views = max_views
        self.name = "onnxruntime-cuda" if device != "cpu" else "onnxruntime-cpu"

    @property
    def input_size(self) -> tuple[int, int]:
        return self._size

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """The exported graph on a [S,3,H,W] float32 array in [0, 1]; outputs in `OUTPUT_NAMES` order."""
        if self.fixed_views is not None and batch.shape[0] != self.fixed_views:
            raise EngineError(f"{self.path} was exported for exactly {self.fixed_views} views; got {batch.shape[0]}")
        return self.session.run(None, {self._input_name: batch})

    def infer(self, images: np.ndarray, views: Sequence[ViewKey] | None = None) -> WindowPrediction:
        images = check_window(images, self._size, self.max_views)
        return run_window(images, lambda batch: batch, self.run, self.name)

    def close(self) -> None:
        self.session = None
