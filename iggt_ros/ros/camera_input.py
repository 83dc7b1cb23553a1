"""Camera messages -> `CameraFrame`s for the node, without importing rclpy.

Both decoding paths produce the same pixels: on a robot cv_bridge decodes the message buffer and
the colour handling below turns it into RGB; elsewhere `iggt_ros.messages.images` (the replay's decoder)
does both. Anything that cannot be decoded is reported once per topic, naming the topic and the
encoding, and the frame is skipped: a misconfigured camera must not flood the log or stop the node.
The core's bad-input rules (`iggt_ros.perception.input_checks`: zero, repeated or glitched stamps,
empty or flat images, non-finite calibration or poses) are applied here exactly as the replay
applies them, and every bad message is counted for /diagnostics (`input_report`). A dropped image
leaves its place (`MissingFrame`) so that its time step forms with the other cameras: a bad image
costs only itself, never the other cameras' images taken with it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from iggt_ros.messages.images import (
    COLOR_ENCODINGS,
    YUV422_ORDER,
    UnsupportedEncoding,
    check_image_layout,
    compressed_to_rgb,
    image_to_array,
    image_to_rgb,
    intrinsics_of,
    rgb_from_pixels,
)
from iggt_ros.messages.message import stamp_ns
from iggt_ros.perception.camera_frames import CameraCalibration, PoseLookup, camera_frame
from iggt_ros.perception.frames import CameraFrame, MissingFrame
from iggt_ros.perception.input_checks import Admitted, InputCounts, InputProblem, StampGuard, image_problem, problem
from iggt_ros.perception.warn_once import Logger, WarnOnce
from iggt_ros.ros.runtime_stats import OK, WARN, DiagnosticsReport
from iggt_ros.ros.tf_health import TfHealth


class NumpyImageDecoder:
    """The package's own decoder (`iggt_ros.messages.images`), used where cv_bridge is missing."""

    name = "numpy decoder (fallback)"

    def image(self, msg: Any, topic: str) -> np.ndarray:
        return image_to_rgb(msg, topic)

    def compressed(self, msg: Any, topic: str) -> np.ndarray:
        return compressed_to_rgb(msg, topic)


class CvBridgeImageDecoder:
    """cv_bridge decoding (the standard path on a robot); the colour handling is shared.

    Packed YUV 4:2:2 is read by the shared reader, not by cv_bridge: cv_bridge knows only the older
    names ('yuv422', 'yuv422_yuy2') and refuses 'uyvy'/'yuyv', and for these encodings its
    passthrough is the same plain reshape into byte pairs. The YUV -> RGB conversion is shared too.
    """

    name = "cv_bridge"

    def __init__(self) -> None:
        from cv_bridge import CvBridge

        self._bridge = CvBridge()

    def image(self, msg: Any, topic: str) -> np.ndarray:
        encoding = str(msg.encoding)
        if encoding not in COLOR_ENCODINGS:
            raise UnsupportedEncoding(f"image encoding '{encoding}' on topic '{topic}' cannot be used as a camera "
                                      f"image; supported: {', '.join(COLOR_ENCODINGS)}")
        if encoding in YUV422_ORDER:
            return rgb_from_pixels(image_to_array(msg, topic), encoding, topic)
        check_image_layout(msg, topic)  # a malformed image is said as on the fallback path, not as cv_bridge's error
        try:
            pixels = self._bridge.imgmsg_to_cv2(msg, desired_encoding="passthrough")
        except Exception as exc:  # cv_bridge raises its own CvBridgeError
            raise UnsupportedEncoding(f"cv_bridge cannot decode the '{encoding}' image on topic '{topic}': {exc}") \
                from exc
        return rgb_from_pixels(pixels, encoding, topic)

    def compressed(self, msg: Any, topic: str) -> np.ndarray:
        try:
            pixels = self._bridge.compressed_imgmsg_to_cv2(msg, desired_encoding="rgb8")
        except Exception as exc:
            raise UnsupportedEncoding(f"compressed image format '{msg.format}' on topic '{topic}' could not be "
                                      f"decoded by cv_bridge: {exc}") from exc
        return np.ascontiguousarray(pixels[..., :3], dtype=np.uint8)


