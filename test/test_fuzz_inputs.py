"""Structure-aware fuzzing of everything that reads outside data: bags, CDR, images, camera_info, TF, stamps.

Each target takes what a sensor, a driver or a damaged file can send and must end in a result or a
clear refusal (one of the exception types the package documents for bad input), within a time limit.
Anything else, or running past the limit, is a finding. Inputs are built by hypothesis from the
structure of the messages (encodings, sizes, steps, stamps, NaN and infinities, frame names) and by
mutating a committed seed corpus (`test/fuzz_corpus`: valid CDR messages, PNG and JPEG images and a
small bag) byte by byte.

CI runs a bounded budget (`FUZZ_EXAMPLES` examples per target); `benchmarks/fuzz.py` runs the same
targets at scale and writes benchmarks/results/fuzz.{md,json}.
"""

from __future__ import annotations

import io
import math
import os
import signal
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iggt_ros.bag.reader import BagError, BagReader, decode_message
from iggt_ros.bag.typestore import typestore
from iggt_ros.messages.images import IMAGE_ENCODINGS, compressed_to_rgb, image_to_rgb, intrinsics_of
from iggt_ros.messages.tf_buffer import TransformBuffer, TransformError
from iggt_ros.perception.frames import MissingFrame
from iggt_ros.perception.input_checks import StampGuard
from iggt_ros.ros.camera_input import CameraInputs, NumpyImageDecoder

CORPUS = Path(__file__).parent / "fuzz_corpus"
FUZZ_EXAMPLES = int(os.environ.get("IGGT_FUZZ_EXAMPLES", "60"))
CASE_LIMIT_S = 10.0
"""Per case, generous for a loaded CI machine; the benchmark uses a tighter one."""

REFUSALS: tuple[type[BaseException], ...] = (ValueError, TransformError, BagError)
"""The clear refusals: `UnsupportedEncoding`, `CorruptMessage`, `InvalidTransform` and the decoders' own
`ValueError`s are ValueErrors with a message that names the input; TF lookups raise `TransformError`."""


class Hang(Exception):
    """A case ran past its time limit."""


@contextmanager
def time_limit(seconds: float):
    """Interrupt the case with `Hang` after `seconds` (main thread, POSIX timers)."""
    def expire(_signum, _frame):
        raise Hang(f"ran past {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@dataclass
class Outcome:
    kind: str
    """'result', 'refusal', 'uncaught' or 'hang'."""
    detail: str = ""
    seconds: float = 0.0


def run_case(target: Callable[[Any], object], case: Any, limit_s: float = CASE_LIMIT_S) -> Outcome:
    """One case of one target, classified."""
    t = time.perf_counter()
    try:
        with time_limit(limit_s):
            target(case)
        kind, detail = "result", ""
    except Hang as exc:
        kind, detail = "hang", str(exc)
    except REFUSALS as exc:
        kind, detail = "refusal", f"{type(exc).__name__}: {exc}"
        if not str(exc).strip():
            kind, detail = "uncaught", f"{type(exc).__name__} without a message"
    except Exception as exc:  # a finding: an exception the package does not document for bad input
        kind, detail = "uncaught", f"{type(exc).__name__}: {exc}"
    return Outcome(kind, detail, time.perf_counter() - t)


# ---------------------------------------------------------------------------------------------- corpus
def corpus_files() -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(CORPUS.iterdir()) if p.is_file()}


def write_corpus(directory: Path) -> None:
    """The seed corpus (committed; this regenerates it): valid messages as CDR, images, a small bag."""
    from PIL import Image

    from iggt_ros.bag.convert import to_rosbags
    from iggt_ros.bag.sample import SampleBagSpec, write_sample_bag
    from iggt_ros.messages import layouts as L
    from iggt_ros.messages.message import Header

    directory.mkdir(parents=True, exist_ok=True)
    store = typestore()
    rgb = (np.arange(12 * 8 * 3) % 251).astype(np.uint8).reshape(8, 12, 3)
    header = Header(1_700_000_000_100_000_000, "cam_optical")
    k = np.array([[20.0, 0, 6], [0, 20.0, 4], [0, 0, 1]])
    pose = np.eye(4)
    pose[:3, 3] = (1.0, 2.0, 0.5)
    messages = {
        "image_rgb8.cdr": L.rgb_image(header, rgb),
        "camera_info.cdr": L.camera_info(header, k, 12, 8),
        "tf.cdr": L.tf_message([L.TransformData("odom", "base_link", header.stamp_ns, pose)]),
    }
    for name, data in messages.items():
        (directory / name).write_bytes(bytes(store.serialize_cdr(to_rosbags(data, store), data.typename)))
    for fmt, name in (("PNG", "image.png"), ("JPEG", "image.jpg")):
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format=fmt)
        (directory / name).write_bytes(buf.getvalue())
    with tempfile.TemporaryDirectory() as tmp:
        write_sample_bag(Path(tmp) / "bag", SampleBagSpec(seed=0, frames=2, width=28, height=28))
        (mcap,) = (Path(tmp) / "bag").glob("*.mcap")
        (directory / "bag.mcap").write_bytes(mcap.read_bytes())
        meta = (Path(tmp) / "bag" / "metadata.yaml").read_text().replace(mcap.name, "bag_0.mcap")
        (directory / "metadata.yaml").write_text(meta)


