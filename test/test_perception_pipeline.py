"""The whole perception pipeline under the ground-truth oracle engine, and its behaviour on bad input.

Evaluation protocol of the sequence tests: every view is scored once, with the instance image of the
window that first contained it (what the node publishes); ground-truth masks smaller than
clustering.min_instance_area (a fraction of the view) in a view count as not visible there (nothing can
be asked of the pipeline below its own minimum mask size). T-mIoU and T-SR come from
iggt_ros.eval.metrics. The same configuration runs at every model input size.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace

import numpy as np
import pytest

from iggt_ros.config import IggtConfig
from iggt_ros.engine.base import Engine, ViewKey, WindowPrediction
from iggt_ros.engine.oracle import OracleEngine
from iggt_ros.engine.preprocess import resize_nearest
from iggt_ros.eval.metrics import drop_small_instances
from iggt_ros.eval.record import RunRecord
from iggt_ros.perception.frames import CameraFrame, FrameSet
from iggt_ros.perception.pipeline import CLOUD_DTYPE, Pipeline, WindowResult
from iggt_ros.perception.records import TrackState
from iggt_ros.perception.scaling import view_scale
from iggt_ros.perception.window import Window
from iggt_ros.spatial import umeyama_sim3
from iggt_ros.synthetic.sequence import make_sequence

W, H = 504, 336


def config_for(seq, **overrides) -> IggtConfig:
    height, width = seq.steps[0][0].depth.shape
    flat = {"input.cameras": seq.rig.names, "input.image_width": width, "input.image_height": height,
            "window.min_translation_m": 0.0, "window.min_rotation_deg": 0.0, "window.min_image_change": 0.0}
    flat.update(overrides)
    return IggtConfig().replace(**flat)


def framesets(seq, with_tf: bool):
    for step in seq.steps:
        yield FrameSet(step[0].stamp_ns, {
            v.camera: CameraFrame(v.camera, v.stamp_ns, v.rgb, v.intrinsics, f"{v.camera}_optical",
                                  v.world_from_camera if with_tf else None) for v in step})


def visible_gt(ids: np.ndarray) -> np.ndarray:
    """Truth without the masks below the pipeline's minimum area at this view size."""
    return drop_small_instances(ids, view_scale(IggtConfig().clustering, *ids.shape).min_instance_area_px)


def run_sequence(seed: int, with_tf: bool, similarity: str, num_objects: int, size: tuple[int, int] = (H, W)):
    height, width = size
    seq = make_sequence(seed, num_steps=60, width=width, height=height, num_objects=num_objects)
    engine = OracleEngine.from_sequence(seq, input_size=size, similarity=similarity, window_local_features=True,
                                        boundary_px=1, seed=seed)
    pipe = Pipeline(config_for(seq), engine)
    truth = {(v.camera, v.stamp_ns): v.instance_ids for v in seq.views()}
    record = RunRecord(engine.name)  # scored as the replay and the training evaluation score a run
    published: dict[tuple[str, int], np.ndarray] = {}
    results: list[WindowResult] = []
    for fs in framesets(seq, with_tf):
        res = pipe.push(fs)
        if res is None:
            continue
        results.append(res)
        for i, view in enumerate(res.views):
            if view.new:
                key = (view.camera, view.stamp_ns)
                published[key] = res.instance_images[i]
                record.add_view(res.instance_images[i], visible_gt(truth[key]))
    return seq, pipe, results, published, truth, record.instances.result()


@pytest.fixture(scope="module")
def chained_run():
    """No TF, an unknown Sim(3) per window, window-local features, three identical duplicate pairs."""
    return run_sequence(seed=5, with_tf=False, similarity="full", num_objects=10)


@pytest.fixture(scope="module")
def tf_run():
    return run_sequence(seed=8, with_tf=True, similarity="scale", num_objects=10)


def centroid_errors(seq, pipe, metrics, aligned_to_truth: bool) -> tuple[float, float, float]:
    """Largest centroid and box-centre error over matched objects, and the scene size (room diagonal)."""
    inst = {i.id: i for i in pipe.snapshot().instances}
    pairs = [(o.gt_id, o.pred_id) for o in metrics.objects if o.pred_id in inst]
    truth = np.array([seq.scene.object(g).center for g, _ in pairs])
    errs = []
    for attr in ("centroid", "box_center"):
        est = np.array([getattr(inst[p], attr) for _, p in pairs])
        if not aligned_to_truth:  # the fallback frame is the first camera's: compare up to a similarity
            s, r, t = umeyama_sim3(est, truth)
            est = s * est @ r.T + t
        errs.append(float(np.linalg.norm(est - truth, axis=1).max()))
    return errs[0], errs[1], float(np.linalg.norm(seq.scene.room_size))


