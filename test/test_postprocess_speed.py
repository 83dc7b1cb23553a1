"""Post-processing's fast paths give the results of their reference versions.

The per-pixel passes (pixel_ops), the window-wide speckle removal (speckle) and the coarse-to-fine assignment
are there for speed only: each is held here to the plain version it replaces, on the torch path (CPU device,
the code a CUDA GPU runs) as on numpy. The benchmark (benchmarks/postprocess.py) measures their speed.
"""

from __future__ import annotations

import numpy as np
import pytest

from iggt_ros.config import ClusteringConfig
from iggt_ros.engine.base import ViewKey
from iggt_ros.engine.oracle import OracleEngine
from iggt_ros.eval.metrics import temporal_instance_metrics
from iggt_ros.perception import pixel_kernels
from iggt_ros.perception.clustering import InstanceClusterer, l2_normalize
from iggt_ros.perception.pipeline import pack_cloud
from iggt_ros.perception.pixel_ops import NumpyPixels, TorchPixels, make_pixel_ops, min_cosine
from iggt_ros.perception.speckle import _window_pieces_python, drop_small_pieces_window
from iggt_ros.synthetic.sequence import make_sequence

H, W = 112, 168


@pytest.fixture(scope="module")
def window():
    """Oracle features of 4 views of a synthetic scene (instance boundaries, noise, gain), and the truth."""
    seq = make_sequence(3, num_steps=4, width=W, height=H, num_objects=8)
    oracle = OracleEngine.from_sequence(seq, input_size=(H, W), window_local_features=True, boundary_px=1, seed=3)
    views = [v for step in seq.steps for v in step]
    keys = [ViewKey(v.camera, v.stamp_ns) for v in views]
    pred = oracle.infer(np.zeros((len(keys), H, W, 3), np.uint8), keys)
    return pred, [v.instance_ids for v in views]


