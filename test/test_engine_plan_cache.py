"""TensorRT plan cache keys and the refusal of plans built for another GPU or TensorRT version.

This is the pure logic around the TensorRT engine; it needs neither CUDA nor TensorRT.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from iggt_ros.engine import plan_cache as pc
from iggt_ros.engine.base import EngineError
from iggt_ros.engine.tensorrt_build import BuildSettings

ORIN = pc.DeviceInfo("Orin", "8.7", "10.3.0", sm_count=8, memory_gib=15)
AGX = pc.DeviceInfo("Orin", "8.7", "10.3.0", sm_count=16, memory_gib=61)
SHAPE = pc.PlanShape((336, 504), pc.static_profiles([8, 4, 8]))
BUILD = BuildSettings(profiles=SHAPE.profiles).key_fields()


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
        {"device": dataclasses.replace(ORIN, gpu_name="RTX 4090")},
        {"device": dataclasses.replace(ORIN, compute_capability="8.9")},
        {"device": dataclasses.replace(ORIN, tensorrt_version="10.7.0")},
        {"device": dataclasses.replace(ORIN, sm_count=16)},
        {"device": dataclasses.replace(ORIN, memory_gib=7)},
        {"package_version": "0.0.9"},
    ],
)
def test_every_ingredient_changes_the_key(change):
    base = {"model_hash": "abc", "shape": SHAPE, "build": BUILD, "device": ORIN}
    assert pc.plan_cache_key(**base) == pc.plan_cache_key(**base)
    assert pc.plan_cache_key(**{**base, **change}) != pc.plan_cache_key(**base)


@pytest.mark.parametrize(
    "setting",
    [
        {"precision": "fp32"},
        {"precision": "bf16"},
        {"typing": "weak"},
        {"fp32_patterns": ("norm",)},
        {"fp32_layer_types": ("NORMALIZATION", "SOFTMAX")},
        {"workspace_bytes": 1 << 30},
        {"optimization_level": 5},
        {"max_aux_streams": None},
        {"tf32": True},
        {"profiling_verbosity": "detailed"},
    ],
)
def test_every_build_setting_changes_the_key(setting):
    changed = dataclasses.replace(BuildSettings(profiles=SHAPE.profiles), **setting)
    changed.validate()
    assert changed.key_fields() != BUILD
    assert pc.plan_cache_key("abc", SHAPE, changed.key_fields(), ORIN) != pc.plan_cache_key("abc", SHAPE, BUILD, ORIN)
    # The timing cache file only speeds the build up: it is not part of the key.
    timed = dataclasses.replace(BuildSettings(profiles=SHAPE.profiles), timing_cache="/tmp/x.cache")
    assert timed.key_fields() == BUILD


def _write_plan(cache_dir, device: pc.DeviceInfo, build=BUILD) -> pc.PlanMetadata:
    meta = pc.PlanMetadata("abc", SHAPE.input_size, SHAPE.profiles, dict(build), device)
    path = pc.plan_path(cache_dir, meta.cache_key)
    pc.write_plan_files(path, b"plan", meta)
    return meta


def test_metadata_round_trip_and_lookup(tmp_path):
    meta = _write_plan(tmp_path, ORIN)
    path = pc.find_plan(tmp_path, "abc", SHAPE, BUILD, ORIN)
    assert path == pc.plan_path(tmp_path, meta.cache_key) and path.parent.name.startswith("trt-")
    assert pc.PlanMetadata.read(path) == meta
    fp32 = BuildSettings(profiles=SHAPE.profiles, precision="fp32").key_fields()
    assert pc.find_plan(tmp_path, "abc", SHAPE, fp32, ORIN) is None  # other precision: simply absent
    assert not list(path.parent.glob(".*partial*")) and not list(path.parent.glob("*.tmp"))


@pytest.mark.parametrize(
    ("here", "says"),
    [
        (dataclasses.replace(ORIN, tensorrt_version="10.7.0"), "TensorRT 10.3.0 built it, this is TensorRT 10.7.0"),
        (pc.DeviceInfo("NVIDIA GeForce RTX 4090", "8.9", "10.3.0", 128, 24), "compute capability 8.7, this GPU is 8.9"),
        # Every Orin module is "Orin", sm 8.7: an AGX plan must not pass on an Orin NX.
        (AGX, "16 SMs and 61 GiB"),
    ],
)
def test_plan_from_another_gpu_or_tensorrt_is_refused(tmp_path, here, says):
    meta = _write_plan(tmp_path, ORIN)
    path = pc.plan_path(tmp_path, meta.cache_key)
    with pytest.raises(EngineError, match="iggt-ros build-engine") as err:
        pc.check_plan_compatible(pc.PlanMetadata.read(path), here, path)
    assert says in str(err.value)
    # The cache lookup explains the near miss instead of answering "not found".
    with pytest.raises(EngineError, match="cannot run here"):
        pc.find_plan(tmp_path, "abc", SHAPE, BUILD, here)


def test_lookup_falls_back_to_a_plan_built_here_with_other_settings(tmp_path):
    small = BuildSettings(profiles=SHAPE.profiles, workspace_bytes=1 << 30).key_fields()
    meta = _write_plan(tmp_path, ORIN, build=small)
    assert pc.plan_cache_key("abc", SHAPE, small, ORIN) != pc.plan_cache_key("abc", SHAPE, BUILD, ORIN)
    assert pc.find_plan(tmp_path, "abc", SHAPE, BUILD, ORIN) == pc.plan_path(tmp_path, meta.cache_key)
    # ... but never one of another GPU module: the near miss is explained.
    with pytest.raises(EngineError, match="16 SMs"):
        pc.find_plan(tmp_path, "abc", SHAPE, BUILD, AGX)


def test_plan_of_another_package_version_is_refused(tmp_path):
    meta = pc.PlanMetadata("abc", SHAPE.input_size, SHAPE.profiles, dict(BUILD), ORIN, package_version="0.0.1")
    plan = tmp_path / "engine.plan"
    pc.write_plan_files(plan, b"plan", meta)
    with pytest.raises(EngineError, match="iggt_ros 0.0.1 built it"):
        pc.check_plan_compatible(pc.PlanMetadata.read(plan), ORIN, plan)


def test_plan_without_metadata_is_refused(tmp_path):
    plan = tmp_path / "engine.plan"
    plan.write_bytes(b"plan")
    with pytest.raises(EngineError, match="no metadata file"):
        pc.PlanMetadata.read(plan)


def test_onnx_key_depends_on_weights_size_frames_and_package_version():
    base = pc.onnx_cache_key("a", (336, 504))
    assert base == pc.onnx_cache_key("a", (336, 504), max_frames=pc.DEFAULT_MAX_FRAMES)
    assert base != pc.onnx_cache_key("a", (392, 504))
    assert base != pc.onnx_cache_key("b", (336, 504))
    assert base != pc.onnx_cache_key("a", (336, 504), max_frames=8)
    assert base != pc.onnx_cache_key("a", (336, 504), package_version="0.0.9")


def test_timing_cache_is_per_gpu_and_tensorrt_version(tmp_path):
    paths = {pc.timing_cache_path(tmp_path, d) for d in
             (ORIN, AGX, dataclasses.replace(ORIN, tensorrt_version="10.7.0"))}
    assert len(paths) == 3 and all(p.parent == tmp_path for p in paths)


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
    # The attention softmax is not pinned by type: TensorRT may fuse matmul-softmax-matmul.
    assert not keeps_fp32("aggregator.frame_blocks.0.attn/node_Softmax_3", "SOFTMAX", DEFAULT_FP32_PATTERNS,
                          DEFAULT_FP32_LAYER_TYPES)


# ---------------------------------------------------------------------------------------------
# Writing the cache: one producer per entry, atomic publication
# ---------------------------------------------------------------------------------------------
CHILD = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from iggt_ros.engine import plan_cache as pc

    target, events, name = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]

    def wait_for(path):
        deadline = time.monotonic() + 120
        while not path.exists():
            if time.monotonic() > deadline:
                raise SystemExit(f"{name}: gave up waiting for {path}")
            time.sleep(0.01)

    def build(folder):
        (events / f"{name}.building").touch()
        wait_for(events / "release")  # the test decides when the build is done
        meta = pc.PlanMetadata("abc", (336, 504), ((8, 8, 8),), {"precision": "fp16"},
                               pc.DeviceInfo("Orin", "8.7", "10.3.0", 8, 15))
        pc.write_plan_files(folder / target.name, f"plan by {name}".encode(), meta)

    done = pc.produce_once(target, build, on_wait=lambda: (events / f"{name}.waiting").touch())
    print(json.dumps({"built": done.built, "waited": done.waited, "plan": target.read_text()}))
""")