def make_image_decoder(log: Logger) -> NumpyImageDecoder | CvBridgeImageDecoder:
    """cv_bridge when it imports, otherwise the numpy decoder; says which once."""
    try:
        decoder: NumpyImageDecoder | CvBridgeImageDecoder = CvBridgeImageDecoder()
        log("images: decoding with cv_bridge (standard path)")
    except ImportError:
        decoder = NumpyImageDecoder()
        log("images: cv_bridge is not installed; decoding with the package's numpy decoder (fallback path)")
    return decoder


class CameraInputs:
    """Per-camera state of the node's inputs: latest CameraInfo, decoding, poses, warnings."""

    def __init__(self, cameras: list[str], decoder: NumpyImageDecoder | CvBridgeImageDecoder,
                 warn: Logger, poses: PoseLookup | None = None, model_hw: tuple[int, int] = (336, 504)) -> None:
        self.cameras = list(cameras)
        self.decoder = decoder
        self.poses = poses
        self.model_hw = model_hw
        self._info: dict[str, CameraCalibration] = {}
        self._lock = threading.Lock()
        self._warn_once = WarnOnce(warn)
        self.counts = InputCounts(warn)
        """Bad input messages by reason (the core's rules), for /diagnostics."""
        self._stamps: StampGuard[Any] = StampGuard()
        self._stamp_lock = threading.Lock()
        self.skipped = 0
        """Frames that could not be used (undecodable, or dropped by the bad-input rules)."""

    def report_problem(self, item: InputProblem) -> None:
        """Count one bad input (said once per reason and topic)."""
        if item.dropped:
            self.skipped += 1
        self.counts.record(item)

    def set_camera_info(self, camera: str, msg: Any, topic: str) -> None:
        try:
            k = intrinsics_of(msg)
        except (ValueError, TypeError) as exc:
            self.report_problem(problem("bad camera_info", topic, _stamp_or_zero(msg), str(exc),
                                        "The previous calibration of this camera stays in use"))
            return
        state = CameraCalibration(k, int(msg.width), int(msg.height), str(msg.header.frame_id))
        with self._lock:
            self._info[camera] = state

    def camera_info(self, camera: str) -> CameraCalibration | None:
        with self._lock:
            return self._info.get(camera)

    def admit(self, topic: str, msg: Any) -> Admitted[Any]:
        """The core's stamp rule for one camera topic: the messages to use now, and where it lost captures.

        A zero or repeated stamp is dropped; a jump is held until the next message says whether it was
        a glitch (dropped) or a real loop or restart (both used; the core then starts over).
        """
        with self._stamp_lock:
            admitted = self._stamps.admit(topic, _stamp_or_zero(msg), msg)
        for p in admitted.problems:
            self.report_problem(p)
        return admitted

    def frames(self, camera: str, msg: Any, topic: str, compressed: bool = False) -> list[CameraFrame | MissingFrame]:
        """What one image message gives the core's synchroniser (fallback path): the stamp rule, then
        `frame` for each message to use; a dropped message's place is a `MissingFrame`."""
        admitted = self.admit(topic, msg)
        out: list[CameraFrame | MissingFrame] = [MissingFrame(camera, stamp) for stamp in admitted.missing_ns]
        for item in admitted.items:
            frame = self.frame(camera, item, topic, compressed)
            out.append(frame if frame is not None else MissingFrame(camera, _stamp_or_zero(item)))
        return out

    def frame(self, camera: str, msg: Any, topic: str, compressed: bool = False) -> CameraFrame | None:
        """The frame of one image message, or None (said once per topic, counted) when it cannot be used.

        Calibration and pose follow the core's rule (`perception.camera_frames`), as in the replay;
        an empty, black, saturated or constant image is dropped by the core's image rule.
        """
        stamp = _stamp_or_zero(msg)
        try:
            rgb = self.decoder.compressed(msg, topic) if compressed else self.decoder.image(msg, topic)
        except UnsupportedEncoding as exc:
            self.skipped += 1
            self._warn_once(f"decode:{topic}", f"frames on topic '{topic}' are skipped: {exc}")
            return None
        except (ValueError, TypeError, OSError, MemoryError) as exc:
            self.report_problem(problem("malformed image", topic, stamp, str(exc),
                                        "The other images of this camera are used"))
            return None
        bad = image_problem(topic, stamp, rgb, self.model_hw)
        if bad is not None:
            self.report_problem(bad)
            if bad.dropped:
                return None
        return camera_frame(camera, stamp, str(msg.header.frame_id), rgb, self.camera_info(camera), self.poses,
                            self._warn_once, on_problem=self.report_problem, topic=topic)

    def report(self) -> DiagnosticsReport:
        """The 'inputs' status of /diagnostics: bad input messages since the previous report, by reason."""
        period = self.counts.take_period()
        values = {f"bad_{kind.replace(' ', '_')}": str(n) for kind, n in sorted(self.counts.total.items())}
        values["images_skipped"] = str(self.skipped)
        if not period:
            return DiagnosticsReport(OK, "inputs: no bad messages since the last report", values)
        listing = ", ".join(f"{n} {kind}" for kind, n in sorted(period.items()))
        return DiagnosticsReport(WARN, f"inputs: {listing} since the last report; last: {self.counts.last}", values)


