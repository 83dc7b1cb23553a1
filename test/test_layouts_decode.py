"""Input decoding: sensor_msgs/Image, CompressedImage and CameraInfo from a bag into numpy."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from iggt_ros.bag.convert import to_rosbags
from iggt_ros.bag.typestore import typestore
from iggt_ros.messages import layouts as L
from iggt_ros.messages.images import UnsupportedEncoding, compressed_to_rgb, image_to_array, image_to_rgb, intrinsics_of
from iggt_ros.messages.message import Header, MessageData

HEADER = Header(5, "cam0_optical_frame")
RNG = np.random.default_rng(7)
RGB = RNG.integers(0, 256, (6, 5, 3), dtype=np.uint8)


def image_msg(array: np.ndarray, encoding: str, step_pad: int = 0, bigendian: bool = False):
    """A deserialised sensor_msgs/Image with the given pixels (rows optionally padded)."""
    arr = np.ascontiguousarray(array)
    if bigendian:
        arr = arr.astype(arr.dtype.newbyteorder(">"))
    h, w = arr.shape[:2]
    rows = arr.view(np.uint8).reshape(h, -1)
    rows = np.concatenate([rows, np.full((h, step_pad), 255, np.uint8)], axis=1)
    data = MessageData("sensor_msgs/msg/Image", {
        "header": HEADER.to_plain(), "height": h, "width": w, "encoding": encoding,
        "is_bigendian": int(bigendian), "step": rows.shape[1], "data": rows.reshape(-1)})
    store = typestore()
    return store.deserialize_cdr(store.serialize_cdr(to_rosbags(data), data.typename), data.typename)


@pytest.mark.parametrize(("encoding", "pixels"), [
    ("rgb8", RGB),
    ("bgr8", RGB[..., ::-1]),
    ("rgba8", np.concatenate([RGB, np.full((6, 5, 1), 9, np.uint8)], axis=2)),
    ("bgra8", np.concatenate([RGB[..., ::-1], np.full((6, 5, 1), 9, np.uint8)], axis=2)),
])
def test_colour_encodings_decode_to_rgb(encoding, pixels):
    np.testing.assert_array_equal(image_to_rgb(image_msg(pixels, encoding)), RGB)
    # row padding (step > width * bytes per pixel) is skipped
    np.testing.assert_array_equal(image_to_rgb(image_msg(pixels, encoding, step_pad=3)), RGB)


def test_mono_encodings_decode_to_grey_rgb_and_raw_values():
    mono = RGB[..., 0]
    out = image_to_rgb(image_msg(mono, "mono8"))
    assert out.shape == (6, 5, 3) and (out == mono[..., None]).all()
    mono16 = (mono.astype(np.uint16) << 8) | 0x7F
    np.testing.assert_array_equal(image_to_rgb(image_msg(mono16, "mono16"))[..., 1], mono)
    np.testing.assert_array_equal(image_to_array(image_msg(mono16, "16UC1", step_pad=2)), mono16)
    np.testing.assert_array_equal(image_to_array(image_msg(mono16, "16UC1", bigendian=True)), mono16)
    depth = RNG.random((6, 5)).astype(np.float32)
    np.testing.assert_array_equal(image_to_array(image_msg(depth, "32FC1")), depth)


def test_layout_images_decode_back_to_their_arrays():
    store = typestore()
    ids = RNG.integers(0, 300, (4, 7)).astype(np.uint16)
    for data, expected in [(L.instance_image(HEADER, ids), ids), (L.rgb_image(HEADER, RGB), RGB)]:
        msg = store.deserialize_cdr(store.serialize_cdr(to_rosbags(data), data.typename), data.typename)
        np.testing.assert_array_equal(image_to_array(msg), expected)


def test_unsupported_encodings_name_the_topic_and_the_encoding():
    msg = image_msg(RGB[..., :2].copy(), "bayer_rggb8")
    with pytest.raises(UnsupportedEncoding, match=r"'bayer_rggb8' on topic '/cam0/image_raw'"):
        image_to_rgb(msg, "/cam0/image_raw")
    depth = image_msg(np.zeros((2, 2), np.float32), "32FC1")
    with pytest.raises(UnsupportedEncoding, match=r"'32FC1' on topic '/d' cannot be used as a camera image"):
        image_to_rgb(depth, "/d")


def test_truncated_image_data_is_reported():
    msg = image_msg(RGB, "rgb8")
    msg.data = msg.data[:-10]
    with pytest.raises(ValueError, match="but it carries 80 "):
        image_to_rgb(msg, "/cam0/image_raw")


def compressed_msg(fmt: str, payload: bytes):
    store = typestore()
    data = MessageData("sensor_msgs/msg/CompressedImage", {
        "header": HEADER.to_plain(), "format": fmt, "data": np.frombuffer(payload, np.uint8)})
    return store.deserialize_cdr(store.serialize_cdr(to_rosbags(data), data.typename), data.typename)


def encoded(fmt: str, pixels: np.ndarray = RGB) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


def test_png_and_jpeg_compressed_images_decode():
    np.testing.assert_array_equal(compressed_to_rgb(compressed_msg("png", encoded("PNG"))), RGB)
    # a smooth picture with a different ramp per channel: JPEG keeps it, and a channel swap would show
    yy, xx = np.mgrid[0:32, 0:48]
    smooth = np.stack([xx * 5, yy * 7, np.full_like(xx, 40)], axis=2).astype(np.uint8)
    jpeg = compressed_to_rgb(compressed_msg("rgb8; jpeg compressed bgr8", encoded("JPEG", smooth)))
    assert jpeg.shape == smooth.shape and jpeg.dtype == np.uint8
    assert np.abs(jpeg.astype(int) - smooth.astype(int)).mean() < 4


def test_other_compressed_formats_are_refused_with_the_topic():
    with pytest.raises(UnsupportedEncoding, match=r"'bmp'.*on topic '/cam1/image_raw/compressed'"):
        compressed_to_rgb(compressed_msg("bmp", encoded("BMP")), "/cam1/image_raw/compressed")
    with pytest.raises(UnsupportedEncoding, match="could not be decoded"):
        compressed_to_rgb(compressed_msg("jpeg", b"not an image"), "/c")


def test_camera_info_gives_k_and_refuses_an_empty_one():
    store = typestore()
    k = np.array([[300.0, 0, 100], [0, 310, 80], [0, 0, 1]])
    data = L.camera_info(HEADER, k, 200, 160)
    msg = store.deserialize_cdr(store.serialize_cdr(to_rosbags(data), data.typename), data.typename)
    np.testing.assert_array_equal(intrinsics_of(msg), k)
    empty = MessageData("sensor_msgs/msg/CameraInfo", {"header": HEADER.to_plain()})
    msg = store.deserialize_cdr(store.serialize_cdr(to_rosbags(empty), empty.typename), empty.typename)
    with pytest.raises(ValueError, match="cam0_optical_frame.*no focal length"):
        intrinsics_of(msg)


def yuv_of(rgb: np.ndarray) -> np.ndarray:
    """[H,W,3] Y, U, V (BT.601, video range) of RGB pixels, as a USB camera's ISP computes them."""
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    y = 16 + 0.257 * r + 0.504 * g + 0.098 * b
    u = 128 - 0.148 * r - 0.291 * g + 0.439 * b
    v = 128 + 0.439 * r - 0.368 * g - 0.071 * b
    return np.clip(np.rint(np.stack([y, u, v], axis=-1)), 0, 255).astype(np.uint8)


