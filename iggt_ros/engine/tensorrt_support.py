"""The one place that imports TensorRT, and the TensorRT versions this package accepts.

Plans are built with the TensorRT 10 API (strongly typed networks, `set_input_shape`,
`execute_async_v3`, always-explicit batch). TensorRT 8.6 -- what JetPack 6.0 ships -- lacks some of
it and reads `create_network(0)` as an implicit-batch network the ONNX parser rejects, so it would
fail halfway through a long build with an AttributeError. It is refused up front instead, with the
JetPack release that brings a usable TensorRT.
"""

from __future__ import annotations

import re

from iggt_ros.engine.base import EngineError

MIN_TENSORRT = (10, 0)
JETPACK_ADVICE = ("on a Jetson Orin, flash JetPack 6.1 or 6.2 (TensorRT 10.3; JetPack 6.0 ships TensorRT 8.6); "
                  "on a workstation, pip install 'tensorrt>=10'")
INSTALL_ADVICE = ("on a Jetson Orin, use JetPack 6.1/6.2's TensorRT bindings (apt package python3-libnvinfer) from "
                  "a virtual environment created with --system-site-packages; on an x86 or SBSA workstation, "
                  "pip install 'iggt_ros[tensorrt]'")


def parse_version(version: str) -> tuple[int, ...]:
    """Leading numeric fields of a version string ('10.3.0.30' -> (10, 3, 0, 30)); () when it has none."""
    match = re.match(r"\d+(\.\d+)*", str(version).strip())
    return tuple(int(x) for x in match.group(0).split(".")) if match else ()


def check_tensorrt_version(version: str) -> None:
    """EngineError unless `version` is TensorRT 10 or newer, naming the JetPack release that brings it."""
    parsed = parse_version(version)
    if not parsed or parsed[: len(MIN_TENSORRT)] < MIN_TENSORRT:
        raise EngineError(f"TensorRT {version} is too old: iggt_ros builds and runs plans with TensorRT "
                          f"{'.'.join(map(str, MIN_TENSORRT))} or newer; {JETPACK_ADVICE}")


def import_tensorrt():
    """The tensorrt module, checked to be new enough; EngineError saying how to install it otherwise."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise EngineError(f"the tensorrt backend needs the tensorrt Python package: {INSTALL_ADVICE}") from exc
    check_tensorrt_version(getattr(trt, "__version__", "unknown"))
    return trt