def assert_duplicates_never_swap(seq, published, truth, metrics):
    match = metrics.matching
    pairs = [(o.id, o.duplicate_of) for o in seq.scene.objects if o.duplicate_of]
    assert pairs, "the sequence must contain identical duplicates"
    for a, b in pairs:
        assert match[a] != match[b]
        for key, pred in published.items():
            gt = visible_gt(truth[key])
            for obj, other in ((a, b), (b, a)):
                px = pred[gt == obj]
                if px.size:  # its own ID dominates; the twin's ID at most bleeds over a shared boundary
                    ids, counts = np.unique(px, return_counts=True)
                    assert ids[np.argmax(counts)] == match[obj], f"object {obj} lost its ID in {key}"
                    assert (px == match[other]).mean() < 0.05, f"object {obj} carries its duplicate's ID in {key}"


def test_chained_sequence_meets_targets(chained_run):
    seq, pipe, results, published, truth, metrics = chained_run
    print(f"chained: T-mIoU {metrics.t_miou:.4f} T-SR {metrics.t_sr:.4f} "
          f"({metrics.num_objects} objects, {metrics.num_pred_ids} IDs, {len(published)} views)")
    assert len(published) == 60 and len(results) == 14
    assert metrics.t_miou >= 0.90
    assert metrics.t_sr >= 0.98
    reentering = [o for o in metrics.objects if o.views_visible < 60]
    assert reentering, "objects must leave and re-enter the view"
    assert_duplicates_never_swap(seq, published, truth, metrics)
    c_err, box_err, size = centroid_errors(seq, pipe, metrics, aligned_to_truth=False)
    print(f"chained: centroid error {c_err:.3f} m, box centre error {box_err:.3f} m, scene {size:.2f} m")
    assert c_err < 0.02 * size and box_err < 0.02 * size
    assert all(r.frame_id == "iggt_map" and not r.metric for r in results)


def test_tf_sequence_is_metric_in_the_world_frame(tf_run):
    seq, pipe, results, published, truth, metrics = tf_run
    print(f"tf: T-mIoU {metrics.t_miou:.4f} T-SR {metrics.t_sr:.4f}")
    assert metrics.t_miou >= 0.90 and metrics.t_sr >= 0.98
    assert_duplicates_never_swap(seq, published, truth, metrics)
    assert all(r.frame_id == "odom" and r.metric and r.alignment.mode == "tf" for r in results)
    c_err, box_err, size = centroid_errors(seq, pipe, metrics, aligned_to_truth=True)
    print(f"tf: centroid error {c_err:.3f} m, box centre error {box_err:.3f} m, scene {size:.2f} m")
    assert c_err < 0.02 * size and box_err < 0.02 * size
    # metric depth: the true depth of the first view comes back
    res = results[0]
    true_depth = seq.steps[0][0].depth
    assert true_depth.shape == res.depth.shape[1:]
    assert np.nanmedian(np.abs(res.depth[0] - true_depth) / true_depth) < 0.02


def test_view_poses_are_the_cameras_in_the_output_frame(tf_run):
    """ViewInfo.world_from_camera: rigid, the true camera pose in odom, and it maps depth onto the cloud."""
    seq, _, results, _, _, _ = tf_run
    truth = {(v.camera, v.stamp_ns): v for v in seq.views()}
    size = float(np.linalg.norm(seq.scene.room_size))
    for res in results:
        for view in res.views:
            pose, true_pose = view.world_from_camera, truth[(view.camera, view.stamp_ns)].world_from_camera
            assert pose.shape == (4, 4) and np.allclose(pose[:3, :3] @ pose[:3, :3].T, np.eye(3), atol=1e-6)
            assert np.linalg.norm(pose[:3, 3] - true_pose[:3, 3]) < 0.005 * size
            cos = (np.trace(pose[:3, :3].T @ true_pose[:3, :3]) - 1.0) / 2.0
            assert np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))) < 0.5
    res = results[2]
    view = res.views[3]
    k, d = view.intrinsics, res.depth[3, 100, 200]
    cam = np.array([(200.5 - k[0, 2]) / k[0, 0] * d, (100.5 - k[1, 2]) / k[1, 1] * d, d])
    world = view.world_from_camera[:3, :3] @ cam + view.world_from_camera[:3, 3]
    assert np.linalg.norm(res.points - world, axis=1).min() < 0.05  # a published point lies there


