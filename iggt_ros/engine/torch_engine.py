"""PyTorch backend: the reference every other backend is measured against.

Precision follows the official demo: `fp32` runs everything in float32; `bf16` / `fp16` run the
aggregator (the transformer backbone) under autocast while the heads stay float32 (the model turns
autocast off around them), because the depth/confidence activations overflow half precision.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from iggt_ros.engine.base import MAX_VIEWS, Engine, EngineError, ViewKey, WindowPrediction
from iggt_ros.engine.postprocess import run_window
from iggt_ros.engine.preprocess import DEFAULT_INPUT_SIZE, check_input_size, check_window
from iggt_ros.model import Iggt

AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
"""IGGT's frame limit per forward pass (see the window configuration)."""


def resolve_device(device: str) -> torch.device:
    """'cpu', 'cuda' or 'cuda:N' as a torch device; a clear error when CUDA is requested but absent."""
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise EngineError(f"engine.device is {device!r} but PyTorch sees no CUDA device; use 'cpu' or a CUDA build")
    return dev


class TorchEngine(Engine):
    """Runs an `Iggt` module eagerly on the CPU or a CUDA device.

    Args:
        model: a loaded model (weights in place); moved to `device` and put in eval mode.
        input_size: (H, W), multiples of 28; the positional tables are precomputed for it.
        device: 'cpu', 'cuda' or 'cuda:N'.
        precision: 'fp32', or 'bf16' / 'fp16' autocast for the backbone (heads stay fp32).
        max_views: largest window accepted.
    """

    name = "torch"

    def __init__(
        self,
        model: Iggt,
        input_size: tuple[int, int] = DEFAULT_INPUT_SIZE,
        device: str = "cpu",
        precision: str = "fp32",
        max_views: int = MAX_VIEWS,
    ) -> None:
        if precision not in ("fp32", *AUTOCAST_DTYPES):
            raise EngineError(f"engine.precision {precision!r} is not supported by the torch backend: "
                              "use 'fp32', 'bf16' or 'fp16'")
        try:
            self._size = check_input_size(input_size)
        except ValueError as exc:
            raise EngineError(str(exc)) from exc
        self.device = resolve_device(device)
        self.precision = precision
        self.max_views = max_views
        self.model = model.to(self.device).float().eval()
        self.model.fix_input_size(*self._size)
        self.name = f"torch-{precision}"

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        config=None,
        input_size: tuple[int, int] = DEFAULT_INPUT_SIZE,
        device: str = "cpu",
        precision: str = "fp32",
        allow_partial: bool = False,
    ) -> TorchEngine:
        """Load weights (see `iggt_ros.model.checkpoint.load_model`) and wrap them in an engine."""
        from iggt_ros.model.checkpoint import CheckpointError, load_model

        try:
            model, _ = load_model(path, config=config, allow_partial=allow_partial)
        except CheckpointError as exc:
            raise EngineError(str(exc)) from exc
        return cls(model, input_size, device, precision)

    @property
    def input_size(self) -> tuple[int, int]:
        return self._size

    def forward(self, batch: torch.Tensor) -> dict:
        """The model on a [S,3,H,W] float tensor in [0, 1] (already on the engine's device), with autocast."""
        dtype = AUTOCAST_DTYPES.get(self.precision)
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None):
            return self.model(batch)

    def infer(self, images: np.ndarray, views: Sequence[ViewKey] | None = None) -> WindowPrediction:
        images = check_window(images, self._size, self.max_views)

        def run(batch: torch.Tensor) -> dict:
            out = self.forward(batch)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            return out

        return run_window(images, lambda x: torch.from_numpy(x).to(self.device), run, self.name)

    def close(self) -> None:
        self.model = self.model.cpu()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