CDR_TYPES = {"image_rgb8.cdr": "sensor_msgs/msg/Image", "camera_info.cdr": "sensor_msgs/msg/CameraInfo",
             "tf.cdr": "tf2_msgs/msg/TFMessage"}


# ---------------------------------------------------------------------------------------------- strategies
def mutated(data: bytes) -> st.SearchStrategy[bytes]:
    """Byte-level mutations of a seed: flips, overwrites, cuts, insertions and duplicated spans."""
    n = len(data)

    @st.composite
    def build(draw) -> bytes:
        out = bytearray(data)
        for _ in range(draw(st.integers(1, 6))):
            op = draw(st.sampled_from(["flip", "set", "cut", "insert", "dup", "zero_run"]))
            if not out:
                out = bytearray(draw(st.binary(max_size=16)))
                continue
            i = draw(st.integers(0, len(out) - 1))
            if op == "flip":
                out[i] ^= 1 << draw(st.integers(0, 7))
            elif op == "set":
                out[i] = draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xFF]))
            elif op == "cut":
                out = out[: i] if draw(st.booleans()) else out[i:]
            elif op == "insert":
                out[i:i] = draw(st.binary(min_size=1, max_size=8))
            elif op == "dup":
                j = draw(st.integers(i, min(len(out), i + 64)))
                out[i:i] = out[i:j]
            else:
                out[i:i + 8] = b"\xff" * min(8, len(out) - i)
        return bytes(out[: 4 * n + 64])

    return build()


FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True, width=64),
                   st.sampled_from([0.0, -0.0, 1.0, -1.0, 1e-300, 1e300, math.nan, math.inf, -math.inf]))
STAMPS = st.one_of(st.integers(-2, 3), st.integers(0, 2**63 - 1),
                   st.integers(1_700_000_000 * 10**9, 1_700_000_100 * 10**9))


