"""Checkpoint reading, checking, conversion and our own safetensors format."""

from __future__ import annotations

import argparse

import pytest
import torch

from iggt_ros.model import Iggt, IggtModelConfig
from iggt_ros.model import checkpoint as ckpt
from iggt_ros.model.checkpoint import CheckpointError, load_model, load_weights, save_model


@pytest.fixture(scope="module")
def model() -> Iggt:
    torch.manual_seed(0)
    return Iggt(IggtModelConfig.tiny()).eval()


def fresh_state(model: Iggt) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_missing_keys_are_named_and_refused(model):
    state = fresh_state(model)
    dropped = ["camera_head.pose_branch.fc2.weight", "part_head.scratch.output_conv2.2.bias"]
    for key in dropped:
        del state[key]
    target = Iggt(model.config)
    before = fresh_state(target)
    with pytest.raises(CheckpointError) as err:
        load_weights(target, state)
    message = str(err.value)
    assert "2 missing from the checkpoint" in message
    for key in dropped:
        assert key in message
    assert "allow_partial=True" in message
    # The refused call loaded nothing.
    for key, value in target.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_partial_load_only_when_asked(model):
    state = fresh_state(model)
    del state["camera_head.pose_branch.fc2.weight"]
    target = Iggt(model.config)
    report = load_weights(target, state, allow_partial=True)
    assert report.missing == ["camera_head.pose_branch.fc2.weight"]
    assert not report.complete
    assert torch.equal(target.aggregator.camera_token, model.aggregator.camera_token)


def test_shape_mismatch_and_unexpected_keys_are_named(model):
    state = fresh_state(model)
    state["depth_head.projects.0.weight"] = torch.zeros(7, 128, 1, 1)
    state["point_head.some_new_layer.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError) as err:
        load_weights(Iggt(model.config), state)
    message = str(err.value)
    expected = tuple(model.state_dict()["depth_head.projects.0.weight"].shape)
    assert f"depth_head.projects.0.weight (7, 128, 1, 1) vs {expected}" in message
    assert "1 unexpected in the checkpoint: point_head.some_new_layer.weight" in message


def test_long_key_lists_are_truncated_with_a_count(model):
    state = {k: v for k, v in fresh_state(model).items() if not k.startswith("aggregator.frame_blocks.")}
    with pytest.raises(CheckpointError) as err:
        load_weights(Iggt(model.config), state)
    missing = [k for k in model.state_dict() if k.startswith("aggregator.frame_blocks.")]
    assert f"{len(missing)} missing from the checkpoint" in str(err.value)
    assert f"and {len(missing) - 20} more" in str(err.value)


def test_known_unused_groups_may_be_absent_on_either_side(model):
    state = fresh_state(model)
    # Official checkpoints carry groups the tiny model omits.
    state["track_head.tracker.query_ref_token"] = torch.zeros(1, 2, 388)
    state["part_head.cross_attention_1.proj.weight"] = torch.zeros(32, 32)
    state["part_head.projects.0.weight"] = torch.zeros(256, 128, 1, 1)
    state["aggregator.patch_embed.mask_token"] = torch.zeros(1, 64)
    target = Iggt(model.config)
    report = load_weights(target, state)
    assert report.complete
    assert len(report.ignored) == 4
    assert_same_weights(target, model)


def test_module_prefix_and_wrappers_in_torch_files(model, tmp_path):
    wrapped = {"model": {f"module.{k}": v for k, v in model.state_dict().items()}, "epoch": 3}
    torch.save(wrapped, tmp_path / "ddp.pt")
    torch.save({"state_dict": model.state_dict()}, tmp_path / "plain.pth")
    for name in ("ddp.pt", "plain.pth"):
        target = Iggt(model.config)
        assert load_weights(target, tmp_path / name).complete
        assert_same_weights(target, model)
    assert ckpt.strip_module_prefix({"module.a.module.b": 1}) == {"a.module.b": 1}


def test_unreadable_inputs_raise_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        ckpt.read_state_dict(tmp_path / "nope.pt")
    (tmp_path / "weights.npz").write_bytes(b"")
    with pytest.raises(CheckpointError, match="unsupported checkpoint type"):
        ckpt.read_state_dict(tmp_path / "weights.npz")
    torch.save({"epoch": 3}, tmp_path / "meta.pt")
    with pytest.raises(CheckpointError, match="does not hold a state dict"):
        ckpt.read_state_dict(tmp_path / "meta.pt")


def test_own_format_round_trip_rebuilds_the_model(model, tmp_path):
    path = save_model(model, tmp_path / "tiny.safetensors")
    loaded, config = load_model(path)
    assert config == model.config
    assert_same_weights(loaded, model)
    images = torch.rand(1, 3, 56, 84)
    with torch.no_grad():
        a, b = model(images), loaded(images)
    for key in ("depth", "world_points", "part_feat"):
        assert torch.equal(a[key], b[key])


def test_fp16_shipping_keeps_integer_buffers(model, tmp_path):
    from safetensors.torch import load_file

    path = save_model(model, tmp_path / "tiny_fp16.safetensors", dtype=torch.float16)
    raw = load_file(str(path))
    assert raw["depth_head.norm.weight"].dtype == torch.float16
    assert raw["part_head.window_cross_attention.relative_position_index_OCA"].dtype == torch.int64
    assert raw["part_adaptor.resize_layers.0.1.input_proj.1.num_batches_tracked"].dtype == torch.int64
    loaded, _ = load_model(path)
    assert loaded.depth_head.norm.weight.dtype == torch.float32
    torch.testing.assert_close(loaded.depth_head.norm.weight, model.depth_head.norm.weight.half().float())
    assert path.stat().st_size < 0.6 * save_model(model, tmp_path / "fp32.safetensors").stat().st_size


def test_files_without_a_config_need_one(model, tmp_path):
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "bare.safetensors"))
    with pytest.raises(CheckpointError, match="no model configuration"):
        load_model(tmp_path / "bare.safetensors")
    loaded, _ = load_model(tmp_path / "bare.safetensors", config=IggtModelConfig.tiny())
    assert_same_weights(loaded, model)


def test_convert_command(model, tmp_path, capsys):
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, tmp_path / "release.pt")
    parser = argparse.ArgumentParser()
    ckpt.add_arguments(parser)
    out = tmp_path / "converted.safetensors"
    assert ckpt.run(parser.parse_args([str(tmp_path / "release.pt"), str(out), "--config", "tiny"])) == 0
    loaded, config = load_model(out)
    assert config == IggtModelConfig.tiny()
    assert_same_weights(loaded, model)
    # The same file does not fit the parity-fixture sizes: refused with the offending keys.
    bad = tmp_path / "bad.safetensors"
    assert ckpt.run(parser.parse_args([str(tmp_path / "release.pt"), str(bad), "--config", "parity"])) == 1
    assert "shape mismatch" in capsys.readouterr().err and not bad.exists()


def test_config_json_round_trip(tmp_path):
    for config in (IggtModelConfig.official(), IggtModelConfig.parity_fixture(), IggtModelConfig.tiny()):
        assert IggtModelConfig.from_json(config.to_json()) == config
    path = tmp_path / "c.json"
    IggtModelConfig.tiny().to_json(path)
    assert IggtModelConfig.from_json(path) == IggtModelConfig.tiny()
    with pytest.raises(ValueError, match="unknown IggtModelConfig fields"):
        IggtModelConfig.from_dict({"embed_dims": 3})