def packed_422(rgb: np.ndarray, order: str) -> np.ndarray:
    """[H,W,2] bytes of a 4:2:2 image (U Y0 V Y1 or Y0 U Y1 V per pixel pair); pairs share one colour."""
    yuv = yuv_of(rgb)
    h, w = rgb.shape[:2]
    y = yuv[..., 0].reshape(h, w // 2, 2)
    u = yuv[:, 0::2, 1]
    v = yuv[:, 0::2, 2]
    quad = (np.stack([u, y[..., 0], v, y[..., 1]], axis=-1) if order == "uyvy"
            else np.stack([y[..., 0], u, y[..., 1], v], axis=-1))
    return quad.reshape(h, w, 2)


# Pixel pairs share their colour (4:2:2 keeps one chroma sample per pair), with black, white and
# saturated primaries among them.
PAIRED = np.repeat(np.concatenate([
    np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.uint8),
    RNG.integers(0, 256, (3, 5, 3), dtype=np.uint8)]), 2, axis=1)


@pytest.mark.parametrize(("encoding", "order"), [
    ("yuv422", "uyvy"), ("uyvy", "uyvy"), ("yuv422_yuy2", "yuyv"), ("yuyv", "yuyv")])
def test_packed_yuv422_decodes_to_rgb(encoding, order):
    pixels = packed_422(PAIRED, order)
    out = image_to_rgb(image_msg(pixels, encoding, step_pad=4), "/usb_cam/image_raw")
    assert out.shape == PAIRED.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - PAIRED.astype(int)).max() <= 3, "BT.601 video range, within rounding"
    np.testing.assert_array_equal(out[0, :2], 0)
    np.testing.assert_array_equal(out[0, 2:4], 255)


def test_packed_yuv422_with_an_odd_width_is_refused_with_the_reason():
    msg = image_msg(np.zeros((2, 3, 2), np.uint8), "yuyv")
    with pytest.raises(ValueError, match=r"yuyv image on topic '/c' is 3 pixels wide.*even"):
        image_to_rgb(msg, "/c")
