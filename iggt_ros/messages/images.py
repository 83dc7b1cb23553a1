"""Received camera messages -> numpy, for the node's fallback path and the replay.

Works on messages of either library (rclpy or rosbags): only the field names are used. Colour
images come out as [H,W,3] uint8 RGB, which is what the perception core takes; label and depth
images come out as [H,W] arrays of their own type. Anything else raises `UnsupportedEncoding`,
whose message names the topic and the encoding so a user can fix the camera driver's settings.
"""

from __future__ import annotations

import io
import struct
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
    "yuv422": ("u1", 2),
    "uyvy": ("u1", 2),
    "yuv422_yuy2": ("u1", 2),
    "yuyv": ("u1", 2),
}
YUV422_ORDER: dict[str, str] = {"yuv422": "uyvy", "uyvy": "uyvy", "yuv422_yuy2": "yuyv", "yuyv": "yuyv"}
"""Packed 4:2:2 encodings (USB cameras) -> byte order of a pixel pair. ROS names UYVY 'yuv422' and
YUYV 'yuv422_yuy2' (older names), 'uyvy' and 'yuyv' (newer ones)."""
COLOR_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "8UC1", "mono16", "16UC1", *YUV422_ORDER)
"""Encodings `image_to_rgb` turns into RGB (mono is replicated; 16-bit mono is scaled to 8 bits;
YUV 4:2:2 is converted with the BT.601 video-range matrix, as OpenCV's and most camera drivers do)."""


MAX_COMPRESSED_PIXELS = 64_000_000
"""A compressed image claiming more pixels than this is refused before it is decompressed (a damaged header)."""


class UnsupportedEncoding(ValueError):
    """An image encoding or compressed format the package cannot decode."""


def _where(topic: str) -> str:
    return f"on topic '{topic}'" if topic else "in an image message"


def image_to_array(msg: Any, topic: str = "") -> np.ndarray:
    """The pixels of a sensor_msgs/Image as [H,W] or [H,W,C] in their own type (no colour conversion)."""
    raw = check_image_layout(msg, topic)
    encoding = str(msg.encoding)
    kind, channels = IMAGE_ENCODINGS[encoding]
    dtype = np.dtype(kind).newbyteorder(">" if msg.is_bigendian else "<")
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    row_bytes = width * channels * dtype.itemsize
    rows = raw[: step * height].reshape(height, step)[:, :row_bytes]
    pixels = np.ascontiguousarray(rows).view(dtype).astype(dtype.newbyteorder("="), copy=False)
    return pixels.reshape(height, width) if channels == 1 else pixels.reshape(height, width, channels)


