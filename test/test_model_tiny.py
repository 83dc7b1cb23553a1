"""The embedded `tiny` configuration: size budget, output contract, and trainability."""

from __future__ import annotations

import pytest
import torch

from iggt_ros.model import OUTPUT_KEYS, Iggt, IggtModelConfig


@pytest.fixture(scope="module")
def tiny() -> Iggt:
    torch.manual_seed(0)
    return Iggt(IggtModelConfig.tiny())


def test_tiny_is_small_and_has_no_dead_parameter_groups(tiny):
    assert sum(p.numel() for p in tiny.parameters()) <= 5_000_000
    keys = tiny.state_dict().keys()
    assert not [k for k in keys if k.startswith(("track_head.", "part_head.cross_attention_1.", "part_head.projects."))]


def test_output_contract(tiny):
    tiny.eval()
    images = torch.rand(2, 3, 56, 84)  # [S, 3, H, W]: a batch axis is added
    with torch.no_grad():
        out = tiny(images)
    assert set(OUTPUT_KEYS) <= set(out)
    assert len(out["pose_enc"]) == tiny.config.camera_iterations
    assert out["pose_enc"][-1].shape == (1, 2, 9)
    assert out["depth"].shape == (1, 2, 56, 84, 1) and bool((out["depth"] > 0).all())
    assert out["depth_conf"].shape == (1, 2, 56, 84) and bool((out["depth_conf"] >= 1).all())
    assert out["world_points"].shape == (1, 2, 56, 84, 3)
    assert out["part_feat"].shape == (1, 2, 8, 56, 84)
    assert bool((out["pose_enc"][-1][..., 7:] >= 0).all())  # field of view goes through ReLU


def test_input_size_must_be_a_multiple_of_28(tiny):
    with pytest.raises(ValueError, match="multiples of 28"):
        tiny(torch.rand(1, 3, 56, 70))


def test_every_parameter_receives_a_gradient(tiny):
    tiny.train()
    out = tiny(torch.rand(1, 2, 3, 56, 56))
    loss = sum(p.square().mean() for p in out["pose_enc"])
    loss = loss + sum(out[k].mean() for k in OUTPUT_KEYS[1:])
    tiny.zero_grad()
    loss.backward()
    unwired = [n for n, p in tiny.named_parameters() if p.requires_grad and p.grad is None]
    assert unwired == [], "every parameter must be connected to the outputs"
    # A channel-attention squeeze of very few units can start with its ReLU inactive on every input;
    # that branch is scaled by 0.01 and gated, so only it may see an all-zero gradient at initialisation.
    silent = [n for n, p in tiny.named_parameters() if p.requires_grad and not p.grad.any()]
    assert all(".cab.3.attention." in n for n in silent), silent
    tiny.eval()


@pytest.mark.parametrize("preset", ["tiny_fine", "tiny_fine_image", "tiny_wide_image"])
def test_finer_token_grid_designs_keep_the_output_contract(preset):
    torch.manual_seed(0)
    config = getattr(IggtModelConfig, preset)()
    model = Iggt(config).eval()
    assert config.size_multiple == 28 and sum(p.numel() for p in model.parameters()) <= 5_000_000
    with torch.no_grad():
        out = model(torch.rand(3, 3, 84, 140))
    assert out["part_feat"].shape == (1, 3, 8, 84, 140)
    assert out["depth"].shape == (1, 3, 84, 140, 1) and bool((out["depth"] > 0).all())
    assert hasattr(model.part_head, "image_branch") == preset.endswith("_image")
    with pytest.raises(ValueError, match="multiples of 28"):
        model(torch.rand(1, 3, 56, 70))


def test_image_branch_moves_instance_features_at_pixels_a_token_cannot_resolve():
    """With the full-resolution branch, changing one pixel changes the instance features right there."""
    torch.manual_seed(0)
    model = Iggt(IggtModelConfig.tiny_fine_image()).eval()
    images = torch.rand(1, 2, 3, 56, 84)
    changed = images.clone()
    changed[0, 0, :, 30, 40] = 1.0 - changed[0, 0, :, 30, 40]
    with torch.no_grad():
        a, b = model(images)["part_feat"], model(changed)["part_feat"]
    diff = (a - b).abs()[0, 0].sum(0)
    assert diff[30, 40] > 0
    assert diff[30, 40] >= diff[28:33, 38:43].max() * 0.5  # the strongest change sits at the changed pixel


def test_configurations_without_the_new_fields_build_the_released_layout():
    data = IggtModelConfig.tiny().to_dict()
    del data["dense_scales"], data["image_features"]
    config = IggtModelConfig.from_dict(data)
    assert config.dense_scales == (4.0, 2.0, 1.0, 0.5) and config.image_features == 0
    with pytest.raises(ValueError, match="halving factors"):
        IggtModelConfig.from_dict({**data, "dense_scales": [4, 1, 1, 0.5]})


def test_warm_start_across_patch_sizes_keeps_what_a_token_sees():
    """A 7-px kernel from a 14-px one responds to a patch as the old kernel did to that patch enlarged 2x."""
    from iggt_ros.model.transfer import transfer_weights

    torch.manual_seed(0)
    coarse, fine = Iggt(IggtModelConfig.tiny()), Iggt(IggtModelConfig.tiny_fine_image())
    report = transfer_weights(fine, coarse.state_dict())
    assert len(report.converted) == 2 and len(report.copied) > 600
    assert all(("resize_layers" in n or "image_branch" in n) for n in report.kept), report.kept
    block = "aggregator.frame_blocks.3.attn.qkv.weight"
    assert torch.equal(fine.state_dict()[block], coarse.state_dict()[block])
    patch = torch.rand(1, 3, 7, 7)
    enlarged = patch.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    old = coarse.aggregator.patch_embed.patch_embed.proj
    new = fine.aggregator.patch_embed.patch_embed.proj
    assert torch.allclose(new(patch), old(enlarged), atol=1e-5)