def test_chained_view_poses_follow_the_trajectory(chained_run):
    """Without TF the poses live in the chained frame: equal to the truth up to one similarity."""
    seq, _, results, _, _, _ = chained_run
    truth = {(v.camera, v.stamp_ns): v.world_from_camera for v in seq.views()}
    est = np.array([v.world_from_camera[:3, 3] for r in results for v in r.views])
    ref = np.array([truth[(v.camera, v.stamp_ns)][:3, 3] for r in results for v in r.views])
    s, r, t = umeyama_sim3(est, ref)
    err = np.linalg.norm(s * est @ r.T + t - ref, axis=1)
    assert err.max() < 0.01 * float(np.linalg.norm(seq.scene.room_size))


def published_depth_ratios(pipe: Pipeline, seq) -> list[tuple[WindowResult, np.ndarray]]:
    """Run `seq` with TF; per window, the median ratio of each view's published depth to the true depth."""
    truth = {(v.camera, v.stamp_ns): v.depth for v in seq.views()}
    out = []
    for fs in framesets(seq, with_tf=True):
        res = pipe.push(fs)
        if res is not None:
            size = res.depth.shape[1:]
            ratios = [np.nanmedian(res.depth[i] / resize_nearest(truth[(view.camera, view.stamp_ns)], size))
                      for i, view in enumerate(res.views)]
            out.append((res, np.array(ratios)))
    return out


def test_published_depth_is_metric_with_tf_when_the_model_cameras_are_poor():
    """With TF, depth is in metres although the model's camera positions are off (oracle with pose noise).

    The scale used to come from the spread of the model's camera centres against TF's: with 0.3 m of noise
    on them the published depth was 0.74 to 0.83 times the truth."""
    seq = make_sequence(11, num_steps=24, width=252, height=168, num_objects=6)
    engine = OracleEngine.from_sequence(seq, input_size=(168, 252), similarity="full", pose_noise_m=0.3, seed=11)
    runs = published_depth_ratios(Pipeline(config_for(seq), engine), seq)
    assert len(runs) == 5
    for res, ratios in runs:
        assert res.frame_id == "odom" and res.metric
        assert np.abs(np.log(ratios)).max() < 0.03, ratios


@pytest.mark.slow
def test_embedded_model_publishes_depth_in_metres_with_tf():
    """The embedded tiny model, whose camera centres are close to noise: published depth within 25 % of the
    truth in every window (measured 0.97 to 1.07; before, 0.03 to 4 times the truth)."""
    from iggt_ros.engine.factory import create_engine

    seq = make_sequence(3, num_steps=24, width=W, height=H, num_objects=6)
    cfg = config_for(seq)
    engine = create_engine(cfg.engine, input_size=(H, W), window_sizes=(cfg.window.size,))
    runs = published_depth_ratios(Pipeline(cfg, engine), seq)
    assert len(runs) == 5
    for res, ratios in runs:
        print(f"window {res.window_index}: published / true depth {np.median(ratios):.3f} "
              f"({res.alignment.scale_source})")
        assert res.frame_id == "odom" and res.metric
        assert 0.8 < np.median(ratios) < 1.25, ratios


def instance_objects(results: list[WindowResult], truth: dict) -> dict[int, int]:
    """Predicted instance ID -> the true object most of its published pixels belong to."""
    votes: dict[tuple[int, int], int] = {}
    for res in results:
        for i, view in enumerate(res.views):
            gt = resize_nearest(truth[(view.camera, view.stamp_ns)], res.instance_images.shape[1:])
            pred = res.instance_images[i]
            sel = (pred > 0) & (gt > 0)
            for p, g in zip(pred[sel].tolist(), gt[sel].tolist(), strict=True):
                votes[(p, g)] = votes.get((p, g), 0) + 1
    best: dict[int, tuple[int, int]] = {}
    for (p, g), n in votes.items():
        if n > best.get(p, (0, 0))[1]:
            best[p] = (g, n)
    return {p: g for p, (g, _) in best.items()}