def _stamp_or_zero(msg: Any) -> int:
    try:
        return stamp_ns(msg.header.stamp)
    except Exception:  # a message without a readable header: the stamp rule drops it as stamp 0
        return 0


class PoseSource:
    """Camera poses from a TF lookup function, waiting up to a timeout, with once-only status logs.

    `lookup(target, source, stamp_ns)` returns [4,4] target_from_source or raises; both tf2_ros and
    the package's `TransformBuffer` are wrapped this way. When a pose is unavailable the node keeps
    working in its own frame; that is said once, and said again when TF comes back, and every
    lookup goes to `health` (counted on /diagnostics), so failures are never silent.
    """

    def __init__(self, lookup: Callable[[str, str, int], np.ndarray], world_frame: str, fallback_frame: str,
                 timeout_s: float, info: Logger, waits_itself: bool = False, health: TfHealth | None = None) -> None:
        self._lookup = lookup
        self.world_frame = world_frame
        self.fallback_frame = fallback_frame
        self.timeout_s = float(timeout_s)
        self._info = info
        self._waits_itself = waits_itself
        self._available: bool | None = None
        self.failures = 0
        self.health = health

    def __call__(self, frame_id: str, stamp: int) -> np.ndarray | None:
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                pose = np.asarray(self._lookup(self.world_frame, frame_id, stamp), dtype=np.float64)
                if not np.all(np.isfinite(pose)):  # counted by the caller's pose rule; not a TF failure
                    return pose
                break
            except Exception as exc:  # tf2 and TransformBuffer raise their own LookupError types
                if self._waits_itself or time.monotonic() >= deadline:
                    self.failures += 1
                    if self.health is not None:
                        self.health.record_lookup(False, f"'{frame_id}' -> '{self.world_frame}': {exc}")
                    if self._available is not False:
                        self._info(f"TF: no transform from '{frame_id}' to '{self.world_frame}' ({exc}); outputs are "
                                   f"in the node's own frame '{self.fallback_frame}' until TF provides it")
                    self._available = False
                    return None
                time.sleep(min(0.005, max(deadline - time.monotonic(), 0.0)))
        if self.health is not None:
            self.health.record_lookup(True)
        if self._available is not True:
            self._info(f"TF: camera poses from '{self.world_frame}' are available; outputs are aligned to it")
        self._available = True
        return pose