@st.composite
def image_messages(draw) -> SimpleNamespace:
    """sensor_msgs/Image: a known or unknown encoding, any size and step, data of a matching length or not."""
    encoding = draw(st.one_of(st.sampled_from(sorted(IMAGE_ENCODINGS)), st.text(max_size=12)))
    width, height = draw(st.integers(0, 40)), draw(st.integers(0, 40))
    if draw(st.integers(0, 30)) == 0:
        width, height = draw(st.sampled_from([(2**31 - 1, 1), (1, 2**31 - 1), (70000, 70000)]))
    kind, channels = IMAGE_ENCODINGS.get(encoding, ("u1", 3))
    row = width * channels * np.dtype(kind).itemsize
    step = draw(st.one_of(st.just(row), st.integers(0, row + 8), st.just(2**32 - 1)))
    size = draw(st.one_of(st.just(step * height), st.integers(0, 4000)))
    size = min(size, 200_000)
    fill = draw(st.sampled_from(["random", "zero", "full"]))
    if fill == "random":
        data = np.frombuffer(draw(st.binary(min_size=min(size, 64), max_size=min(size, 64))) * (size // 64 + 1),
                             np.uint8)[:size] if size else np.zeros(0, np.uint8)
    else:
        data = np.full(size, 0 if fill == "zero" else 255, np.uint8)
    stamp = draw(STAMPS)
    return SimpleNamespace(encoding=encoding, width=width, height=height, step=step, data=data,
                           is_bigendian=draw(st.integers(0, 1)), header=SimpleNamespace(
                               stamp=SimpleNamespace(sec=stamp // 10**9, nanosec=stamp % 10**9), frame_id="cam"))


@st.composite
def compressed_messages(draw) -> SimpleNamespace:
    seeds = corpus_files()
    data = draw(st.one_of(mutated(seeds["image.png"]), mutated(seeds["image.jpg"]), st.binary(max_size=256)))
    return SimpleNamespace(format=draw(st.sampled_from(["png", "jpeg", "rgb8; jpeg compressed bgr8", ""])),
                           data=data, header=SimpleNamespace(stamp=SimpleNamespace(sec=1, nanosec=0), frame_id="c"))


@st.composite
def camera_infos(draw) -> SimpleNamespace:
    k = draw(st.lists(FLOATS, min_size=9, max_size=9))
    if draw(st.booleans()):  # near a real calibration, with one field broken
        k = [20.0, 0.0, 6.0, 0.0, 20.0, 4.0, 0.0, 0.0, 1.0]
        k[draw(st.integers(0, 8))] = draw(FLOATS)
    return SimpleNamespace(k=k, width=draw(st.integers(0, 5000)), height=draw(st.integers(0, 5000)),
                           header=SimpleNamespace(stamp=SimpleNamespace(sec=draw(st.integers(0, 2**31 - 1)),
                                                                        nanosec=0), frame_id="cam"))


FRAMES = st.sampled_from(["odom", "base_link", "cam", "", "/odom", "map", "cam/", " "])


@st.composite
def tf_cases(draw) -> tuple[list[SimpleNamespace], list[tuple[str, str, int]]]:
    messages = []
    for _ in range(draw(st.integers(1, 6))):
        transforms = []
        for _ in range(draw(st.integers(0, 4))):
            stamp = draw(STAMPS)
            transforms.append(SimpleNamespace(
                header=SimpleNamespace(frame_id=draw(FRAMES), stamp=SimpleNamespace(sec=stamp // 10**9,
                                                                                     nanosec=stamp % 10**9)),
                child_frame_id=draw(FRAMES),
                transform=SimpleNamespace(
                    translation=SimpleNamespace(x=draw(FLOATS), y=draw(FLOATS), z=draw(FLOATS)),
                    rotation=SimpleNamespace(x=draw(FLOATS), y=draw(FLOATS), z=draw(FLOATS), w=draw(FLOATS)))))
        messages.append((SimpleNamespace(transforms=transforms), draw(st.booleans())))
    lookups = draw(st.lists(st.tuples(FRAMES, FRAMES, STAMPS), max_size=6))
    return messages, lookups


# ---------------------------------------------------------------------------------------------- targets
def target_cdr(case: tuple[str, bytes]) -> None:
    """A bag message's bytes, damaged: decoded, or refused as `CorruptMessage`."""
    msgtype, raw = case
    msg = decode_message(typestore(), raw, msgtype, "/fuzz")  # or CorruptMessage, a refusal
    # a message that decodes goes on to its consumer, which must take it or refuse it as well
    if msgtype.endswith("/Image"):
        target_image(msg)
    elif msgtype.endswith("/CameraInfo"):
        target_camera_info(msg)
    else:
        TransformBuffer().add_message(msg)


def target_image(msg: Any) -> None:
    """An image message: the node's whole input path takes it or drops it (never raises), and the decoder's
    result is [H,W,3] uint8 of the declared size, or its refusal."""
    inputs = CameraInputs(["cam"], NumpyImageDecoder(), lambda text: None)
    for frame in inputs.frames("cam", msg, "/fuzz/image_raw"):  # used, or dropped and counted (its place kept)
        assert isinstance(frame, MissingFrame) or (frame.image.shape[0] > 0 and frame.image.shape[1] > 0)
    rgb = image_to_rgb(msg, "/fuzz/image_raw")  # or UnsupportedEncoding / ValueError, a refusal
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3, rgb.shape
    assert rgb.shape[:2] == (int(msg.height), int(msg.width))


def target_compressed(msg: Any) -> None:
    rgb = compressed_to_rgb(msg, "/fuzz/image_raw/compressed")
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3


def target_camera_info(msg: Any) -> None:
    inputs = CameraInputs(["cam"], NumpyImageDecoder(), lambda text: None)
    inputs.set_camera_info("cam", msg, "/fuzz/camera_info")  # never raises
    held = inputs.camera_info("cam")
    if held is not None:
        assert np.all(np.isfinite(held.intrinsics)) and held.intrinsics[0, 0] > 0 and held.intrinsics[1, 1] > 0
    k = intrinsics_of(msg)  # the refusal itself, for the record
    assert np.all(np.isfinite(k))


def target_tf(case: tuple[list, list]) -> None:
    messages, lookups = case
    buffer = TransformBuffer(tolerance_s=0.01)
    for msg, static in messages:
        buffer.add_message(msg, static=static, on_invalid=lambda exc, stamp: None)  # never raises
    for target, source, stamp in lookups:
        try:
            pose = buffer.lookup(target, source, stamp)
        except TransformError:
            continue
        assert pose.shape == (4, 4) and np.all(np.isfinite(pose)), pose


def target_stamps(stamps: list[int]) -> None:
    """The stamp rule loses nothing silently: every message is used once or reported once."""
    guard: StampGuard[int] = StampGuard()
    used, reported = [], 0
    for i, stamp in enumerate(stamps):
        admitted = guard.admit("/fuzz", stamp, i)
        used.extend(admitted.items)
        reported += len(admitted.problems)
        assert all(p.text and "/fuzz" in p.text for p in admitted.problems)
    reported += len(guard.flush())
    assert len(used) == len(set(used)) and len(used) + reported == len(stamps)
    assert all(stamps[i] > 0 for i in used)


def target_bag(case: tuple[bool, bytes]) -> None:
    """A damaged .mcap file, alone (the reader's own scanner) or in a rosbag2 directory with its metadata.yaml
    (rosbags' reader): its intact part is read, or it is refused as a `BagError`."""
    with_metadata, data = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bag_0.mcap"
        path.write_bytes(data)
        if with_metadata:
            (Path(tmp) / "metadata.yaml").write_bytes(corpus_files()["metadata.yaml"])
            path = Path(tmp)
        with BagReader(path) as reader:  # or BagError, a refusal
            for _ in reader:
                pass


TARGETS: dict[str, tuple[Callable[[Any], object], Callable[[], st.SearchStrategy]]] = {
    "cdr": (target_cdr, lambda: st.sampled_from(sorted(CDR_TYPES)).flatmap(
        lambda name: st.tuples(st.just(CDR_TYPES[name]), mutated(corpus_files()[name])))),
    "image": (target_image, image_messages),
    "compressed": (target_compressed, compressed_messages),
    "camera_info": (target_camera_info, camera_infos),
    "tf": (target_tf, tf_cases),
    "stamps": (target_stamps, lambda: st.lists(st.one_of(STAMPS, st.integers(1, 40).map(lambda i: i * 10**8)),
                                               max_size=40)),
    "bag": (target_bag, lambda: st.tuples(st.booleans(), mutated(corpus_files()["bag.mcap"]))),
}


# ---------------------------------------------------------------------------------------------- CI budget
def test_seed_corpus_is_valid_input():
    """Each seed is a valid input of its target (so mutations start from the real structure)."""
    seeds = corpus_files()
    assert set(CDR_TYPES) | {"image.png", "image.jpg", "bag.mcap", "metadata.yaml"} <= set(seeds)
    for name, msgtype in CDR_TYPES.items():
        assert run_case(target_cdr, (msgtype, seeds[name])).kind == "result"
    png = SimpleNamespace(format="png", data=seeds["image.png"])
    assert compressed_to_rgb(png).shape == (8, 12, 3)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "b.mcap").write_bytes(seeds["bag.mcap"])
        with BagReader(Path(tmp) / "b.mcap") as reader:
            assert reader.cameras == ["front"] and sum(1 for _ in reader) >= 2
    assert run_case(target_bag, (True, seeds["bag.mcap"])).kind == "result"


def test_harness_tells_findings_from_refusals():
    def crash(_):
        raise KeyError("x")

    def slow(_):
        time.sleep(5)

    assert run_case(crash, None).kind == "uncaught"
    assert run_case(slow, None, limit_s=0.2).kind == "hang"
    assert run_case(lambda _: intrinsics_of(SimpleNamespace(k=[0] * 9, header=SimpleNamespace(frame_id="c"))),
                    None).kind == "refusal"


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_fuzz_target_within_budget(name):
    target, strategy = TARGETS[name]

    @settings(max_examples=FUZZ_EXAMPLES if name != "bag" else max(10, FUZZ_EXAMPLES // 4), deadline=None,
              database=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(strategy())
    def check(case):
        outcome = run_case(target, case)
        assert outcome.kind in ("result", "refusal"), f"{name}: {outcome.kind}: {outcome.detail}"

    check()