def test_late_tf_and_a_dropout_never_mix_frames(caplog):
    """TF from step 20 (2 s late), missing over steps 40-45: every message is in one frame (all its instances
    agree with the truth through one similarity: the identity in odom), the map moves to odom once, the
    dropout stays in odom and is counted, and the final instances lie within 0.25 m of true objects."""
    seq = make_sequence(5, num_steps=60, width=W, height=H, num_objects=8)
    engine = OracleEngine.from_sequence(seq, input_size=(168, 252), similarity="full", window_local_features=True,
                                        seed=5)
    pipe = Pipeline(config_for(seq), engine)
    results = []
    with caplog.at_level(logging.WARNING):
        for k, fs in enumerate(framesets(seq, with_tf=True)):
            if not (20 <= k < 40 or k >= 46):
                fs = FrameSet(fs.stamp_ns, {c: replace(f, world_from_camera=None) for c, f in fs.frames.items()})
            res = pipe.push(fs)
            if res is not None:
                results.append(res)
    frames = [r.frame_id for r in results]
    switch = frames.index("odom")
    assert frames == ["iggt_map"] * switch + ["odom"] * (len(frames) - switch) and switch >= 5
    assert results[switch].alignment.reexpress is not None and pipe.reexpressions == 1
    assert [r.alignment.tf_dropout for r in results].count(True) == pipe.tf_dropout_windows >= 2
    assert "TF late or dropped out" in caplog.text
    truth_ids = {(v.camera, v.stamp_ns): v.instance_ids for v in seq.views()}
    objects = instance_objects(results, truth_ids)
    centre = {o.id: np.asarray(o.center) for o in seq.scene.objects}
    for res in results:
        pairs = [(i.centroid, centre[objects[i.id]]) for i in res.instances if i.id in objects]
        est, ref = (np.array(x) for x in zip(*pairs, strict=True))
        assert len(pairs) >= 4
        if res.frame_id == "iggt_map":  # up to the fallback frame's own similarity
            s, r, t = umeyama_sim3(est, ref)
            est = s * est @ r.T + t
        err = np.linalg.norm(est - ref, axis=1)
        assert err.max() < 0.25, (res.window_index, res.frame_id, err)
    final = pipe.snapshot()
    assert final.frame_id == "odom" and final.instances
    for inst in final.instances:
        assert min(np.linalg.norm(inst.centroid - c) for c in centre.values()) < 0.25


LOW_RESOLUTION_RUNS = {
    # measured T-mIoU / T-SR with the oracle (boundary 1 px): 140x84 0.756 / 0.80, 168x112 0.909 / 0.80;
    # before the patch grid followed the image size: 0.549 / 0.20 and 0.630 / 0.30 (HDBSCAN "all noise")
    "chained-140x84": ((84, 140), 5, False, "full", 0.72, 0.75),
    "tf-168x112": ((112, 168), 8, True, "scale", 0.88, 0.75),
}


@pytest.mark.parametrize("name", sorted(LOW_RESOLUTION_RUNS))
def test_small_model_input_sizes_keep_instances(name):
    """The default configuration at the embedded model's input sizes: objects of a few dozen pixels."""
    size, seed, with_tf, similarity, min_miou, min_sr = LOW_RESOLUTION_RUNS[name]
    seq, _, results, published, truth, metrics = run_sequence(seed, with_tf, similarity, 10, size)
    print(f"{name}: T-mIoU {metrics.t_miou:.4f} T-SR {metrics.t_sr:.4f} ({metrics.num_pred_ids} IDs)")
    assert len(published) == 60 and all(r.instance_images.shape[1:] == size for r in results)
    assert not [w for r in results for w in r.warnings if "all noise" in w or "look like noise" in w]
    assert all(r.instances for r in results)
    assert metrics.t_miou >= min_miou and metrics.t_sr >= min_sr
    assert metrics.num_pred_ids <= metrics.num_objects + 3  # few spurious IDs


