"""Thin rims along an instance's outline are no instance; thin objects of their own stay (perception.rims)."""

from __future__ import annotations

import numpy as np
import pytest

from iggt_ros.config import ClusteringConfig, ConfigError, IggtConfig
from iggt_ros.perception.clustering import InstanceClusterer
from iggt_ros.perception.rims import rim_labels


def _scene(views: int = 2, h: int = 84, w: int = 140) -> np.ndarray:
    return np.zeros((views, h, w), np.int32)


def _ring(labels: np.ndarray, lab: int, y0: int, y1: int, x0: int, x1: int, width: int) -> None:
    """A band `width` px wide just outside the box [y0:y1, x0:x1] (the block's outline)."""
    outer = np.zeros(labels.shape, bool)
    outer[y0 - width: y1 + width, x0 - width: x1 + width] = True
    inner = np.zeros(labels.shape, bool)
    inner[y0:y1, x0:x1] = True
    labels[outer & ~inner & (labels == 0)] = lab


@pytest.mark.parametrize("width", [1, 2, 3])
def test_a_rim_around_a_block_is_a_rim(width):
    labels = _scene()
    labels[:, 20:50, 30:70] = 1  # the block
    for v in range(labels.shape[0]):
        _ring(labels[v], 2, 20, 50, 30, 70, width)
    assert rim_labels(labels, 2, 3).tolist() == [False, False, True]


def test_a_rim_on_two_sides_of_a_block_is_a_rim_and_structure_never():
    labels = _scene()
    labels[:, 60:, :] = 3  # the floor, scene structure
    labels[:, 20:50, 30:70] = 1
    labels[:, 50:52, 28:72] = 2  # the band below the block (between it and the floor)
    labels[:, 18:50, 28:30] = 2  # and along its left side
    skip = np.array([False, False, False, True])
    assert rim_labels(labels, 3, 3, skip).tolist() == [False, False, True, False]


def test_a_pole_standing_apart_is_kept():
    labels = _scene()
    labels[:, 60:, :] = 3  # floor
    labels[:, 20:50, 30:70] = 1  # a block
    labels[:, 10:60, 100:102] = 2  # a 2-px pole far from it, standing on the floor
    skip = np.array([False, False, False, True])
    assert rim_labels(labels, 3, 3, skip).tolist() == [False, False, False, False]


def test_a_small_object_touching_a_large_one_on_one_side_is_kept():
    labels = _scene()
    labels[:, 20:50, 30:70] = 1
    labels[:, 30:40, 70:80] = 2  # a 10x10 box against the block's right side
    assert not rim_labels(labels, 2, 3).any()


def test_a_thin_object_is_kept_when_it_hugs_an_instance_in_too_few_views():
    labels = _scene(views=4)
    labels[:, 20:50, 30:70] = 1
    labels[0, 10:60, 72:74] = 2  # beside the block in one view only
    labels[1:, 10:60, 110:112] = 2  # apart from it in the three others
    assert not rim_labels(labels, 2, 3).any()


def test_a_band_wider_than_the_width_is_kept_and_zero_turns_the_rule_off():
    labels = _scene()
    labels[:, 20:50, 30:70] = 1
    for v in range(labels.shape[0]):
        _ring(labels[v], 2, 20, 50, 30, 70, 2)
    assert not rim_labels(labels, 2, 0).any()
    wide = _scene()
    wide[:, 20:50, 30:70] = 1
    for v in range(wide.shape[0]):
        _ring(wide[v], 2, 20, 50, 30, 70, 6)
    assert not rim_labels(wide, 2, 2).any()


def test_of_two_thin_labels_hugging_each_other_the_larger_stays():
    labels = _scene()
    labels[:, 10:70, 40:42] = 1  # a 2-px pole, 60 px tall
    labels[:, 30:50, 42:44] = 2  # a shorter strip along it
    assert rim_labels(labels, 2, 3).tolist() == [False, False, True]


def test_an_object_cut_by_the_image_border_is_not_thin_for_it():
    labels = _scene()
    labels[:, 20:50, 0:3] = 1  # the visible 3 px of an object leaving the image on the left
    labels[:, 20:50, 3:40] = 2
    assert not rim_labels(labels, 2, 3).any()


def _features_with_rim(rim_px: int) -> tuple[np.ndarray, np.ndarray]:
    """Features of a block on a floor whose outline got a third direction of its own, as a blurred head gives."""
    v, h, w = 2, 84, 140
    dirs = np.eye(8, dtype=np.float32)
    feats = np.broadcast_to(dirs[0], (v, h, w, 8)).copy()  # floor
    feats[:, 20 - rim_px: 50 + rim_px, 30 - rim_px: 70 + rim_px] = dirs[2]  # the outline
    feats[:, 20:50, 30:70] = dirs[1]  # the block
    feats[:, 60:70, 100:104] = dirs[3]  # a small thin object apart
    points = np.zeros((v, h, w, 3), np.float32)
    ys, xs = np.mgrid[0:h, 0:w]
    points[..., 0] = xs / w * 4.0
    points[..., 1] = ys / h * 3.0
    points[..., 2] = 2.0
    return feats, points


def test_the_clusterer_leaves_the_outline_unlabelled_and_keeps_the_thin_object():
    assert ClusteringConfig().rim_width_px == 0  # off by default: every label is kept
    feats, points = _features_with_rim(2)
    # width 2 against the default
    on = InstanceClusterer(ClusteringConfig(rim_width_px=2, min_cluster_size=3, min_samples=2)).cluster(
        feats, points=points)
    off = InstanceClusterer(ClusteringConfig(min_cluster_size=3, min_samples=2)).cluster(feats, points=points)
    assert off.num_instances == on.num_instances + 1  # the outline was its own instance
    block = on.labels[0, 35, 50]
    assert block > 0
    assert (on.labels[:, 18:20, 30:70] == 0).all()  # the outline is no instance
    assert (off.labels[:, 18:20, 30:70] > 0).all()
    assert (on.labels[:, 20:50, 30:70] == block).all()  # the block keeps its own pixels, no more
    assert (on.labels[:, 60:70, 100:104] > 0).all()  # the thin object apart keeps its own label
    assert on.labels[0, 65, 102] != block
    assert on.pixel_counts[:, block].tolist() == [int((on.labels[i] == block).sum()) for i in range(2)]


@pytest.mark.parametrize("value", [-1, 1.5])
def test_a_negative_or_fractional_width_is_refused_with_the_key(value):
    with pytest.raises(ConfigError) as err:
        IggtConfig().replace(**{"clustering.rim_width_px": value})
    assert "'clustering.rim_width_px'" in str(err.value)
