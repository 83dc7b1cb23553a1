"""TensorRT plan cache keys and the refusal of plans built for another GPU or TensorRT version.

This is the pure logic around the TensorRT engine; it needs neither CUDA nor TensorRT.
"""

from __future__ import annotations

import dataclasses

import pytest

from iggt_ros.engine import plan_cache as pc
from iggt_ros.engine.base import EngineError

ORIN = pc.DeviceInfo("Orin", "8.7", "10.3.0")
SHAPE = pc.PlanShape((336, 504), pc.static_profiles([8, 4, 8]))


def test_static_profiles_and_profile_choice():
    assert SHAPE.profiles == ((4, 4, 4), (8, 8, 8))
    ranged = pc.PlanShape((336, 504), pc.check_profiles([(1, 4, 12), (8, 8, 8)]))
    assert ranged.profile_for(8) == 1  # the exact static profile wins over the range
    assert ranged.profile_for(5) == 0
    assert ranged.profile_for(13) is None and not ranged.accepts(13)
    with pytest.raises(ValueError, match="min <= opt <= max"):
        pc.check_profiles([(4, 2, 8)])
    with pytest.raises(ValueError):
        pc.static_profiles([])


@pytest.mark.parametrize(
    "change",
    [
        {"model_hash": "other"},
        {"shape": pc.PlanShape((392, 504), SHAPE.profiles)},
        {"shape": pc.PlanShape((336, 504), pc.static_profiles([8]))},
        {"precision": "fp32"},
        {"device": dataclasses.replace(ORIN, gpu_name="RTX 4090")},
        {"device": dataclasses.replace(ORIN, compute_capability="8.9")},
        {"device": dataclasses.replace(ORIN, tensorrt_version="10.7.0")},
    ],
)
def test_every_ingredient_changes_the_key(change):
    base = {"model_hash": "abc", "shape": SHAPE, "precision": "fp16", "device": ORIN}
    assert pc.plan_cache_key(**base) == pc.plan_cache_key(**base)
    assert pc.plan_cache_key(**{**base, **change}) != pc.plan_cache_key(**base)


def _write_plan(cache_dir, device: pc.DeviceInfo) -> pc.PlanMetadata:
    meta = pc.PlanMetadata("abc", SHAPE.input_size, SHAPE.profiles, "fp16", device.gpu_name,
                           device.compute_capability, device.tensorrt_version)
    path = pc.plan_path(cache_dir, meta.cache_key)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"plan")
    meta.write(path)
    return meta


def test_metadata_round_trip_and_lookup(tmp_path):
    meta = _write_plan(tmp_path, ORIN)
    path = pc.find_plan(tmp_path, "abc", SHAPE, "fp16", ORIN)
    assert path == pc.plan_path(tmp_path, meta.cache_key) and path.parent.name.startswith("trt-")
    assert pc.PlanMetadata.read(path) == meta
    assert pc.find_plan(tmp_path, "abc", SHAPE, "fp32", ORIN) is None  # other precision: simply absent


@pytest.mark.parametrize(
    ("here", "says"),
    [
        (dataclasses.replace(ORIN, tensorrt_version="10.7.0"), "TensorRT 10.3.0 built it, this is TensorRT 10.7.0"),
        (pc.DeviceInfo("NVIDIA GeForce RTX 4090", "8.9", "10.3.0"), "compute capability 8.7, this GPU is 8.9"),
    ],
)
def test_plan_from_another_gpu_or_tensorrt_is_refused(tmp_path, here, says):
    meta = _write_plan(tmp_path, ORIN)
    path = pc.plan_path(tmp_path, meta.cache_key)
    with pytest.raises(EngineError, match="iggt-ros export") as err:
        pc.check_plan_compatible(pc.PlanMetadata.read(path), here, path)
    assert says in str(err.value)
    # The cache lookup explains the near miss instead of answering "not found".
    with pytest.raises(EngineError, match="cannot run here"):
        pc.find_plan(tmp_path, "abc", SHAPE, "fp16", here)


def test_plan_without_metadata_is_refused(tmp_path):
    plan = tmp_path / "engine.plan"
    plan.write_bytes(b"plan")
    with pytest.raises(EngineError, match="no metadata file"):
        pc.PlanMetadata.read(plan)


def test_onnx_key_depends_on_weights_and_size():
    assert pc.onnx_cache_key("a", (336, 504)) != pc.onnx_cache_key("a", (392, 504))
    assert pc.onnx_cache_key("a", (336, 504)) != pc.onnx_cache_key("b", (336, 504))


def test_fp16_selection_keeps_norms_rope_and_heads_in_fp32():
    from iggt_ros.engine.mixed_precision import fp16_nodes
    from iggt_ros.engine.tensorrt_build import DEFAULT_FP32_LAYER_TYPES, DEFAULT_FP32_PATTERNS, keeps_fp32

    nodes = [
        ("aggregator.frame_blocks.0.attn.qkv/node_MatMul_1", "MatMul"),  # 0: fp16
        ("aggregator.frame_blocks.0.norm1/node_layer_norm_3", "LayerNormalization"),
        ("aggregator.frame_blocks.0.attn.q_norm/node_MatMul_9", "MatMul"),  # a norm's arithmetic stays fp32
        ("aggregator.frame_blocks.0.attn/rope/node_Mul_4", "Mul"),
        ("aggregator.patch_embed.patch_embed.proj/node_conv", "Conv"),  # 4: fp16
        ("depth_head.scratch.output_conv1/node_conv_2", "Conv"),
        ("camera_head.trunk.0.mlp.fc1/node_MatMul_7", "MatMul"),
        ("part_head.window_cross_attention/node_MatMul_8", "MatMul"),
    ]
    assert fp16_nodes(nodes, DEFAULT_FP32_PATTERNS) == [0, 4]
    pinned = [keeps_fp32(name, "X", DEFAULT_FP32_PATTERNS, DEFAULT_FP32_LAYER_TYPES) for name, _ in nodes]
    assert pinned == [False, True, True, True, False, True, True, True]
    assert not keeps_fp32("aggregator.frame_blocks.0.norm1/shape", "SHAPE", DEFAULT_FP32_PATTERNS, ())