def test_window_result_contents(tf_run):
    _, pipe, results, _, _, _ = tf_run
    res = results[-1]
    v = len(res.views)
    assert res.instance_images.shape == (v, H, W) and res.instance_images.dtype == np.uint16
    assert res.depth.shape == (v, H, W) and res.depth.dtype == np.float32
    assert res.cloud.dtype == CLOUD_DTYPE and 0 < len(res.cloud) <= pipe.config.mapping.max_cloud_points
    ids_in_images = set(np.unique(res.instance_images).tolist()) - {0}
    assert ids_in_images <= {i.id for i in res.instances}
    assert set(np.unique(res.point_ids).tolist()) - {0} <= ids_in_images
    assert res.colors.dtype == np.uint8 and res.points.shape == (len(res.cloud), 3)
    assert [vi.new for vi in res.views] == [False] * 4 + [True] * 4
    assert all(vi.frame_id.endswith("_optical") and vi.intrinsics.shape == (3, 3) for vi in res.views)
    for stage in ("inference", "mapping", "clustering", "assignment", "tracking", "object_map", "cloud", "total"):
        assert res.timings_ms[stage] >= 0.0
    states = {i.state for i in res.instances}
    assert TrackState.CONFIRMED in states and states <= set(TrackState)


# ---------------------------------------------------------------------- bad input
@pytest.fixture(scope="module")
def short_seq():
    return make_sequence(2, num_steps=12, width=W, height=H, num_objects=6)


def small_pipeline(seq, engine: Engine | None = None, **overrides) -> Pipeline:
    cfg = config_for(seq, **{"window.size": 4, "window.stride": 2, **overrides})
    return Pipeline(cfg, engine or OracleEngine.from_sequence(seq, input_size=(H, W)))


def first_result(pipe: Pipeline, seq, with_tf: bool = False) -> WindowResult:
    for fs in framesets(seq, with_tf):
        res = pipe.push(fs)
        if res is not None:
            return res
    raise AssertionError("no window was emitted")


class CorruptingEngine(Engine):
    """Wraps an engine and damages its output, to check the pipeline's handling of bad predictions."""

    def __init__(self, inner: Engine, damage) -> None:
        self.inner, self.damage = inner, damage

    @property
    def input_size(self):
        return self.inner.input_size

    def infer(self, images, views=None) -> WindowPrediction:
        pred = self.inner.infer(images, views)
        self.damage(pred)
        return pred


def test_empty_window_gives_empty_result(short_seq, caplog):
    pipe = small_pipeline(short_seq)
    with caplog.at_level(logging.WARNING):
        res = pipe.process_window(Window(index=0, steps=[], new_steps=0))
    assert "empty window" in caplog.text and res.warnings
    assert res.instance_images.shape == (0, H, W) and len(res.cloud) == 0 and res.alignment is None


def test_all_noise_features_give_no_instances(short_seq, caplog):
    rng = np.random.default_rng(0)

    def noise(pred):
        pred.instance_features[:] = rng.normal(size=pred.instance_features.shape)

    pipe = small_pipeline(short_seq, CorruptingEngine(OracleEngine.from_sequence(short_seq, input_size=(H, W)), noise))
    with caplog.at_level(logging.WARNING):
        res = first_result(pipe, short_seq)
    assert "look like noise" in caplog.text
    assert not res.instance_images.any() and res.instances == []
    assert len(res.cloud) > 0 and not res.point_ids.any()  # geometry is still published


