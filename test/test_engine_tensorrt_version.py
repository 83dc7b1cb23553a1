"""TensorRT older than 10 is refused up front with the JetPack release to install.

No TensorRT here: the tests stand in a bare module object whose only attribute is the version, the
one thing the check reads, so every entry point (build, engine, device probe) is exercised for real.
"""

from __future__ import annotations

import sys
import types

import pytest

from iggt_ros.engine import plan_cache as pc
from iggt_ros.engine.base import EngineError
from iggt_ros.engine.tensorrt_support import check_tensorrt_version, parse_version


def fake_tensorrt(monkeypatch, version: str) -> None:
    module = types.ModuleType("tensorrt")
    module.__version__ = version
    monkeypatch.setitem(sys.modules, "tensorrt", module)


def test_version_parsing():
    assert parse_version("10.3.0.30") == (10, 3, 0, 30)
    assert parse_version("8.6.2") == (8, 6, 2)
    assert parse_version("unknown") == ()


@pytest.mark.parametrize("version", ["8.6.2", "8.6.2.3", "9.3.0", "unknown"])
def test_old_tensorrt_is_refused_naming_jetpack(version):
    with pytest.raises(EngineError, match="JetPack 6.1 or 6.2") as err:
        check_tensorrt_version(version)
    assert f"TensorRT {version} is too old" in str(err.value)


@pytest.mark.parametrize("version", ["10.0.1", "10.3.0.30", "10.13.2", "11.0.0"])
def test_tensorrt_10_and_newer_pass(version):
    check_tensorrt_version(version)


def test_build_refuses_jetpack_6_0_tensorrt_before_any_work(monkeypatch, tmp_path):
    from iggt_ros.engine.tensorrt_build import BuildSettings, build_plan

    fake_tensorrt(monkeypatch, "8.6.2")
    with pytest.raises(EngineError, match=r"TensorRT 8\.6\.2 is too old.*JetPack 6\.1 or 6\.2"):
        build_plan(tmp_path / "model.onnx", tmp_path / "engine.plan", BuildSettings(), "sha")
    assert not (tmp_path / "engine.plan").exists()


def test_device_probe_and_engine_refuse_old_tensorrt(monkeypatch, tmp_path):
    from iggt_ros.engine.tensorrt_engine import TensorRTEngine

    fake_tensorrt(monkeypatch, "8.6.2")
    with pytest.raises(EngineError, match="JetPack 6.1 or 6.2"):
        pc.DeviceInfo.current("cuda")
    plan = tmp_path / "engine.plan"
    plan.write_bytes(b"plan")
    pc.PlanMetadata("sha", (336, 504), ((8, 8, 8),), {"precision": "fp16"},
                    pc.DeviceInfo("Orin", "8.7", "8.6.2", 8, 15)).write(plan)
    with pytest.raises(EngineError, match="JetPack 6.1 or 6.2"):
        TensorRTEngine(plan, "cuda")


def test_missing_tensorrt_says_how_to_get_it_on_a_jetson(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(EngineError, match="--system-site-packages"):
        pc.DeviceInfo.current("cuda")
