"""TorchEngine and create_engine: weights resolution, clear errors, outputs equal to the model's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from iggt_ros.config import EngineConfig
from iggt_ros.engine import weights as engine_weights
from iggt_ros.engine.base import EngineError
from iggt_ros.engine.factory import create_engine
from iggt_ros.engine.preprocess import to_model_input
from iggt_ros.engine.torch_engine import TorchEngine
from iggt_ros.model import Iggt, IggtModelConfig
from iggt_ros.model.checkpoint import save_model, save_state_dict
from iggt_ros.model.geometry import pose_encoding_to_extri_intri

SIZE = (56, 84)


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    torch.manual_seed(0)
    model = Iggt(IggtModelConfig.tiny()).eval()
    return save_model(model, tmp_path_factory.mktemp("w") / "tiny.safetensors"), model


def _images(v: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (v, *SIZE, 3), dtype=np.uint8)


def test_torch_engine_equals_the_model(tiny_weights):
    path, model = tiny_weights
    engine = create_engine(EngineConfig(backend="torch", checkpoint=str(path)), input_size=SIZE)
    assert isinstance(engine, TorchEngine) and engine.input_size == SIZE
    images = _images(3)
    pred = engine.infer(images)
    with torch.no_grad():
        out = model(torch.from_numpy(to_model_input(images)))
    np.testing.assert_allclose(pred.depth, out["depth"][0, ..., 0].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pred.instance_features, out["part_feat"][0].permute(0, 2, 3, 1).numpy(),
                               rtol=1e-5, atol=1e-6)
    extrinsics, intrinsics = pose_encoding_to_extri_intri(out["pose_enc"][-1][0], SIZE)
    np.testing.assert_allclose(pred.extrinsics, extrinsics.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pred.intrinsics, intrinsics.numpy(), rtol=1e-5)
    np.testing.assert_array_equal(pred.images, images)
    assert set(pred.timings_ms) >= {"model", "decode"}


def test_torch_engine_bf16_runs_the_backbone_in_bf16(tiny_weights):
    path, _ = tiny_weights
    fp32 = TorchEngine.from_checkpoint(path, input_size=SIZE)
    bf16 = TorchEngine.from_checkpoint(path, input_size=SIZE, precision="bf16")
    images = _images(2, seed=1)
    a, b = fp32.infer(images), bf16.infer(images)
    assert b.engine == "torch-bf16"
    assert b.depth.dtype == np.float32 and np.isfinite(b.depth).all()
    assert not np.array_equal(a.depth, b.depth)  # autocast really changed the backbone's arithmetic


def test_torch_engine_refuses_wrong_input(tiny_weights):
    path, _ = tiny_weights
    engine = TorchEngine.from_checkpoint(path, input_size=SIZE)
    with pytest.raises(EngineError, match="preprocess_images"):
        engine.infer(np.zeros((2, 28, 28, 3), np.uint8))
    with pytest.raises(EngineError, match="multiples of 28"):
        TorchEngine.from_checkpoint(path, input_size=(50, 84))


def test_missing_checkpoint_names_the_config_key(tmp_path):
    with pytest.raises(EngineError, match="engine.checkpoint") as err:
        create_engine(EngineConfig(checkpoint=str(tmp_path / "nope.safetensors")))
    assert "nope.safetensors" in str(err.value)


def test_missing_embedded_weights_say_how_to_pass_a_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setattr(engine_weights, "EMBEDDED_WEIGHTS", tmp_path / "tiny_iggt.safetensors")
    with pytest.raises(EngineError, match="embedded model weights are missing.*engine.checkpoint"):
        create_engine(EngineConfig())


def test_partial_checkpoint_is_refused_naming_keys(tiny_weights, tmp_path):
    _, model = tiny_weights
    state = dict(model.state_dict())
    del state["camera_head.pose_branch.fc2.weight"]
    state["not_a_model_key"] = torch.zeros(3)
    path = save_state_dict(state, tmp_path / "partial.safetensors", model.config)
    with pytest.raises(EngineError) as err:
        create_engine(EngineConfig(checkpoint=str(path)), input_size=SIZE)
    message = str(err.value)
    assert "camera_head.pose_branch.fc2.weight" in message and "not_a_model_key" in message
    assert "engine.allow_partial_checkpoint" in message
    engine = create_engine(EngineConfig(checkpoint=str(path), allow_partial_checkpoint=True), input_size=SIZE)
    assert engine.infer(_images(1)).num_views == 1


def test_checkpoint_without_config_uses_engine_model(tiny_weights, tmp_path):
    _, model = tiny_weights
    path = save_state_dict(model.state_dict(), tmp_path / "bare.safetensors")  # no configuration stored
    with pytest.raises(EngineError, match="does not fit"):
        create_engine(EngineConfig(checkpoint=str(path), model="official"), input_size=SIZE)
    assert create_engine(EngineConfig(checkpoint=str(path), model="tiny"), input_size=SIZE).input_size == SIZE


def test_factory_errors_for_oracle_bad_device_and_precision(tiny_weights):
    path, _ = tiny_weights
    with pytest.raises(EngineError, match="oracle"):
        create_engine(EngineConfig(backend="oracle"))
    with pytest.raises(EngineError, match="engine.device"):
        create_engine(EngineConfig(checkpoint=str(path), device="gpu"))
    with pytest.raises(EngineError, match="onnxruntime"):
        create_engine(EngineConfig(backend="onnxruntime", precision="fp16", checkpoint=str(path)))
