"""Camera messages -> `CameraFrame`s for the node, without importing rclpy.

Both decoding paths produce the same pixels: on a robot cv_bridge decodes the message buffer and
the colour handling below turns it into RGB; elsewhere `iggt_ros.messages.images` (the replay's decoder)
does both. Anything that cannot be decoded is reported once per topic, naming the topic and the
encoding, and the frame is skipped: a misconfigured camera must not flood the log or stop the node.
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
    compressed_to_rgb,
    image_to_array,
    image_to_rgb,
    intrinsics_of,
    rgb_from_pixels,
)
from iggt_ros.messages.message import stamp_ns
from iggt_ros.perception.camera_frames import CameraCalibration, PoseLookup, camera_frame
from iggt_ros.perception.frames import CameraFrame
from iggt_ros.perception.warn_once import Logger, WarnOnce
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
                 warn: Logger, poses: PoseLookup | None = None) -> None:
        self.cameras = list(cameras)
        self.decoder = decoder
        self.poses = poses
        self._info: dict[str, CameraCalibration] = {}
        self._lock = threading.Lock()
        self._warn_once = WarnOnce(warn)
        self.skipped = 0
        """Frames that could not be decoded."""

    def set_camera_info(self, camera: str, msg: Any, topic: str) -> None:
        try:
            k = intrinsics_of(msg)
        except ValueError as exc:
            self._warn_once(f"info:{topic}", f"camera_info on topic '{topic}' ignored: {exc}")
            return
        state = CameraCalibration(k, int(msg.width), int(msg.height), str(msg.header.frame_id))
        with self._lock:
            self._info[camera] = state

    def camera_info(self, camera: str) -> CameraCalibration | None:
        with self._lock:
            return self._info.get(camera)

    def frame(self, camera: str, msg: Any, topic: str, compressed: bool = False) -> CameraFrame | None:
        """The frame of one image message, or None (warned once per topic) when it cannot be decoded.

        Calibration and pose follow the core's rule (`perception.camera_frames`), as in the replay.
        """
        try:
            rgb = self.decoder.compressed(msg, topic) if compressed else self.decoder.image(msg, topic)
        except (UnsupportedEncoding, ValueError) as exc:
            self.skipped += 1
            self._warn_once(f"decode:{topic}", f"frames on topic '{topic}' are skipped: {exc}")
            return None
        return camera_frame(camera, stamp_ns(msg.header.stamp), str(msg.header.frame_id), rgb,
                            self.camera_info(camera), self.poses, self._warn_once)


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
