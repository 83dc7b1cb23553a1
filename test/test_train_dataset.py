"""Dataset-folder reader for fine-tuning: layout, resizing, errors, and a training step on it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from iggt_ros.model import Iggt, IggtModelConfig
from iggt_ros.synthetic import make_sequence
from iggt_ros.train.batch import TrainBatch
from iggt_ros.train.dataset import DatasetError, FolderWindowSource, SceneFolder, export_scene
from iggt_ros.train.losses import normalize_truth
from iggt_ros.train.trainer import TrainConfig, Trainer

H, W = 56, 84


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    seq_a = make_sequence(11, num_steps=5, width=168, height=112, num_objects=5, coverage=0.2)
    seq_b = make_sequence(12, num_steps=3, cameras=2, width=168, height=112, num_objects=4, coverage=0.2)
    export_scene(seq_a.views(), root / "scene_a")
    export_scene(seq_b.views(), root / "scene_b", depth_png=True)
    return root, seq_a, seq_b


def test_scene_folder_reads_back_what_was_written(dataset):
    root, seq_a, seq_b = dataset
    scene = SceneFolder.open(root / "scene_a")
    assert scene.frames == [f"{i:06d}" for i in range(5)]
    rgb, depth, ids, k, pose = scene.read("000003")
    view = seq_a.views()[3]
    np.testing.assert_array_equal(rgb, view.rgb)
    np.testing.assert_array_equal(depth, view.depth)
    np.testing.assert_array_equal(ids, view.instance_ids)
    np.testing.assert_allclose(k, view.intrinsics)
    np.testing.assert_allclose(pose, view.world_from_camera)
    # millimetre PNG depth comes back in metres to within half a millimetre
    _, depth_b, _, _, _ = SceneFolder.open(root / "scene_b").read("000001")
    np.testing.assert_allclose(depth_b, seq_b.views()[1].depth, atol=5.1e-4)


def test_windows_are_resized_to_the_model_input_with_consistent_geometry(dataset):
    root, seq_a, _ = dataset
    (root / "notes").mkdir()  # a folder that is not a scene must be reported, not silently used
    try:
        with pytest.raises(DatasetError, match="notes"):
            FolderWindowSource(root, H, W)
    finally:
        (root / "notes").rmdir()  # the module's other tests share the folder
    source = FolderWindowSource(root, H, W, min_frames=2, max_frames=4, seed=3)
    assert [s.path.name for s in source.scenes] == ["scene_a", "scene_b"]
    windows = source.batch(step=5, batch_size=3, progress=0.0)
    assert len({w.rgb.shape[0] for w in windows}) == 1 and 2 <= windows[0].rgb.shape[0] <= 4
    again = source.batch(step=5, batch_size=3, progress=0.5)
    assert all(np.array_equal(a.rgb, b.rgb) for a, b in zip(windows, again, strict=True))
    for w in windows:
        assert w.rgb.shape[1:] == (H, W, 3) and w.depth.shape[1:] == (H, W) and w.instance_ids.shape[1:] == (H, W)
    # same scene rendered directly at the model size: halving 168x112 gives the same K and the same IDs
    # under every model pixel centre as a direct render of the scene at 84x56 (both sample pixel centres)
    direct = make_sequence(11, num_steps=5, width=W, height=H, num_objects=5, coverage=0.2)
    win = SceneFolder.open(root / "scene_a").window(["000000", "000004"], (H, W))
    np.testing.assert_allclose(win.intrinsics[0], direct.views()[0].intrinsics, atol=1e-4)
    agree = (win.instance_ids[1] == direct.views()[4].instance_ids).mean()
    assert agree > 0.95
    # ground truth normalisation works on the read window: depth unprojected with the poses is consistent
    truth = normalize_truth(*(torch.from_numpy(x)[None] for x in (win.world_from_camera, win.intrinsics, win.depth)))
    assert truth.valid.all() and torch.isfinite(truth.world_points).all()


def test_missing_camera_file_skips_the_frame_and_bad_json_is_reported(dataset, tmp_path):
    root, seq_a, _ = dataset
    scene_dir = tmp_path / "s"
    export_scene(seq_a.views()[:3], scene_dir)
    (scene_dir / "cam" / "000001.json").unlink()
    assert SceneFolder.open(scene_dir).frames == ["000000", "000002"]
    (scene_dir / "cam" / "000002.json").write_text(json.dumps({"K": [1, 2, 3]}))
    with pytest.raises(DatasetError, match="world_from_camera"):
        SceneFolder.open(scene_dir).read("000002")
    (scene_dir / "depth").rename(scene_dir / "depths")
    with pytest.raises(DatasetError, match="depth"):
        SceneFolder.open(scene_dir)


def test_a_training_step_on_the_folder_lowers_nothing_to_nan(dataset, tmp_path):
    root, _, _ = dataset
    torch.manual_seed(0)
    source = FolderWindowSource(root, H, W, min_frames=2, max_frames=2)
    trainer = Trainer(Iggt(IggtModelConfig.tiny()), source, TrainConfig(steps=1, checkpoint_every=1), tmp_path / "run")
    before = [p.detach().clone() for p in trainer.model.parameters()]
    terms = trainer.train_step(TrainBatch.stack(source.batch(0, 1, 0.0)))
    assert all(np.isfinite(v) for v in terms.values())
    changed = sum(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters(), strict=True))
    assert changed > 0.9 * len(before)
