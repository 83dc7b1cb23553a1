"""Reading camera bags (rosbag2, mcap or sqlite3) into decoded, time-ordered events.

`BagReader` is an iterator of plain dataclasses, not a pipeline: camera images decoded to RGB
with their intrinsics (and pose, when TF gives one), ground-truth images and objects in the
convention of `iggt_ros.bag.sample`, and time jumps. The replay combines it with the perception
core's synchroniser and pipeline, exactly as the node does with live topics.

Bad input never crashes the iteration; it is reported (logged as a warning and collected in
`BagReader.report`) and the reader goes on or stops cleanly:
- no camera topics: `BagError` when the reader is created, listing the topics the bag has;
- a damaged bag (cut short, missing its index or metadata.yaml): the intact messages are read and
  iteration stops where the damage starts, with `report.truncated` set;
- an unsupported image encoding: warned once per topic and encoding, each such message skipped;
- no camera_info yet for a camera, or camera_info for another image size: the core's rule
  (`iggt_ros.perception.camera_frames`, the node's too): frames without intrinsics until one
  arrives, K scaled to the image; warned once per camera;
- the bad-input rules of the core (`iggt_ros.perception.input_checks`, the node's too): a zero,
  repeated or out-of-sequence stamp, an empty, black, saturated or constant image, a non-finite
  transform or calibration: that message alone is skipped (counted in `report.skipped` by reason)
  and said once per topic, naming the topic and the stamp;
- header stamps going backwards on a camera and staying there (a looped bag): a `TimeJump` event,
  and the TF buffer forgets its dynamic transforms so old and new loops do not mix.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.rosbag2 import Reader

from iggt_ros.bag.mcap_scan import McapScan
from iggt_ros.bag.typestore import typestore
from iggt_ros.messages import convention as C
from iggt_ros.messages.images import UnsupportedEncoding, compressed_to_rgb, image_to_array, image_to_rgb, intrinsics_of
from iggt_ros.messages.layouts import read_instances
from iggt_ros.messages.message import stamp_ns
from iggt_ros.messages.tf_buffer import InvalidTransform, TransformBuffer, TransformError
from iggt_ros.perception.camera_frames import CameraCalibration, camera_frame
from iggt_ros.perception.frames import CameraFrame, MissingFrame
from iggt_ros.perception.input_checks import InputProblem, StampGuard, image_problem, problem
from iggt_ros.perception.records import InstanceRecord
from iggt_ros.perception.warn_once import WarnOnce
from iggt_ros.spatial import transform_from

log = logging.getLogger("iggt_ros.bag.reader")


class BagError(RuntimeError):
    """The bag cannot be used at all (missing, unreadable, or without camera topics)."""


class CorruptMessage(ValueError):
    """The bytes of one message do not decode as its type."""


def decode_message(store: Any, raw: bytes, msgtype: str, topic: str = "") -> Any:
    """One CDR message of a bag, or `CorruptMessage` naming the topic and type; never another exception.

    rosbags raises whatever its parser meets on damaged bytes (struct errors, index errors, bad UTF-8,
    a sequence length larger than the data): all of them mean the same thing to a reader.
    """
    try:
        return store.deserialize_cdr(raw, msgtype)
    except Exception as exc:  # every parser error of damaged bytes
        where = f" on {topic}" if topic else ""
        raise CorruptMessage(f"cannot decode a {msgtype} message{where} ({len(raw)} bytes): "
                             f"{type(exc).__name__}: {exc}") from exc


@dataclass
class CameraImage:
    """One decoded camera image with what the perception core needs alongside it."""

    camera: str
    topic: str
    stamp_ns: int
    """Header stamp."""
    record_ns: int
    """Time the bag recorded the message at."""
    frame_id: str
    rgb: np.ndarray
    """[H,W,3] uint8."""
    intrinsics: np.ndarray | None
    """[3,3] K from the latest camera_info, scaled to this image's size if the two differ; None before the first
    camera_info (the engine's predicted intrinsics are used, as on the node)."""
    world_from_camera: np.ndarray | None = None
    """[4,4] pose of `frame_id` in the reader's world frame from TF at `stamp_ns`, None when TF lacks it."""

    def to_frame(self) -> CameraFrame:
        return CameraFrame(camera=self.camera, stamp_ns=self.stamp_ns, image=self.rgb, intrinsics=self.intrinsics,
                           frame_id=self.frame_id, world_from_camera=self.world_from_camera)


@dataclass
class MissingImage:
    """A camera's image at `stamp_ns` was bad and dropped (said and counted in `ReadReport`).

    Given to the synchroniser in its place (`to_frame`), so the other cameras' images of that time step
    are used without it. For a message dropped for its stamp, `stamp_ns` is where the camera's period
    places it (`input_checks.StampGuard`)."""

    camera: str
    stamp_ns: int
    record_ns: int

    def to_frame(self) -> MissingFrame:
        return MissingFrame(self.camera, self.stamp_ns)


@dataclass
class GroundTruthImage:
    """A ground-truth image of one camera: `kind` 'instances' ([H,W] uint16) or 'depth' ([H,W] float32 m)."""

    camera: str
    kind: str
    stamp_ns: int
    frame_id: str
    array: np.ndarray


@dataclass
class GroundTruthObjects:
    """The true objects of the scene at one time step (/gt/objects)."""

    stamp_ns: int
    frame_id: str
    instances: list[InstanceRecord]


@dataclass
class TimeJump:
    """Header stamps of `topic` went backwards, from `from_ns` to `to_ns` (the bag looped or was spliced)."""

    topic: str
    from_ns: int
    to_ns: int


@dataclass
class StaticTransforms:
    """A /tf_static message (its usable transforms), so a replay can copy the camera mounts to its output."""

    record_ns: int
    transforms: list[tuple[str, str, int, np.ndarray]]
    """(parent, child, stamp_ns, parent_from_child [4,4]) of every finite transform of the message."""


BagEvent = CameraImage | MissingImage | GroundTruthImage | GroundTruthObjects | TimeJump | StaticTransforms


@dataclass
class ReadReport:
    """What reading a bag gave: counts, skips by reason, warnings and whether the bag was cut short."""

    messages: int = 0
    images: int = 0
    images_without_pose: int = 0
    images_without_camera_info: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    flagged: dict[str, int] = field(default_factory=dict)
    """Messages used with a warning (an image far larger than the model input, a non-finite pose), by reason."""
    warnings: list[str] = field(default_factory=list)
    truncated: bool = False
    time_jumps: list[TimeJump] = field(default_factory=list)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


@dataclass
class _Camera:
    name: str
    image_topic: str
    compressed: bool
    info_topic: str
    calibration: CameraCalibration | None = None


# order of messages that share a record time: transforms and calibration before the images they serve
_PRIORITY = {C.TF_STATIC_TOPIC: 0, C.TF_TOPIC: 1}


class BagReader:
    """Iterate the camera images, TF and ground truth of a rosbag2 in time order.

    path: a rosbag2 directory, or an .mcap file (also one whose recording was never closed).
    cameras: camera names to read (`<name>/image_raw` or `<name>/image_raw/compressed`); default:
    every topic ending in /image_raw. world_frame: the frame of `CameraImage.world_from_camera`.
    """

    def __init__(self, path: str | Path, cameras: Sequence[str] | None = None, world_frame: str = C.WORLD_FRAME,
                 read_ground_truth: bool = True, tf_tolerance_s: float = 0.0,
                 model_hw: tuple[int, int] = (336, 504)) -> None:
        self.path = Path(path)
        self.world_frame = world_frame
        self.model_hw = model_hw
        self.report = ReadReport()
        self.tf = TransformBuffer(tolerance_s=tf_tolerance_s)
        self._stamps: StampGuard[tuple[Any, int]] = StampGuard()
        self._tf_since_hold: list[tuple[Any, bool, str]] = []
        self._store = typestore()
        self._warn_once = WarnOnce(self._collect_warning)
        self._source = _open_source(self.path, self._warn)
        self.topics: dict[str, str] = self._source.topics()
        self._cameras = self._find_cameras(cameras)
        self.ground_truth_topics: dict[str, tuple[str, str]] = {}
        if read_ground_truth:
            for cam in self._cameras.values():
                gt_topics = (("instances", C.gt_instances_topic(cam.name)), ("depth", C.gt_depth_topic(cam.name)))
                for kind, topic in gt_topics:
                    if topic in self.topics:
                        self.ground_truth_topics[topic] = (cam.name, kind)
            if C.GT_OBJECTS_TOPIC in self.topics:
                self.ground_truth_topics[C.GT_OBJECTS_TOPIC] = ("", "objects")
        self._has_tf = C.TF_TOPIC in self.topics or C.TF_STATIC_TOPIC in self.topics
        if not self._has_tf:
            self._warn(("no-tf",), f"bag {self.path} has no /tf or /tf_static: camera images will have no pose")
        for cam in self._cameras.values():
            if cam.info_topic not in self.topics:
                self._warn(("no-info-topic", cam.name), f"bag {self.path} has no {cam.info_topic}: frames of camera "
                           f"'{cam.name}' are used with the intrinsics the model predicts")

    # ---------------------------------------------------------------------------------------------

    @property
    def cameras(self) -> list[str]:
        return list(self._cameras)

    @property
    def has_ground_truth(self) -> bool:
        return bool(self.ground_truth_topics)

    def __enter__(self) -> BagReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._source.close()

    def __iter__(self) -> Iterator[BagEvent]:
        wanted = {C.TF_TOPIC, C.TF_STATIC_TOPIC, *self.ground_truth_topics}
        for cam in self._cameras.values():
            wanted.update((cam.image_topic, cam.info_topic))
        group: list[tuple[str, str, int, bytes]] = []
        for item in self._source.messages(wanted, self._damaged):
            if group and item[2] != group[0][2]:
                yield from self._handle_group(group)
                group = []
            group.append(item)
        yield from self._handle_group(group)
        for p in self._stamps.flush():  # a last message out of sequence that nothing followed
            self._problem(p)

    # ---------------------------------------------------------------------------------------------

    def _find_cameras(self, names: Sequence[str] | None) -> dict[str, _Camera]:
        found: dict[str, _Camera] = {}
        if names:
            for name in names:
                raw, comp = C.image_topic(name), C.compressed_topic(name)
                topic = raw if raw in self.topics else comp if comp in self.topics else None
                if topic is None:
                    raise BagError(f"bag {self.path} has no topic {raw} or {comp} for camera '{name}'; "
                                   f"camera topics in the bag: {self._camera_topics() or 'none'}")
                found[name] = _Camera(name, topic, topic == comp, C.camera_info_topic(name))
        else:
            for topic in sorted(self.topics):
                name = C.camera_of_topic(topic)
                if name is None or name in found:
                    continue
                raw = C.image_topic(name)
                topic = raw if raw in self.topics else topic  # a raw topic wins over its compressed twin
                found[name] = _Camera(name, topic, topic.endswith(C.COMPRESSED_SUFFIX), C.camera_info_topic(name))
        if not found:
            listing = "\n  ".join(f"{t} ({m})" for t, m in sorted(self.topics.items())) or "(no topics)"
            raise BagError(f"bag {self.path} has no camera topics: no topic ends in /image_raw or "
                           f"/image_raw/compressed. Topics in the bag:\n  {listing}")
        for cam in found.values():
            expected = C.COMPRESSED_TYPE if cam.compressed else C.IMAGE_TYPE
            if self.topics[cam.image_topic] != expected:
                raise BagError(f"topic {cam.image_topic} carries {self.topics[cam.image_topic]}, expected {expected}")
        return found

    def _camera_topics(self) -> str:
        return ", ".join(t for t in sorted(self.topics) if C.camera_of_topic(t))

    def _warn(self, key: tuple[str, ...], text: str) -> None:
        """Said once per key: logged and collected in the report."""
        self._warn_once("\x1f".join(key), text)

    def _collect_warning(self, text: str) -> None:
        self.report.warnings.append(text)
        log.warning(text)

    def _damaged(self, reason: str) -> None:
        self.report.truncated = True
        self._warn(("damaged",), f"bag {self.path} is damaged ({reason}); stopped after "
                   f"{self.report.messages} intact messages")

    def _problem(self, item: InputProblem) -> None:
        """One bad input: said once per (kind, topic), counted by kind (skipped, or flagged when used)."""
        self._warn((item.kind, item.topic), item.text)
        counts = self.report.skipped if item.dropped else self.report.flagged
        counts[item.kind] = counts.get(item.kind, 0) + 1

    def _handle_group(self, group: list[tuple[str, str, int, bytes]]) -> Iterator[BagEvent]:
        """Messages recorded at one time: transforms, then calibration, then images, then ground truth."""
        cameras_by_info = {c.info_topic: c for c in self._cameras.values()}
        cameras_by_image = {c.image_topic: c for c in self._cameras.values()}
        decoded = []
        for topic, msgtype, record_ns, raw in group:
            self.report.messages += 1
            try:
                decoded.append((topic, record_ns, decode_message(self._store, raw, msgtype, topic)))
            except CorruptMessage as exc:  # corrupt bytes of one message: skip it, keep reading
                self._warn(("corrupt", topic), f"{exc}; skipped")
                self.report.skip("corrupt message")
        # the stamp rule first: a confirmed jump back in time clears the dynamic transforms before this time
        # step's TF goes in; a message held for confirmation waits, the others of this time step go on
        # (camera, message, record time), or (camera, None, stamp) where a capture was lost for its stamp
        released: list[tuple[_Camera, Any, int]] = []
        current: list[tuple[_Camera, Any, int]] = []
        jumped = False
        for topic, record_ns, msg in decoded:
            if topic not in cameras_by_image:
                continue
            cam = cameras_by_image[topic]
            try:
                stamp = stamp_ns(msg.header.stamp)
            except Exception as exc:  # a header a fuzzer or a broken writer made: not an image to use
                self._problem(problem("bad header", topic, 0, f"unreadable header ({exc})", "Check the recording"))
                continue
            admitted = self._stamps.admit(topic, stamp, (msg, record_ns))
            for p in admitted.problems:
                self._problem(p)
            if admitted.jump_from_ns is not None:
                jump = TimeJump(topic, admitted.jump_from_ns, admitted.jump_to_ns)
                self.report.time_jumps.append(jump)
                log.warning("time went backwards on %s from %.3f s to %.3f s and went on from there (the bag loops?); "
                            "clearing dynamic transforms", topic, jump.from_ns / 1e9, jump.to_ns / 1e9)
                jumped = True
                yield jump
            released.extend((cam, None, lost) for lost in admitted.missing_ns)
            for item_msg, item_record in admitted.items:
                (current if item_msg is msg else released).append((cam, item_msg, item_record))
        if jumped:
            self.tf.clear()
            for msg, static, topic in self._tf_since_hold:  # the new sequence's transforms, received while held
                self._add_tf(msg, static, topic)
        if not self._stamps.holding():
            self._tf_since_hold = []
        decoded.sort(key=lambda m: _PRIORITY.get(m[0], 2 if m[0] in cameras_by_info
                                                 else 4 if m[0] in self.ground_truth_topics else 3))
        images_done = False
        for topic, record_ns, msg in decoded:
            if topic in (C.TF_TOPIC, C.TF_STATIC_TOPIC):
                static = topic == C.TF_STATIC_TOPIC
                self._add_tf(msg, static, topic)
                if self._stamps.holding():
                    self._tf_since_hold.append((msg, static, topic))
                if static:
                    transforms = _finite_transforms(msg)
                    if transforms:
                        yield StaticTransforms(record_ns, transforms)
            elif topic in cameras_by_info:
                cam = cameras_by_info[topic]
                try:
                    cam.calibration = CameraCalibration(intrinsics_of(msg), int(msg.width), int(msg.height),
                                                        str(msg.header.frame_id))
                except (ValueError, TypeError, AttributeError) as exc:
                    self._problem(problem("bad camera_info", topic, _stamp_or_zero(msg), str(exc),
                                          "The previous calibration of this camera stays in use"))
            elif topic in cameras_by_image:
                if images_done:
                    continue
                images_done = True  # held images first (older), then this time step's, in record order
                for cam, item_msg, item_record in released + current:
                    if item_msg is None:  # a capture lost for its stamp, placed by the camera's period
                        yield MissingImage(cam.name, item_record, record_ns)
                        continue
                    image = self._camera_image(cam, item_msg, item_record)
                    yield image if image is not None else MissingImage(cam.name, _stamp_or_zero(item_msg),
                                                                        item_record)
            elif topic in self.ground_truth_topics:
                try:
                    truth = self._ground_truth(topic, msg)
                except (ValueError, TypeError, AttributeError) as exc:
                    self._problem(problem("bad ground truth", topic, _stamp_or_zero(msg), str(exc),
                                          "The evaluation goes on without this message"))
                    continue
                yield truth

    def _add_tf(self, msg: Any, static: bool, topic: str) -> None:
        def invalid(exc: InvalidTransform, stamp: int) -> None:
            self._problem(problem("bad transform", topic, stamp, str(exc),
                                  "Check the node publishing this transform; the other transforms are used"))

        self.tf.add_message(msg, static=static, on_invalid=invalid)

    def _camera_image(self, cam: _Camera, msg: Any, record_ns: int) -> CameraImage | None:
        stamp = stamp_ns(msg.header.stamp)
        try:
            rgb = compressed_to_rgb(msg, cam.image_topic) if cam.compressed else image_to_rgb(msg, cam.image_topic)
        except UnsupportedEncoding as exc:
            fmt = str(msg.format if cam.compressed else msg.encoding)
            self._warn(("encoding", cam.image_topic, fmt), f"{exc}; skipping these messages")
            self.report.skip("unsupported encoding")
            return None
        except (ValueError, OSError, SyntaxError, MemoryError) as exc:  # malformed pixels (PIL raises OSError)
            self._problem(problem("malformed image", cam.image_topic, stamp, str(exc),
                                  "The other images of this camera are used"))
            return None
        bad = image_problem(cam.image_topic, stamp, rgb, self.model_hw)
        if bad is not None:
            self._problem(bad)
            if bad.dropped:
                return None
        frame = camera_frame(cam.name, stamp, str(msg.header.frame_id), rgb, cam.calibration,
                             self._pose if self._has_tf else None, lambda key, text: self._warn(("frame", key), text),
                             on_problem=self._problem, topic=cam.image_topic)
        if frame.world_from_camera is None:
            self.report.images_without_pose += 1
        if frame.intrinsics is None:
            self.report.images_without_camera_info += 1
        self.report.images += 1
        return CameraImage(cam.name, cam.image_topic, stamp, record_ns, frame.frame_id, rgb, frame.intrinsics,
                           frame.world_from_camera)

    def _pose(self, frame_id: str, stamp: int) -> np.ndarray | None:
        try:
            return self.tf.lookup(self.world_frame, frame_id, stamp)
        except TransformError as exc:
            self._warn(("no-pose", frame_id), f"no pose for frame '{frame_id}' at {stamp / 1e9:.3f} s: {exc}")
            return None

    def _ground_truth(self, topic: str, msg: Any) -> GroundTruthImage | GroundTruthObjects:
        camera, kind = self.ground_truth_topics[topic]
        if kind == "objects":
            return GroundTruthObjects(stamp_ns(msg.header.stamp), str(msg.header.frame_id), read_instances(msg))
        return GroundTruthImage(camera, kind, stamp_ns(msg.header.stamp), str(msg.header.frame_id),
                                image_to_array(msg, topic))


# -------------------------------------------------------------------------------------------------
# sources: a rosbag2 directory through rosbags, or a damaged MCAP file through the scanner


class _RosbagsSource:
    def __init__(self, reader: Reader) -> None:
        self._reader = reader

    def topics(self) -> dict[str, str]:
        return {c.topic: c.msgtype for c in self._reader.connections}

    def messages(self, wanted: Iterable[str], damaged: Any) -> Iterator[tuple[str, str, int, bytes]]:
        wanted = set(wanted)
        conns = [c for c in self._reader.connections if c.topic in wanted]
        try:
            for conn, record_ns, raw in self._reader.messages(connections=conns):
                yield conn.topic, conn.msgtype, record_ns, raw
        except Exception as exc:  # any failure of the storage layer mid-bag: keep what was read
            damaged(f"{type(exc).__name__}: {exc}")

    def close(self) -> None:
        self._reader.close()


class _ScanSource:
    def __init__(self, files: list[Path]) -> None:
        self._files = files
        self._topics: dict[str, str] = {}
        for path in files:  # channel records precede their messages: one pass finds the topics
            scan = McapScan(path)
            for _ in scan:
                pass
            self._topics.update(scan.topics)

    def topics(self) -> dict[str, str]:
        return dict(self._topics)

    def messages(self, wanted: Iterable[str], damaged: Any) -> Iterator[tuple[str, str, int, bytes]]:
        wanted = set(wanted)
        for path in self._files:
            scan = McapScan(path)
            for m in scan:
                if m.topic in wanted:
                    yield m.topic, m.msgtype, m.log_time_ns, m.data
            if scan.stopped:
                damaged(f"{path.name}: {scan.stopped}")
                return

    def close(self) -> None:
        pass


def _finite_transforms(msg: Any) -> list[tuple[str, str, int, np.ndarray]]:
    out = []
    for t in msg.transforms:
        tr, rot = t.transform.translation, t.transform.rotation
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            matrix = transform_from((tr.x, tr.y, tr.z), (rot.x, rot.y, rot.z, rot.w))
        parent, child = str(t.header.frame_id).lstrip("/"), str(t.child_frame_id).lstrip("/")
        if parent and child and parent != child and np.all(np.isfinite(matrix)):
            out.append((parent, child, stamp_ns(t.header.stamp), matrix))
    return out


def _stamp_or_zero(msg: Any) -> int:
    try:
        return stamp_ns(msg.header.stamp)
    except Exception:  # a message without a readable header
        return 0


def _open_source(path: Path, warn: Any) -> _RosbagsSource | _ScanSource:
    if not path.exists():
        raise BagError(f"bag {path} does not exist")
    if path.is_file():
        if (path.parent / "metadata.yaml").exists():
            path = path.parent
        elif path.suffix == ".mcap":
            warn(("scan",), f"{path} has no metadata.yaml next to it; reading its messages in file order")
            return _ScanSource([path])
        else:
            raise BagError(f"{path} is not a rosbag2 directory or an .mcap file")
    if not (path / "metadata.yaml").exists():
        mcaps = sorted(path.glob("*.mcap"))
        if mcaps:
            warn(("scan",), f"bag {path} has no metadata.yaml (the recording was not closed?); "
                 "reading the intact messages of its .mcap files in file order")
            return _ScanSource(mcaps)
        raise BagError(f"bag {path} has no metadata.yaml and no .mcap file; for an unclosed sqlite3 "
                       f"recording run `ros2 bag reindex {path}` first")
    reader = Reader(path)
    try:
        reader.open()
    except Exception as exc:  # rosbags' ReaderError, or a damaged database/file below it
        mcaps = sorted(path.glob("*.mcap"))
        if mcaps:
            warn(("scan",), f"bag {path} cannot be opened normally ({exc}); reading the intact messages of "
                 "its .mcap files in file order")
            return _ScanSource(mcaps)
        raise BagError(f"bag {path} cannot be read: {exc}") from exc
    return _RosbagsSource(reader)