def random_labels(seed: int, shape=(3, 40, 56), k: int = 6) -> np.ndarray:
    """Blobs with speckle: coarse random labels upsampled, plus isolated pixels of other labels."""
    rng = np.random.default_rng(seed)
    v, h, w = shape
    coarse = rng.integers(0, k + 1, size=(v, h // 8, w // 8))
    labels = np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2).astype(np.int32)
    noise = rng.random(shape) < 0.05
    labels[noise] = rng.integers(0, k + 1, size=int(noise.sum()))
    return np.ascontiguousarray(labels)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_window_speckle_removal_equals_the_per_label_version(seed):
    labels = random_labels(seed)
    skip = np.zeros(7, bool)
    skip[3] = True  # structure is left alone
    fast, slow = labels.copy(), labels.copy()
    removed_fast = drop_small_pieces_window(fast, 20.0, 0.1, skip)
    removed_slow = _window_pieces_python(slow, 20.0, 0.1, skip)
    assert removed_fast.sum() > 0  # the case exercises removal
    np.testing.assert_array_equal(fast, slow)
    np.testing.assert_array_equal(removed_fast, removed_slow)
    assert (fast[labels == 3] == 3).all()


def test_torch_pixels_on_the_cpu_match_numpy(window):
    pred, _ = window
    feats = pred.instance_features
    numpy_ops, torch_ops = NumpyPixels(), TorchPixels("cpu")
    depth = pred.depth.copy()
    depth[0, :3] = np.nan
    depth[1, :2] = -1.0
    valid = numpy_ops.valid_pixels(depth, pred.world_points, pred.depth_conf)
    assert not valid[0, :3].any() and not valid[1, :2].any() and valid.mean() > 0.9
    np.testing.assert_array_equal(valid, torch_ops.valid_pixels(depth, pred.world_points, pred.depth_conf))
    protos = InstanceClusterer(ClusteringConfig(min_instance_area_px=20)).cluster(feats).prototypes
    assert len(protos) >= 3
    min_cos = min_cosine(0.6)
    blocks_np = numpy_ops.block_stats(feats, valid, 4)
    dev = torch_ops.prepare(feats)
    blocks_t = torch_ops.block_stats(dev, valid, 4)
    np.testing.assert_allclose(blocks_np.sum, blocks_t.sum, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(blocks_np.valid, blocks_t.valid)
    exact_np = numpy_ops.assign_exact(feats, valid, protos, min_cos)
    exact_t = torch_ops.assign_exact(dev, valid, protos, min_cos)
    assert (exact_np == exact_t).mean() > 0.9999  # ties at float rounding may differ
    c2f_np = numpy_ops.assign_coarse_to_fine(feats, valid, protos, blocks_np, 4, min_cos)
    c2f_t = torch_ops.assign_coarse_to_fine(dev, valid, protos, blocks_t, 4, min_cos)
    assert (c2f_np == c2f_t).mean() > 0.9999
    assert (c2f_np[~valid] == 0).all() and len(np.unique(c2f_np)) > 3


@pytest.mark.skipif(not pixel_kernels.AVAILABLE, reason="numba is not installed")
def test_compiled_pixel_passes_match_the_numpy_code(window):
    """The numba kernels (validity, block sums, coarse-to-fine assignment) against the numpy code they replace,
    on a window with invalid pixels, an odd block (not a multiple of 4) excluded."""
    pred, _ = window
    feats = pred.instance_features.astype(np.float32)
    compiled, plain = NumpyPixels(), NumpyPixels(compiled=False)
    assert compiled.compiled and not plain.compiled
    depth = pred.depth.copy()
    depth[0, :3] = np.nan
    depth[1, :2] = -1.0
    points = pred.world_points.copy()
    points[2, 5:9, 10:20, 1] = np.inf
    conf = pred.depth_conf.copy()
    conf[3, -4:] = np.nan
    valid = compiled.valid_pixels(depth, points, conf)
    np.testing.assert_array_equal(valid, plain.valid_pixels(depth, points, conf))
    assert not valid[2, 5:9, 10:20].any() and not valid[3, -4:].any() and valid.mean() > 0.9
    blocks, ref = compiled.block_stats(feats, valid, 4), plain.block_stats(feats, valid, 4)
    np.testing.assert_allclose(blocks.sum, ref.sum, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(blocks.norm_sum, ref.norm_sum, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(blocks.valid, ref.valid)
    protos = InstanceClusterer(ClusteringConfig(min_instance_area_px=20)).cluster(feats).prototypes
    min_cos = min_cosine(0.6)
    fast = compiled.assign_coarse_to_fine(feats, valid, protos, blocks, 4, min_cos)
    slow = plain.assign_coarse_to_fine(feats, valid, protos, ref, 4, min_cos)
    assert (fast == slow).mean() > 0.9999  # ties at float rounding may differ
    assert (fast[~valid] == 0).all() and len(np.unique(fast)) > 3
    # the clean-up's counting and relabelling
    labels = np.ascontiguousarray(slow.astype(np.int32))
    k1 = int(labels.max()) + 1
    counts = pixel_kernels.label_counts(labels, k1)
    for i in range(labels.shape[0]):
        np.testing.assert_array_equal(counts[i], np.bincount(labels[i].ravel(), minlength=k1))
    lut = np.random.default_rng(0).integers(0, k1, size=(labels.shape[0], k1)).astype(np.int32)
    expected = np.stack([lut[i][labels[i]] for i in range(labels.shape[0])])
    np.testing.assert_array_equal(pixel_kernels.relabel(labels.copy(), lut), expected)
    # the sampler's unit patch features
    flat = blocks.sum.reshape(-1, feats.shape[-1])
    rows = np.flatnonzero(blocks.valid.ravel())
    np.testing.assert_array_equal(pixel_kernels.unit_rows(flat, rows),
                                  l2_normalize(flat[rows].astype(np.float64)).astype(np.float32))


@pytest.mark.skipif(not pixel_kernels.AVAILABLE, reason="numba is not installed")
def test_compiled_voxel_keys_match_numpy():
    """Voxel keys of the cloud and the object map, compiled, against numpy's conversion; NaN, inf and values out of
    range give a valid key."""
    from iggt_ros.perception.object_map import _OFFSET, voxel_keys

    rng = np.random.default_rng(2)
    pts = (rng.normal(size=(2000, 3)) * 5).astype(np.float32)
    pts[:5] = [[np.nan, 1, 2], [np.inf, -np.inf, 3], [1e30, -1e30, 0], [2e5, -2e5, 0.0], [-0.0, 0.05, -0.05]]
    for dtype in (np.float32, np.float64):
        p = pts.astype(dtype)
        with np.errstate(invalid="ignore"):
            q = np.clip(np.floor(p.astype(np.float64) / 0.02).astype(np.int64) + _OFFSET, 0, 2 * _OFFSET - 1)
        expected = (q[:, 0] << 42) | (q[:, 1] << 21) | q[:, 2]
        keys = voxel_keys(p, 0.02)
        # numpy's conversion of NaN, inf or out-of-range values is platform-defined: compare representable rows
        np.testing.assert_array_equal(keys[3:], expected[3:])
        assert (keys[:3] >= 0).all()
    assert len(np.unique(voxel_keys(pts, 0.02))) > 1900


@pytest.mark.skipif(not pixel_kernels.AVAILABLE, reason="numba is not installed")
def test_compiled_window_outputs_and_checks_match_numpy(window):
    """The kernels added for speed against the numpy they replace: block sums with the finiteness check in the same
    pass (a NaN on a pixel no block sum reads is still seen), ID images, published depth, the cloud's grid gather,
    the tracker's label-pair counts, the residual pass's 'explained' test and first-per-voxel selection."""
    pred, _ = window
    feats = np.ascontiguousarray(pred.instance_features.astype(np.float32))
    compiled, plain = NumpyPixels(), NumpyPixels(compiled=False)
    valid = compiled.valid_pixels(pred.depth, pred.world_points, pred.depth_conf)
    checked, ref = compiled.block_stats_if_finite(feats, valid, 4), plain.block_stats(feats, valid, 4)
    np.testing.assert_allclose(checked.sum, ref.sum, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(checked.valid, ref.valid)
    for where in [(1, 5, 7, 3), (2, 0, 0, 0), (0, H - 1, W - 1, 7)]:  # unread (odd) pixels, a read one, the last
        bad = feats.copy()
        bad[where] = np.nan if where[0] != 2 else np.inf
        assert compiled.block_stats_if_finite(bad, valid, 4) is None
        assert not plain.finite(bad)[where[:3]]
    rng = np.random.default_rng(4)
    labels = np.ascontiguousarray(rng.integers(0, 6, size=valid.shape).astype(np.int32))
    lut = rng.integers(0, 60000, size=6).astype(np.uint16)
    np.testing.assert_array_equal(compiled.id_image(labels, lut), plain.id_image(labels, lut))
    np.testing.assert_array_equal(compiled.scaled_depth(pred.depth, valid, 2.5),
                                  plain.scaled_depth(pred.depth, valid, 2.5))
    step = 3
    grid_pts = np.ascontiguousarray(pred.world_points[:, ::step, ::step])
    ok = np.ascontiguousarray(valid[:, ::step, ::step])
    images = rng.integers(0, 256, size=(*valid.shape, 3)).astype(np.uint8)
    pts, cols, labs = pixel_kernels.grid_gather(grid_pts, ok, images, labels, step)
    np.testing.assert_array_equal(pts, grid_pts[ok])
    np.testing.assert_array_equal(cols, images[:, ::step, ::step][ok])
    np.testing.assert_array_equal(labs, labels[:, ::step, ::step][ok])
    a, b = labels[0, ::2, ::2], labels[1, ::2, ::2]  # strided, as the tracker passes them
    expected = np.bincount(a.ravel() * 6 + b.ravel(), minlength=36).reshape(6, 6)
    np.testing.assert_array_equal(pixel_kernels.pair_counts(a, b, 6, 6), expected)
    np.testing.assert_array_equal(pixel_kernels.pair_counts(a, b, 4, 6), expected[:4])  # labels beyond: not counted
    x = l2_normalize(rng.normal(size=(500, 8))).astype(np.float32)
    protos, rows = x[:3].copy(), np.arange(0, 500, 3)
    np.testing.assert_array_equal(pixel_kernels.near_any(x, rows, protos, np.float32(0.7)),
                                  (x[rows] @ protos.T).max(axis=1) >= np.float32(0.7))
    keys = rng.integers(-40, 40, size=3000) * (1 << 42) + rng.integers(0, 9, size=3000)
    np.testing.assert_array_equal(pixel_kernels.first_of_each_key(keys), np.sort(np.unique(keys, return_index=True)[1]))


def test_single_cluster_passes_find_a_lone_group_with_either_backend():
    """A residual pass holding one group and noise must return that group: fast_hdbscan alone returns none."""
    from iggt_ros.perception.clustering import run_hdbscan

    rng = np.random.default_rng(5)
    group = np.tile(np.eye(8)[1], (9, 1)) + 1e-3 * rng.normal(size=(9, 8))
    noise = l2_normalize(rng.normal(size=(4, 8)))
    x = np.concatenate([group, noise])
    for backend in ("hdbscan", "fast_hdbscan"):
        labels = run_hdbscan(x, backend, 5, 5, allow_single_cluster=True)
        assert labels.max() == 0 and (labels[:9] == 0).sum() >= 5, (backend, labels)


def test_cloud_words_match_the_published_layout():
    rng = np.random.default_rng(1)
    pts = rng.normal(size=(50, 3)).astype(np.float32)
    cols = rng.integers(0, 256, size=(50, 3)).astype(np.uint8)
    ids = rng.integers(0, 2 ** 32, size=50, dtype=np.uint64).astype(np.uint32)
    reference = pack_cloud(pts, cols, ids).tobytes()
    for ops in (NumpyPixels(), TorchPixels("cpu")):
        assert ops.pack_cloud_columns(pts, cols, ids).tobytes() == reference, ops.name


def test_clusterer_gives_the_same_masks_on_numpy_and_on_torch(window):
    pred, truth = window
    results = {}
    for device in ("numpy", "cpu"):
        clusterer = InstanceClusterer(ClusteringConfig(min_instance_area_px=20, pixel_device=device), seed=0)
        results[device] = clusterer.cluster(pred.instance_features, None, pred.depth_conf, pred.world_points)
    assert results["numpy"].num_instances == results["cpu"].num_instances >= 3
    assert (results["numpy"].labels == results["cpu"].labels).mean() > 0.999


def test_coarse_to_fine_assignment_keeps_the_exact_masks(window):
    pred, truth = window
    scores = {}
    for mode in ("coarse_to_fine", "exact"):
        clusterer = InstanceClusterer(ClusteringConfig(min_instance_area_px=20, assignment=mode), seed=0)
        res = clusterer.cluster(pred.instance_features, None, pred.depth_conf, pred.world_points)
        scores[mode] = temporal_instance_metrics(list(res.labels), truth).t_miou
    assert scores["exact"] > 0.5
    assert abs(scores["coarse_to_fine"] - scores["exact"]) <= 0.01, scores


def test_twin_prototypes_become_one_instance():
    """Identical features split by HDBSCAN into twins are one instance, not two halves of an object."""
    rng = np.random.default_rng(0)
    v, h, w = 2, 56, 84
    ids = np.zeros((v, h, w), np.int64)
    ids[:, 10:40, 10:40] = 1
    ids[:, 20:50, 50:80] = 2
    vec = np.array([[1, 0, 0, 0, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0, 0, 0]], np.float32)
    # saturated features: exactly three directions, as a real head gives them
    feats = vec[ids] * rng.uniform(0.9, 1.1, size=(v, h, w, 1)).astype(np.float32)
    merged = InstanceClusterer(ClusteringConfig(min_instance_area_px=20, background_fraction=0.9)).cluster(feats)
    assert merged.num_instances == 3
    for k in (1, 2):
        labs = np.unique(merged.labels[ids == k])
        assert len(labs) == 1 and labs[0] > 0


def test_pixel_device_auto_is_numpy_without_cuda():
    import torch

    ops = make_pixel_ops("auto")
    assert ops.name == ("torch-cuda" if torch.cuda.is_available() else "numpy")
    with pytest.raises(ValueError, match="no CUDA device"):
        if not torch.cuda.is_available():
            make_pixel_ops("cuda")
        else:
            raise ValueError("no CUDA device")  # the refusal cannot be shown where CUDA exists


@pytest.mark.parametrize("key, value, message", [
    ("pixel_device", "gpu", "pixel_device"),
    ("assignment", "approximate", "assignment"),
    ("merge_cosine", 0.0, "merge_cosine"),
])
def test_post_processing_settings_are_checked(key, value, message):
    from iggt_ros.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        ClusteringConfig(**{key: value}).validate()


def test_pipeline_on_the_torch_pixel_path_publishes_what_numpy_does():
    """Validity, assignment and cloud packing through the torch code (CPU device here, CUDA on a robot)."""
    from iggt_ros.config import IggtConfig
    from iggt_ros.perception.frames import CameraFrame, FrameSet
    from iggt_ros.perception.pipeline import CLOUD_DTYPE, Pipeline

    seq = make_sequence(6, num_steps=6, width=W, height=H, num_objects=6)
    results = {}
    for device in ("numpy", "cpu"):
        config = IggtConfig().replace(**{
            "input.cameras": seq.rig.names, "input.image_width": W, "input.image_height": H,
            "window.size": 4, "window.stride": 2, "window.min_translation_m": 0.0, "window.min_rotation_deg": 0.0,
            "window.min_image_change": 0.0, "clustering.min_instance_area_px": 20,
            "clustering.pixel_device": device})
        oracle = OracleEngine.from_sequence(seq, input_size=(H, W), window_local_features=True, boundary_px=1,
                                            seed=6)
        pipe = Pipeline(config, oracle)
        assert pipe.clusterer.pixels.name == ("numpy" if device == "numpy" else "torch-cpu")
        out = []
        for step in seq.steps:
            frames = {v.camera: CameraFrame(v.camera, v.stamp_ns, v.rgb, v.intrinsics, f"{v.camera}_optical")
                      for v in step}
            result = pipe.push(FrameSet(step[0].stamp_ns, frames))
            if result is not None:
                out.append(result)
        results[device] = out
    assert len(results["numpy"]) == len(results["cpu"]) >= 2
    for a, b in zip(results["numpy"], results["cpu"], strict=True):
        assert a.cloud.dtype == b.cloud.dtype == CLOUD_DTYPE and len(a.cloud) > 100
        assert a.cloud.tobytes() == b.cloud.tobytes()
        assert (a.instance_images == b.instance_images).mean() > 0.999
        assert a.instance_images.max() >= 3
