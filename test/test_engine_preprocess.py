"""Preprocessing and output decoding shared by every engine backend."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from iggt_ros.engine.base import EngineError
from iggt_ros.engine.postprocess import outputs_as_arrays, to_window_prediction
from iggt_ros.engine.preprocess import (
    check_window,
    input_size_for_aspect,
    preprocess_images,
    resize_image,
    scale_intrinsics,
    to_model_input,
)
from iggt_ros.model.geometry import extri_intri_to_pose_encoding, quat_to_mat


@pytest.mark.parametrize(
    ("camera", "expected"),
    [((480, 720), (336, 504)), ((480, 640), (392, 504)), ((720, 1280), (280, 504)), ((640, 480), (504, 392)),
     ((500, 500), (504, 504))],
)
def test_input_size_for_aspect(camera, expected):
    assert input_size_for_aspect(*camera) == expected
    assert all(side % 28 == 0 for side in expected)


def test_input_size_for_aspect_rejects_bad_long_side():
    with pytest.raises(ValueError, match="multiple of 28"):
        input_size_for_aspect(480, 640, long_side=500)


def test_preprocess_matches_pillow_bicubic_and_handles_grey_and_alpha():
    from PIL import Image

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (60, 90, 3), dtype=np.uint8)
    out = preprocess_images([rgb, rgb[..., 0], np.dstack([rgb, np.zeros((60, 90), np.uint8)])], size=(28, 56))
    assert out.shape == (3, 28, 56, 3) and out.dtype == np.uint8
    want = np.asarray(Image.fromarray(rgb).resize((56, 28), Image.BICUBIC))
    np.testing.assert_array_equal(out[0], want)
    # Grey becomes three equal channels; fully transparent pixels become white.
    assert np.array_equal(out[1][..., 0], out[1][..., 2])
    assert np.all(out[2] == 255)


def test_preprocess_keeps_an_image_of_the_right_size_unchanged():
    img = np.arange(28 * 28 * 3, dtype=np.uint8).reshape(28, 28, 3)
    np.testing.assert_array_equal(resize_image(img, (28, 28)), img)


def test_preprocess_rejects_bad_input():
    with pytest.raises(ValueError, match="multiples of 28"):
        preprocess_images([np.zeros((10, 10, 3), np.uint8)], size=(30, 56))
    with pytest.raises(ValueError, match="uint8"):
        preprocess_images([np.zeros((10, 10, 3), np.float32)], size=(28, 28))


def test_to_model_input_layout_and_range():
    images = np.zeros((2, 28, 56, 3), np.uint8)
    images[1, 3, 5] = (255, 0, 51)
    x = to_model_input(images)
    assert x.shape == (2, 3, 28, 56) and x.dtype == np.float32
    assert x[1, :, 3, 5].tolist() == pytest.approx([1.0, 0.0, 0.2])
    assert x.max() <= 1.0 and x.min() >= 0.0


def test_check_window_names_the_expected_shape():
    with pytest.raises(EngineError, match=r"\[V,28,56,3\] uint8"):
        check_window(np.zeros((2, 28, 28, 3), np.uint8), (28, 56))
    with pytest.raises(EngineError, match="limit of 2"):
        check_window(np.zeros((3, 28, 56, 3), np.uint8), (28, 56), max_views=2)


def test_scale_intrinsics_maps_pixels_like_the_resize():
    k = np.array([[500.0, 0.0, 319.5], [0.0, 510.0, 239.5], [0.0, 0.0, 1.0]])
    scaled = scale_intrinsics(k, (480, 640), (336, 504))
    # Project a 3D point with both cameras: the pixel must move exactly as the resize moves pixels
    # (pixel centres aligned: u' = (u + 0.5) * s - 0.5).
    point = np.array([0.3, -0.2, 2.0])
    u, v, _ = (k @ point) / point[2]
    u2, v2, _ = (scaled @ point) / point[2]
    assert u2 == pytest.approx((u + 0.5) * 504 / 640 - 0.5)
    assert v2 == pytest.approx((v + 0.5) * 336 / 480 - 0.5)
    # The image centre maps to the image centre, and back again.
    assert scaled[0, 2] == pytest.approx(251.5) and scaled[1, 2] == pytest.approx(167.5)
    np.testing.assert_allclose(scale_intrinsics(scaled, (336, 504), (480, 640)), k, atol=1e-9)


def test_scale_intrinsics_without_half_pixel_and_batched():
    k = np.tile(np.array([[100.0, 0, 50], [0, 100, 25], [0, 0, 1]], np.float32), (2, 1, 1))
    scaled = scale_intrinsics(k, (50, 100), (100, 300), half_pixel=False)
    assert scaled.dtype == np.float32 and scaled.shape == (2, 3, 3)
    np.testing.assert_allclose(scaled[1], [[300, 0, 150], [0, 200, 50], [0, 0, 1]])


def _fake_outputs(v: int, h: int, w: int, pose: np.ndarray, dict_form: bool):
    rng = np.random.default_rng(1)
    depth = rng.uniform(1, 2, (1, v, h, w, 1)).astype(np.float32)
    tensors = {
        "depth": depth,
        "depth_conf": rng.uniform(1, 3, (1, v, h, w)).astype(np.float32),
        "world_points": rng.normal(size=(1, v, h, w, 3)).astype(np.float32),
        "world_points_conf": rng.uniform(1, 3, (1, v, h, w)).astype(np.float32),
        "part_feat": rng.normal(size=(1, v, 8, h, w)).astype(np.float32),
    }
    noise = [np.zeros_like(pose[None]) + 9.0 for _ in range(3)]  # earlier iterations must be ignored
    if dict_form:
        return {"pose_enc": [torch.from_numpy(p) for p in (*noise, pose[None])],
                **{k: torch.from_numpy(t) for k, t in tensors.items()}}
    return (np.stack([*noise, pose[None]]), *tensors.values())


@pytest.mark.parametrize("dict_form", [True, False])
def test_to_window_prediction_decodes_the_last_pose_and_moves_features_last(dict_form):
    v, h, w = 2, 28, 56
    rng = np.random.default_rng(3)
    quat = rng.normal(size=(v, 4))
    rot = quat_to_mat(quat)
    extrinsics = np.concatenate([rot, rng.normal(size=(v, 3, 1))], -1).astype(np.float32)
    intrinsics = np.tile(np.array([[40.0, 0, w / 2], [0, 30.0, h / 2], [0, 0, 1]], np.float32), (v, 1, 1))
    pose = extri_intri_to_pose_encoding(extrinsics, intrinsics, (h, w)).astype(np.float32)
    outputs = _fake_outputs(v, h, w, pose, dict_form)
    images = np.zeros((v, h, w, 3), np.uint8)
    pred = to_window_prediction(outputs, images, "test")
    np.testing.assert_allclose(pred.extrinsics, extrinsics, atol=1e-5)
    np.testing.assert_allclose(pred.intrinsics, intrinsics, rtol=1e-5)
    arrays = outputs_as_arrays(outputs)
    np.testing.assert_array_equal(pred.depth, arrays["depth"][0, ..., 0])
    np.testing.assert_array_equal(pred.instance_features[1, 5, 7], arrays["part_feat"][0, 1, :, 5, 7])
    assert pred.instance_features.shape == (v, h, w, 8)
    assert pred.engine == "test" and pred.num_views == v


def test_to_window_prediction_rejects_a_batch_and_mismatched_images():
    v, h, w = 1, 28, 28
    outputs = list(_fake_outputs(v, h, w, np.zeros((v, 9), np.float32) + 0.5, dict_form=False))
    with pytest.raises(EngineError, match="do not match"):
        to_window_prediction(outputs, np.zeros((2, h, w, 3), np.uint8))
    outputs[1] = np.concatenate([outputs[1], outputs[1]])
    with pytest.raises(EngineError, match="one batch element"):
        to_window_prediction(outputs, np.zeros((v, h, w, 3), np.uint8))


def test_resize_nearest_keeps_ids_and_samples_pixel_centres():
    from iggt_ros.engine.preprocess import resize_nearest

    ids = np.arange(12, dtype=np.uint16).reshape(3, 4)
    up = resize_nearest(ids, (6, 8))
    assert up.dtype == ids.dtype and set(np.unique(up)) == set(np.unique(ids))
    np.testing.assert_array_equal(up[::2, ::2], ids)
    np.testing.assert_array_equal(resize_nearest(up, (3, 4)), ids)
    depth = np.random.default_rng(0).random((6, 8, 1)).astype(np.float32)
    assert resize_nearest(depth, (3, 4)).shape == (3, 4, 1)
    assert resize_nearest(ids, (3, 4)) is ids