def check_image_layout(msg: Any, topic: str = "") -> np.ndarray:
    """The raw bytes of a sensor_msgs/Image (a view), or ValueError when its header does not fit them.

    Every decoder runs this first (cv_bridge included), so an empty, cut or mis-sized image is the same
    "malformed image" on every path, whatever the decoder would have made of it."""
    encoding = str(msg.encoding)
    if encoding not in IMAGE_ENCODINGS:
        raise UnsupportedEncoding(f"image encoding '{encoding}' {_where(topic)} is not supported; "
                                  f"supported: {', '.join(IMAGE_ENCODINGS)}")
    kind, channels = IMAGE_ENCODINGS[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    row_bytes = width * channels * np.dtype(kind).itemsize
    raw = np.frombuffer(memoryview(msg.data), dtype=np.uint8)
    if width <= 0 or height <= 0:
        raise ValueError(f"{encoding} image {_where(topic)} is {width}x{height}: it has no pixels; check the "
                         "camera driver's image size settings")
    if step < row_bytes:
        raise ValueError(f"{encoding} image {_where(topic)} is {width}x{height} with step {step}, but one row of "
                         f"{encoding} needs {row_bytes} bytes; the header does not match the pixels (check the "
                         "driver's width, encoding and step)")
    if raw.size != step * height:
        cut = "cut short" if raw.size < step * height else "longer than its header says"
        raise ValueError(f"{encoding} image {_where(topic)} is {width}x{height} with step {step}, so it must carry "
                         f"{step * height} bytes, but it carries {raw.size} ({cut}); check the driver or the "
                         "recording (a truncated message)")
    if encoding in YUV422_ORDER and width % 2:
        raise ValueError(f"{encoding} image {_where(topic)} is {width} pixels wide, but 4:2:2 pixels come in "
                         "pairs that share one colour sample, so the width must be even; check the camera "
                         "driver's image size")
    return raw


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
    if encoding in YUV422_ORDER:
        return rgb_from_yuv422(pixels, YUV422_ORDER[encoding])
    if encoding in ("rgb8", "rgba8"):
        return np.ascontiguousarray(pixels[..., :3])
    if encoding in ("bgr8", "bgra8"):
        return np.ascontiguousarray(pixels[..., 2::-1])
    if pixels.dtype == np.uint16:
        pixels = (pixels >> 8).astype(np.uint8)
    return np.repeat(pixels.reshape(pixels.shape[:2])[..., None], 3, axis=2)


# BT.601 video range (Y in 16..235, U and V in 16..240): the matrix of OpenCV's YUV 4:2:2 conversions.
_Y_GAIN, _V_TO_R, _U_TO_G, _V_TO_G, _U_TO_B = 1.164, 1.596, -0.391, -0.813, 2.018


def rgb_from_yuv422(pixels: np.ndarray, order: str) -> np.ndarray:
    """[H,W,3] uint8 RGB of packed 4:2:2 bytes [H,W,2]; `order` is 'uyvy' or 'yuyv'.

    Each pair of pixels is four bytes with two luma samples and one shared U, V pair.
    """
    h, w = pixels.shape[:2]
    quads = np.asarray(pixels, np.uint8).reshape(h, w // 2, 4).astype(np.float32)
    if order == "uyvy":
        u, y0, v, y1 = (quads[..., i] for i in range(4))
    elif order == "yuyv":
        y0, u, y1, v = (quads[..., i] for i in range(4))
    else:
        raise ValueError(f"unknown 4:2:2 byte order {order!r}; expected 'uyvy' or 'yuyv'")
    luma = _Y_GAIN * np.maximum(np.stack([y0, y1], axis=-1).reshape(h, w) - 16.0, 0.0)
    d = np.repeat(u - 128.0, 2, axis=1)
    e = np.repeat(v - 128.0, 2, axis=1)
    rgb = np.stack([luma + _V_TO_R * e, luma + _U_TO_G * d + _V_TO_G * e, luma + _U_TO_B * d], axis=-1)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def compressed_to_rgb(msg: Any, topic: str = "") -> np.ndarray:
    """[H,W,3] uint8 RGB of a sensor_msgs/CompressedImage (jpeg or png)."""
    from PIL import Image, UnidentifiedImageError

    fmt = str(msg.format)
    try:
        with Image.open(io.BytesIO(bytes(memoryview(msg.data)))) as img:
            if img.format not in ("JPEG", "PNG"):
                raise UnsupportedEncoding(f"compressed image format '{fmt}' ({img.format}) {_where(topic)} "
                                          "is not supported; supported: jpeg, png")
            w, h = img.size
            if w * h > MAX_COMPRESSED_PIXELS:
                raise ValueError(f"compressed image {_where(topic)} claims {w}x{h} pixels, more than "
                                 f"{MAX_COMPRESSED_PIXELS} that a camera frame may hold; check the driver")
            rgb = img.convert("RGB")
            return np.asarray(rgb, dtype=np.uint8).copy()
    except UnidentifiedImageError as exc:
        raise UnsupportedEncoding(f"compressed image format '{fmt}' {_where(topic)} could not be decoded; "
                                  "supported: jpeg, png") from exc
    except (OSError, SyntaxError, EOFError, struct.error, Image.DecompressionBombError) as exc:
        # PIL's errors for a damaged stream (truncated data, broken chunks, impossible headers)
        raise ValueError(f"compressed image ({fmt}) {_where(topic)} is damaged and could not be decoded: "
                         f"{type(exc).__name__}: {exc}; check the driver or the recording") from exc


def intrinsics_of(msg: Any) -> np.ndarray:
    """[3,3] pinhole K of a sensor_msgs/CameraInfo."""
    k = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
    if not np.all(np.isfinite(k)):
        raise ValueError(f"camera_info of frame '{msg.header.frame_id}' has non-finite values in K "
                         f"(K = {k.tolist()}); check the camera's calibration file")
    if not (k[0, 0] > 0 and k[1, 1] > 0):
        raise ValueError(f"camera_info of frame '{msg.header.frame_id}' has no focal length (K = {k.tolist()}); "
                         "check the camera's calibration file")
    return k