def test_nan_depth_is_left_out_and_reported(short_seq, caplog):
    def nan_half(pred):
        pred.depth[:, :, : W // 2] = np.nan
        pred.world_points[:, :, : W // 2] = np.nan

    pipe = small_pipeline(short_seq, CorruptingEngine(OracleEngine.from_sequence(short_seq, input_size=(H, W)),
                                                      nan_half))
    with caplog.at_level(logging.WARNING):
        res = first_result(pipe, short_seq)
    assert "non-finite" in caplog.text
    assert not res.instance_images[:, :, : W // 2].any() and res.instance_images[:, :, W // 2:].any()
    assert np.isnan(res.depth[:, :, : W // 2]).all() and np.isfinite(res.points).all()


def test_all_nan_prediction_gives_empty_result(short_seq, caplog):
    def all_nan(pred):
        pred.depth[:] = np.nan

    pipe = small_pipeline(short_seq, CorruptingEngine(OracleEngine.from_sequence(short_seq, input_size=(H, W)),
                                                      all_nan))
    with caplog.at_level(logging.WARNING):
        res = first_result(pipe, short_seq)
    assert "no valid pixel" in caplog.text and not res.instance_images.any() and len(res.cloud) == 0


def test_camera_missing_from_a_window():
    seq = make_sequence(3, num_steps=8, cameras=2, width=W, height=H, num_objects=6)
    pipe = small_pipeline(seq)
    results = []
    for t, fs in enumerate(framesets(seq, with_tf=False)):
        if t == 2:
            fs.frames.pop(seq.rig.names[1])
        res = pipe.push(fs)
        if res is not None:
            results.append(res)
    res = results[0]
    assert len(res.views) == 7 and res.instance_images.shape[0] == 7
    assert any("misses cameras" in w for w in res.warnings)
    assert res.instance_images.any()


def test_time_going_backwards_resets_the_pipeline(short_seq, caplog):
    pipe = small_pipeline(short_seq)
    sets = list(framesets(short_seq, with_tf=False))
    for fs in sets[:8]:
        pipe.push(fs)
    assert pipe.windows_processed >= 2 and pipe.snapshot().instances
    with caplog.at_level(logging.WARNING):
        assert pipe.push(sets[0]) is None  # the bag looped
    assert "time went backwards" in caplog.text and "pipeline reset" in caplog.text
    assert pipe.time_jumps == 1 and pipe.snapshot().instances == ()
    results = [r for fs in sets[1:4] if (r := pipe.push(fs)) is not None]
    assert results and results[0].window_index == 0


def test_engine_error_is_reported_not_raised(short_seq, caplog):
    pipe = small_pipeline(short_seq, OracleEngine({}, input_size=(H, W)))  # no truth for any view
    with caplog.at_level(logging.WARNING):
        res = first_result(pipe, short_seq)
    assert "engine failed" in caplog.text and "no ground truth" in res.warnings[0]


def test_reset_and_snapshot_from_another_thread(short_seq):
    pipe = small_pipeline(short_seq)
    sets = list(framesets(short_seq, with_tf=False))
    errors: list[BaseException] = []
    snapshots = []
    stop = threading.Event()

    def reader():
        try:
            while not stop.is_set():
                snap = pipe.snapshot()
                snapshots.append(len(snap.instances))
                for inst in snap.instances:
                    _ = inst.centroid.sum()
        except BaseException as exc:  # noqa: BLE001 - surfaced below
            errors.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for fs in sets[:6]:
            pipe.push(fs)
        pipe.reset()
        for fs in sets[6:]:
            pipe.push(fs)
    finally:
        stop.set()
        thread.join()
    assert not errors and snapshots
    assert pipe.resets == 1 and pipe.snapshot().window_index >= 0


def test_oracle_engine_frame_conventions(short_seq):
    engine = OracleEngine.from_sequence(short_seq, input_size=(168, 252), similarity="none", depth_noise=0.0)
    views = [ViewKey(v.camera, v.stamp_ns) for v in short_seq.views()[:3]]
    pred = engine.infer(np.zeros((3, 168, 252, 3), np.uint8), views)
    pred.validate()
    assert np.allclose(pred.extrinsics[0], np.eye(3, 4), atol=1e-6)  # model frame = first camera
    first = short_seq.views()[0]
    assert np.allclose(pred.depth[0], first.depth[1::2, 1::2], rtol=1e-5)
    # a point of view 1, taken to the world through the true pose, matches the truth
    world_from_cam0 = first.world_from_camera
    p = pred.world_points[1, 80, 120].astype(float)
    world = world_from_cam0[:3, :3] @ p + world_from_cam0[:3, 3]
    v1 = short_seq.views()[1]
    d = v1.depth[161, 241]
    k = v1.intrinsics
    u, v = 2 * 120.5, 2 * 80.5  # the ray through the centre of output pixel (80, 120), in full-size pixels
    cam = np.array([(u - k[0, 2]) / k[0, 0] * d, (v - k[1, 2]) / k[1, 1] * d, d])
    assert np.allclose(world, v1.world_from_camera[:3, :3] @ cam + v1.world_from_camera[:3, 3], atol=1e-3)
    norms = np.linalg.norm(pred.instance_features, axis=-1)
    assert norms.min() > 0.2 and norms.max() > 1.5  # raw features: not normalised


def test_unusable_images_give_empty_result(short_seq, caplog):
    pipe = small_pipeline(short_seq)
    sets = list(framesets(short_seq, with_tf=False))
    for fs in sets:
        for f in fs.frames.values():
            f.image = f.image.astype(np.float32)  # not uint8 RGB
    with caplog.at_level(logging.WARNING):
        res = next(r for fs in sets if (r := pipe.push(fs)) is not None)
    assert "cannot be used" in caplog.text and not res.instance_images.any() and len(res.cloud) == 0