def _wait_for(path: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


def test_two_processes_building_the_same_plan_build_it_once(tmp_path):
    target = pc.plan_path(tmp_path / "cache", "k")
    events = tmp_path / "events"
    events.mkdir()

    def start(name):
        return subprocess.Popen([sys.executable, "-c", CHILD, str(target), str(events), name],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy())

    first = start("first")
    _wait_for(events / "first.building", first)  # holds the entry's lock, build in progress
    second = start("second")
    _wait_for(events / "second.waiting", second)  # found the lock taken: waits instead of building
    assert not target.exists()  # nothing is published while the build runs
    (events / "release").touch()
    results = {}
    for name, proc in (("first", first), ("second", second)):
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results[name] = json.loads(out)
    assert results["first"] == {"built": True, "waited": False, "plan": "plan by first"}
    assert results["second"] == {"built": False, "waited": True, "plan": "plan by first"}
    assert not (events / "second.building").exists()  # the second process never built
    meta = pc.PlanMetadata.read(target)
    assert meta.device.sm_count == 8
    leftovers = [p.name for p in target.parent.iterdir() if p.name not in ("engine.plan", "engine.plan.json")]
    assert leftovers == [pc.lock_path(target).name]


def test_publication_puts_metadata_first_and_the_plan_last(tmp_path, monkeypatch):
    target = tmp_path / "trt-k" / pc.PLAN_NAME
    moved = []
    real_replace = os.replace

    def recording_replace(src, dst):
        if Path(dst).parent == target.parent:  # publication into the entry (not writes inside the temp folder)
            moved.append(Path(dst).name)
        real_replace(src, dst)

    monkeypatch.setattr(pc.os, "replace", recording_replace)
    meta = pc.PlanMetadata("abc", SHAPE.input_size, SHAPE.profiles, dict(BUILD), ORIN)

    def build(folder):
        pc.write_plan_files(folder / target.name, b"plan", meta)
        (folder / "engine.plan.parity.json").write_text("{}")

    assert pc.produce_once(target, build).built
    published = moved
    assert published[-1] == "engine.plan" and set(published[:-1]) == {"engine.plan.json", "engine.plan.parity.json"}
    assert pc.produce_once(target, build).built is False  # there now: reused
    assert pc.produce_once(target, build, rebuild=True).built is True


def test_a_failed_build_publishes_nothing_and_releases_the_lock(tmp_path):
    target = tmp_path / "trt-k" / pc.PLAN_NAME

    def failing(folder):
        (folder / "engine.plan.json").write_text("{}")
        raise RuntimeError("builder ran out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        pc.produce_once(target, failing)
    assert sorted(p.name for p in target.parent.iterdir()) == [pc.lock_path(target).name]
    meta = pc.PlanMetadata("abc", SHAPE.input_size, SHAPE.profiles, dict(BUILD), ORIN)
    assert pc.produce_once(target, lambda folder: pc.write_plan_files(folder / target.name, b"p", meta)).built


# ---------------------------------------------------------------------------------------------
# A plan given by engine.engine_path is checked against the configuration before anything loads
# ---------------------------------------------------------------------------------------------
def _plan_fixture(tmp_path, profiles=((4, 4, 4),), size=(336, 504)) -> Path:
    plan = tmp_path / "engine.plan"
    meta = pc.PlanMetadata("abc", size, profiles, dict(BUILD), ORIN)
    pc.write_plan_files(plan, b"not a real plan", meta)
    return plan


@pytest.mark.parametrize(
    ("window_sizes", "input_size", "says"),
    [
        ((8,), (336, 504), "window size S=8 is configured"),
        ((4, 6), (336, 504), "window size S=6 is configured"),
        ((4,), (392, 504), "input 392x504"),
    ],
)
def test_engine_path_plan_not_matching_the_configuration_is_refused_at_configure(tmp_path, monkeypatch,
                                                                                  window_sizes, input_size, says):
    from iggt_ros.config import EngineConfig
    from iggt_ros.engine.factory import create_engine

    monkeypatch.setitem(sys.modules, "tensorrt", None)  # the refusal must come before TensorRT is needed
    plan = _plan_fixture(tmp_path)
    config = EngineConfig(backend="tensorrt", engine_path=str(plan), device="cuda", precision="fp16")
    with pytest.raises(EngineError, match=re.escape("accepts 336x504, S in {4}")) as err:
        create_engine(config, input_size=input_size, window_sizes=window_sizes)
    assert says in str(err.value) and "iggt-ros build-engine" in str(err.value)


def test_engine_path_plan_matching_the_configuration_goes_on_to_load(tmp_path, monkeypatch):
    from iggt_ros.config import EngineConfig
    from iggt_ros.engine.factory import create_engine

    monkeypatch.setitem(sys.modules, "tensorrt", None)
    plan = _plan_fixture(tmp_path, profiles=((4, 4, 4), (8, 8, 8)))
    config = EngineConfig(backend="tensorrt", engine_path=str(plan), device="cuda", precision="fp16")
    # The shapes fit, so the next step -- TensorRT itself -- is reached (and is missing here).
    with pytest.raises(EngineError, match="needs the tensorrt Python package"):
        create_engine(config, input_size=(336, 504), window_sizes=(4, 8))


def test_plans_are_built_for_the_largest_window_the_model_accepts():
    from iggt_ros.limits import MAX_VIEWS

    assert pc.DEFAULT_MAX_FRAMES == MAX_VIEWS
