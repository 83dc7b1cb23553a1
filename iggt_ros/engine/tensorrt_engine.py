"""TensorRT backend: runs a serialized plan built by `iggt-ros build-engine`, with torch CUDA tensors as buffers.

Before deserialising, the plan's metadata is checked against the configured input size and window
sizes (so a wrong `engine.engine_path` fails at configure time, not at the first window) and against
the running GPU and TensorRT version; a plan from another machine is refused with the command to
rebuild it (never rebuilt silently).

Execution uses the engine's own CUDA stream (TensorRT warns about, and synchronises around, the
legacy default stream) with the configured device current, so `cuda:1` runs on GPU 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from iggt_ros.engine.base import Engine, EngineError, ViewKey, WindowPrediction
from iggt_ros.engine.plan_cache import DeviceInfo, PlanMetadata, check_plan_compatible, check_plan_shape
from iggt_ros.engine.postprocess import OUTPUT_NAMES, run_window
from iggt_ros.engine.preprocess import check_window
from iggt_ros.engine.tensorrt_support import import_tensorrt


class TensorRTEngine(Engine):
    """One deserialised plan and one execution context on a CUDA device.

    Args:
        plan: the `.plan` file; its `<plan>.json` metadata must be next to it.
        device: 'cuda' or 'cuda:N'.
        input_size: (H, W) the pipeline will feed; None skips the check.
        window_sizes: every S the pipeline will feed; each must fall in one of the plan's profiles.
    """

    name = "tensorrt"

    def __init__(self, plan: str | Path, device: str = "cuda", input_size: Sequence[int] | None = None,
                 window_sizes: Sequence[int] = ()) -> None:
        plan = Path(plan)
        if not plan.is_file():
            raise EngineError(f"TensorRT plan {plan} does not exist; build it with `iggt-ros build-engine`")
        if not device.startswith("cuda"):
            raise EngineError(f"engine.device is {device!r}; the tensorrt backend runs on 'cuda' or 'cuda:N'")
        self.meta = PlanMetadata.read(plan)
        check_plan_shape(self.meta, plan, input_size, window_sizes)
        check_plan_compatible(self.meta, DeviceInfo.current(device), plan)
        import torch

        trt = import_tensorrt()

        self._torch = torch
        self.device = torch.device(device)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        with torch.cuda.device(self.device):
            self._engine = self._runtime.deserialize_cuda_engine(plan.read_bytes())
            if self._engine is None:
                raise EngineError(f"TensorRT could not deserialise {plan} (see its log); rebuild it with "
                                  "`iggt-ros build-engine`")
            self._context = self._engine.create_execution_context()
            self._stream = torch.cuda.Stream(self.device)
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        if len(inputs) != 1 or sorted(outputs) != sorted(OUTPUT_NAMES):
            raise EngineError(f"{plan} is not an IGGT plan: inputs {inputs}, outputs {outputs}")
        self._input = inputs[0]
        self._dtypes = {n: self._torch_dtype(trt, self._engine.get_tensor_dtype(n)) for n in names}
        self._profile: int | None = None
        self.plan = plan
        self.precision = self.meta.precision
        self.name = f"tensorrt-{self.meta.precision}"

    @staticmethod
    def _torch_dtype(trt, dtype):
        import torch

        names = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
                 "int32": torch.int32, "int64": torch.int64, "bool": torch.bool}
        table = {getattr(trt, n): t for n, t in names.items() if hasattr(trt, n)}  # int64/bf16: TensorRT >= 9
        if dtype not in table:
            raise EngineError(f"unsupported TensorRT tensor type {dtype}")
        return table[dtype]

    @property
    def shape(self):
        return self.meta.shape

    @property
    def input_size(self) -> tuple[int, int]:
        return tuple(self.meta.input_size)

    def run(self, batch: np.ndarray) -> list[np.ndarray]:
        """The plan on a [S,3,H,W] float32 array in [0, 1]; outputs in `OUTPUT_NAMES` order, float32 numpy."""
        return [t.float().cpu().numpy() for t in self.run_tensors(self._torch.from_numpy(batch))]

    def run_tensors(self, batch) -> list:
        """The plan on a [S,3,H,W] float tensor (any device); outputs as CUDA tensors in `OUTPUT_NAMES` order."""
        torch = self._torch
        frames = int(batch.shape[0])
        profile = self.shape.profile_for(frames)
        if profile is None:
            raise EngineError(f"TensorRT plan {self.plan} accepts {self.shape.describe()}; the window has S={frames}."
                              " Build a plan for this window size (`iggt-ros build-engine BUNDLE --frames ...`)")
        # Inputs made on the caller's stream must be complete before our stream reads them.
        self._stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.device(self.device), torch.cuda.stream(self._stream):
            stream = self._stream.cuda_stream
            if profile != self._profile:
                if not self._context.set_optimization_profile_async(profile, stream):
                    raise EngineError(f"TensorRT refused optimisation profile {profile} of {self.plan}")
                self._profile = profile
            x = batch.to(self.device, self._dtypes[self._input]).contiguous()
            if not self._context.set_input_shape(self._input, tuple(x.shape)):
                raise EngineError(f"TensorRT plan {self.plan} refused input shape {tuple(x.shape)} "
                                  f"({self.shape.describe()})")
            self._context.set_tensor_address(self._input, x.data_ptr())
            outputs = []
            for name in OUTPUT_NAMES:
                shape = tuple(self._context.get_tensor_shape(name))
                if any(d < 0 for d in shape):
                    raise EngineError(f"TensorRT plan {self.plan} left output {name} unresolved ({shape})")
                out = torch.empty(shape, dtype=self._dtypes[name], device=self.device)
                self._context.set_tensor_address(name, out.data_ptr())
                outputs.append(out)
            if not self._context.execute_async_v3(stream):
                raise EngineError(f"TensorRT execution of {self.plan} failed (see its log)")
            self._stream.synchronize()
        return outputs

    def infer(self, images: np.ndarray, views: Sequence[ViewKey] | None = None) -> WindowPrediction:
        images = check_window(images, self.input_size)
        return run_window(images, lambda x: self._torch.from_numpy(x).to(self.device), self.run_tensors, self.name)

    def close(self) -> None:
        self._context = None
        self._engine = None
        self._stream = None
