"""Raw model outputs -> `WindowPrediction`, shared by every backend.

Backends produce the same six tensors in different containers: PyTorch returns the model's dict
(pose encodings as a list of camera-head iterations), ONNX Runtime and TensorRT return the
exported tuple in `OUTPUT_KEYS` order (iterations stacked). Decoding them in one place keeps the
backends interchangeable down to the last bit of post-processing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from iggt_ros.engine.base import EngineError, WindowPrediction

OUTPUT_NAMES = ("pose_enc", "depth", "depth_conf", "world_points", "world_points_conf", "part_feat")
"""Model outputs in export order; equal to `iggt_ros.model.OUTPUT_KEYS` (repeated so this module needs no torch)."""


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "detach"):  # a torch tensor, without importing torch here
        return x.detach().float().cpu().numpy()
    return np.asarray(x)


def outputs_as_arrays(outputs: Mapping[str, Any] | Sequence[Any]) -> dict[str, np.ndarray]:
    """Name -> float32 numpy array for the six outputs; pose_enc becomes [iterations, B, S, 9].

    Accepts the model's dict (pose_enc a list of [B,S,9]) or a tuple in `OUTPUT_NAMES` order.
    """
    if isinstance(outputs, Mapping):
        missing = [k for k in OUTPUT_NAMES if k not in outputs]
        if missing:
            raise EngineError(f"model outputs lack {missing}")
        raw = {k: outputs[k] for k in OUTPUT_NAMES}
    else:
        if len(outputs) != len(OUTPUT_NAMES):
            raise EngineError(f"expected {len(OUTPUT_NAMES)} model outputs {OUTPUT_NAMES}, got {len(outputs)}")
        raw = dict(zip(OUTPUT_NAMES, outputs, strict=True))
    pose = raw["pose_enc"]
    if isinstance(pose, (list, tuple)):
        pose = np.stack([_to_numpy(p) for p in pose], 0)
    arrays = {k: np.asarray(_to_numpy(v), dtype=np.float32) for k, v in raw.items() if k != "pose_enc"}
    arrays["pose_enc"] = np.asarray(_to_numpy(pose), dtype=np.float32)
    if arrays["pose_enc"].ndim == 3:  # a single iteration [B,S,9]
        arrays["pose_enc"] = arrays["pose_enc"][None]
    return arrays


def to_window_prediction(
    outputs: Mapping[str, Any] | Sequence[Any],
    images: np.ndarray,
    engine: str = "",
    timings_ms: Mapping[str, float] | None = None,
) -> WindowPrediction:
    """Decode one window's model outputs (batch size 1) into a `WindowPrediction`.

    Uses the last camera-head iteration, decodes it to OpenCV camera-from-world extrinsics and
    pinhole intrinsics at the input size, drops the batch axis, and moves the instance features
    channel-last.

    Args:
        outputs: model dict or exported tuple (see `outputs_as_arrays`).
        images: [V,H,W,3] uint8, the images the model saw.
    """
    from iggt_ros.model.geometry import pose_encoding_to_extri_intri

    a = outputs_as_arrays(outputs)
    batch = a["depth"].shape[0]
    if batch != 1:
        raise EngineError(f"a window prediction holds one batch element; the model returned {batch}")
    v, h, w = a["depth"].shape[1:4]
    pose = a["pose_enc"][-1, 0]
    extrinsics, intrinsics = pose_encoding_to_extri_intri(pose, (h, w))
    pred = WindowPrediction(
        extrinsics=np.asarray(extrinsics, np.float32),
        intrinsics=np.asarray(intrinsics, np.float32),
        depth=np.ascontiguousarray(a["depth"][0, ..., 0]),
        depth_conf=np.ascontiguousarray(a["depth_conf"][0]),
        world_points=np.ascontiguousarray(a["world_points"][0]),
        world_points_conf=np.ascontiguousarray(a["world_points_conf"][0]),
        instance_features=np.ascontiguousarray(a["part_feat"][0].transpose(0, 2, 3, 1)),
        images=np.asarray(images),
        engine=engine,
        timings_ms=dict(timings_ms or {}),
    )
    if pred.images.shape != (v, h, w, 3):
        raise EngineError(f"images {pred.images.shape} do not match the model outputs ({v}, {h}, {w}, 3)")
    pred.validate()
    return pred


def run_window(images: np.ndarray, upload: Callable[[np.ndarray], Any], run: Callable[[Any], Any],
               engine: str) -> WindowPrediction:
    """Upload, run and decode one window, timing the three stages the same way for every backend.

    Args:
        images: [V,H,W,3] uint8, already checked against the engine's input size.
        upload: float32 [V,3,H,W] in [0, 1] -> the backend's input (a device tensor, or the array).
        run: the backend's input -> model outputs (returns only when the results are ready).
        engine: name recorded in the prediction.
    """
    from iggt_ros.engine.preprocess import to_model_input

    t0 = time.perf_counter()
    batch = upload(to_model_input(images))
    t1 = time.perf_counter()
    out = run(batch)
    t2 = time.perf_counter()
    pred = to_window_prediction(out, images, engine)
    t3 = time.perf_counter()
    pred.timings_ms.update(upload=(t1 - t0) * 1e3, model=(t2 - t1) * 1e3, decode=(t3 - t2) * 1e3)
    return pred
