"""Received camera messages -> numpy, for the node's fallback path and the replay.

Works on messages of either library (rclpy or rosbags): only the field names are used. Colour
images come out as [H,W,3] uint8 RGB, which is what the perception core takes; label and depth
images come out as [H,W] arrays of their own type. Anything else raises `UnsupportedEncoding`,
whose message names the topic and the encoding so a user can fix the camera driver's settings.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

# encoding -> (numpy dtype of one channel, channels)
IMAGE_ENCODINGS: dict[str, tuple[str, int]] = {
    "rgb8": ("u1", 3),
    "bgr8": ("u1", 3),
    "rgba8": ("u1", 4),
    "bgra8": ("u1", 4),
    "mono8": ("u1", 1),
    "8UC1": ("u1", 1),
    "mono16": ("u2", 1),
    "16UC1": ("u2", 1),
    "32FC1": ("f4", 1),
}
COLOR_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "8UC1", "mono16", "16UC1")
"""Encodings `image_to_rgb` turns into RGB (mono is replicated; 16-bit mono is scaled to 8 bits)."""


class UnsupportedEncoding(ValueError):
    """An image encoding or compressed format the package cannot decode."""


def _where(topic: str) -> str:
    return f"on topic '{topic}'" if topic else "in an image message"


def image_to_array(msg: Any, topic: str = "") -> np.ndarray:
    """The pixels of a sensor_msgs/Image as [H,W] or [H,W,C] in their own type (no colour conversion)."""
    encoding = str(msg.encoding)
    if encoding not in IMAGE_ENCODINGS:
        raise UnsupportedEncoding(f"image encoding '{encoding}' {_where(topic)} is not supported; "
                                  f"supported: {', '.join(IMAGE_ENCODINGS)}")
    kind, channels = IMAGE_ENCODINGS[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    dtype = np.dtype(kind).newbyteorder(">" if msg.is_bigendian else "<")
    row_bytes = width * channels * dtype.itemsize
    raw = np.frombuffer(memoryview(msg.data), dtype=np.uint8)
    if step < row_bytes or raw.size < step * height:
        raise ValueError(f"{encoding} image {_where(topic)} is {width}x{height} with step {step} "
                         f"but carries {raw.size} bytes")
    rows = raw[: step * height].reshape(height, step)[:, :row_bytes]
    pixels = np.ascontiguousarray(rows).view(dtype).astype(dtype.newbyteorder("="), copy=False)
    return pixels.reshape(height, width) if channels == 1 else pixels.reshape(height, width, channels)


def image_to_rgb(msg: Any, topic: str = "") -> np.ndarray:
    """[H,W,3] uint8 RGB of a colour or mono sensor_msgs/Image (what the model sees)."""
    encoding = str(msg.encoding)
    _check_color_encoding(encoding, topic)  # before decoding: an unusable image costs nothing
    return rgb_from_pixels(image_to_array(msg, topic), encoding, topic)


def _check_color_encoding(encoding: str, topic: str) -> None:
    if encoding not in COLOR_ENCODINGS:
        raise UnsupportedEncoding(f"image encoding '{encoding}' {_where(topic)} cannot be used as a camera image; "
                                  f"supported: {', '.join(COLOR_ENCODINGS)}")


def rgb_from_pixels(pixels: np.ndarray, encoding: str, topic: str = "") -> np.ndarray:
    """[H,W,3] uint8 RGB of already decoded pixels in a colour or mono `encoding` (from any decoder)."""
    _check_color_encoding(encoding, topic)
    pixels = np.asarray(pixels)
    if encoding in ("rgb8", "rgba8"):
        return np.ascontiguousarray(pixels[..., :3])
    if encoding in ("bgr8", "bgra8"):
        return np.ascontiguousarray(pixels[..., 2::-1])
    if pixels.dtype == np.uint16:
        pixels = (pixels >> 8).astype(np.uint8)
    return np.repeat(pixels.reshape(pixels.shape[:2])[..., None], 3, axis=2)


def compressed_to_rgb(msg: Any, topic: str = "") -> np.ndarray:
    """[H,W,3] uint8 RGB of a sensor_msgs/CompressedImage (jpeg or png)."""
    from PIL import Image, UnidentifiedImageError

    fmt = str(msg.format)
    try:
        with Image.open(io.BytesIO(bytes(memoryview(msg.data)))) as img:
            if img.format not in ("JPEG", "PNG"):
                raise UnsupportedEncoding(f"compressed image format '{fmt}' ({img.format}) {_where(topic)} "
                                          "is not supported; supported: jpeg, png")
            rgb = img.convert("RGB")
            return np.asarray(rgb, dtype=np.uint8).copy()
    except UnidentifiedImageError as exc:
        raise UnsupportedEncoding(f"compressed image format '{fmt}' {_where(topic)} could not be decoded; "
                                  "supported: jpeg, png") from exc


def intrinsics_of(msg: Any) -> np.ndarray:
    """[3,3] pinhole K of a sensor_msgs/CameraInfo."""
    k = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
    if k[0, 0] <= 0 or k[1, 1] <= 0:
        raise ValueError(f"camera_info of frame '{msg.header.frame_id}' has no focal length (K = {k.tolist()})")
    return k
