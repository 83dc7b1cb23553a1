"""The one place where camera images become model input, shared by every backend and the pipeline.

Resizing uses Pillow's BICUBIC filter, the filter of the official IGGT demo: the released weights
were evaluated on images prepared that way, and Pillow's bicubic widens its kernel when shrinking
(it antialiases), which a plain `torch.nn.functional.interpolate(mode="bicubic")` does not. The
aspect ratio is not preserved and nothing is cropped (the demo's "resize" mode): the model predicts
intrinsics for the image it sees, and `scale_intrinsics` maps them back to the camera.

ImageNet normalisation is part of the model, so model input is plain RGB in [0, 1].

This module needs numpy and Pillow only (no torch), so the perception core can use it freely.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SIZE_MULTIPLE = 28
"""Both sides of the model input must be multiples of this (14-pixel patches, even patch grid)."""
DEFAULT_LONG_SIDE = 504
"""Long side of the official demo's input (504x336)."""
DEFAULT_INPUT_SIZE = (336, 504)
"""(H, W) of the official demo."""


def check_input_size(size: tuple[int, int]) -> tuple[int, int]:
    """Return (H, W) as ints, or raise ValueError unless both are positive multiples of 28."""
    h, w = int(size[0]), int(size[1])
    if h <= 0 or w <= 0 or h % SIZE_MULTIPLE or w % SIZE_MULTIPLE:
        raise ValueError(f"model input size must be positive multiples of {SIZE_MULTIPLE} (H, W); got {h}x{w}")
    return h, w


def input_size_for_aspect(height: int, width: int, long_side: int = DEFAULT_LONG_SIDE) -> tuple[int, int]:
    """Model input (H, W) closest to a camera's aspect ratio with the given long side.

    The short side is rounded to the nearest multiple of 28 (halves round up), so 3:2 gives
    336x504, 4:3 gives 392x504 and 16:9 gives 280x504. Portrait cameras get the long side as H.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"camera size must be positive; got {height}x{width}")
    if long_side <= 0 or long_side % SIZE_MULTIPLE:
        raise ValueError(f"long_side must be a positive multiple of {SIZE_MULTIPLE}; got {long_side}")
    short = long_side * min(height, width) / max(height, width)
    short_px = max(SIZE_MULTIPLE, int(np.floor(short / SIZE_MULTIPLE + 0.5)) * SIZE_MULTIPLE)
    return (short_px, long_side) if width >= height else (long_side, short_px)


def _as_rgb(image: np.ndarray) -> np.ndarray:
    """[H,W], [H,W,1], [H,W,3] or [H,W,4] uint8 -> [H,W,3] uint8 (alpha composited onto white, as the demo)."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"images must be uint8 RGB; got dtype {image.dtype}")
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ValueError(f"an image must be [H,W], [H,W,1], [H,W,3] or [H,W,4]; got shape {image.shape}")
    if image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    if image.shape[2] == 4:
        alpha = image[..., 3:].astype(np.float32) / 255.0
        rgb = image[..., :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
        return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    return image


def resize_nearest(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of the first two axes to (H, W): the source pixel under each target
    pixel centre. For IDs, depth and masks, which interpolation would corrupt."""
    h, w = int(size[0]), int(size[1])
    src_h, src_w = values.shape[:2]
    if (src_h, src_w) == (h, w):
        return values
    rows = np.minimum(((np.arange(h) + 0.5) * src_h / h).astype(np.int64), src_h - 1)
    cols = np.minimum(((np.arange(w) + 0.5) * src_w / w).astype(np.int64), src_w - 1)
    return values[rows[:, None], cols[None, :]]


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """One uint8 image to (H, W) = size with Pillow BICUBIC; a no-op copy when it already has that size."""
    from PIL import Image

    rgb = _as_rgb(image)
    h, w = int(size[0]), int(size[1])
    if rgb.shape[:2] == (h, w):
        return np.ascontiguousarray(rgb)
    return np.asarray(Image.fromarray(np.ascontiguousarray(rgb)).resize((w, h), Image.BICUBIC))


def preprocess_images(
    images: Sequence[np.ndarray] | np.ndarray, size: tuple[int, int] = DEFAULT_INPUT_SIZE
) -> np.ndarray:
    """Camera images (any sizes, uint8 grey/RGB/RGBA) -> [V,H,W,3] uint8 at the model input size.

    This is what `Engine.infer` takes, and what `WindowPrediction.images` holds.
    """
    size = check_input_size(size)
    if isinstance(images, np.ndarray) and images.ndim == 4:
        images = list(images)
    if len(images) == 0:
        raise ValueError("preprocess_images needs at least one image")
    return np.stack([resize_image(img, size) for img in images])


def to_model_input(images: np.ndarray) -> np.ndarray:
    """[V,H,W,3] uint8 -> [V,3,H,W] float32 in [0, 1], the model's input layout (normalisation is in the model)."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"to_model_input expects [V,H,W,3] uint8; got {images.dtype} {images.shape}")
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(255.0)


def scale_intrinsics(
    intrinsics: np.ndarray, from_size: tuple[int, int], to_size: tuple[int, int], half_pixel: bool = True
) -> np.ndarray:
    """Pinhole intrinsics of an image of (H, W) = from_size, for the same image resized to to_size.

    Focal lengths scale with the side ratios. With `half_pixel` (the default), the principal point
    is mapped the way Pillow and OpenCV resample, which align pixel centres: with pixel centres at
    integer coordinates (the OpenCV / ROS CameraInfo convention) c' = (c + 0.5) * s - 0.5. Pass
    half_pixel=False for intrinsics whose pixel centres sit at half-integers (the model's own
    convention, principal point at (W/2, H/2)); then c' = c * s.

    Args:
        intrinsics: [..., 3, 3].
    Returns:
        [..., 3, 3] float64 (float32 input stays float32).
    """
    k = np.array(intrinsics, dtype=np.result_type(np.asarray(intrinsics).dtype, np.float32), copy=True)
    if k.shape[-2:] != (3, 3):
        raise ValueError(f"intrinsics must be [..., 3, 3]; got {k.shape}")
    sy = to_size[0] / from_size[0]
    sx = to_size[1] / from_size[1]
    shift_x = 0.5 * sx - 0.5 if half_pixel else 0.0
    shift_y = 0.5 * sy - 0.5 if half_pixel else 0.0
    # Rows 0 and 1 of K map camera rays to pixels; scaling a row scales that pixel axis.
    k[..., 0, :] = k[..., 0, :] * sx + shift_x * k[..., 2, :]
    k[..., 1, :] = k[..., 1, :] * sy + shift_y * k[..., 2, :]
    return k


def check_window(images: np.ndarray, size: tuple[int, int], max_views: int | None = None) -> np.ndarray:
    """Validate what `Engine.infer` receives: [V,H,W,3] uint8 at the engine's input size.

    Raises EngineError (the pipeline skips the window and reports it) with the expected shape.
    """
    from iggt_ros.engine.base import EngineError

    images = np.asarray(images)
    h, w = size
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (h, w, 3) or images.shape[0] < 1:
        raise EngineError(f"engine input must be [V,{h},{w},3] uint8 (see iggt_ros.engine.preprocess."
                          f"preprocess_images); got {images.dtype} {images.shape}")
    if max_views is not None and images.shape[0] > max_views:
        raise EngineError(f"window of {images.shape[0]} views exceeds this engine's limit of {max_views}")
    return np.ascontiguousarray(images)
