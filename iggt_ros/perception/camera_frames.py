"""Decoded image + latest camera_info + pose -> `CameraFrame`: the one rule the node and the replay share.

Both adapters hold the latest calibration of each camera as a `CameraCalibration` and build every
frame with `camera_frame`, so a replay of a bag evaluates exactly the frames the node would use:

* no camera_info received yet: the frame is used, without intrinsics, so the engine's predicted
  intrinsics place it (no image is lost while calibration is late); warned once per camera;
* camera_info for another image size (a resized stream, or calibration at full resolution): K is
  scaled to the image, each axis by its own ratio, as image_proc's resize does; warned once;
* an image header without frame_id takes the camera_info's frame_id;
* the pose is looked up for that frame_id at the image stamp (None when TF cannot give it, or gives
  one with non-finite values: that is reported, and the frame is used without a pose).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from iggt_ros.perception.frames import CameraFrame
from iggt_ros.perception.input_checks import InputProblem, pose_problem

WarnOnceFn = Callable[[str, str], object]
"""(key, message): logs the message the first time the key is seen."""
PoseLookup = Callable[[str, int], "np.ndarray | None"]
"""(frame_id, stamp_ns) -> [4,4] world_from_camera, or None when TF cannot give it."""


@dataclass(frozen=True)
class CameraCalibration:
    """The latest camera_info of one camera: pinhole K for images of `width` x `height` (0 x 0: any size)."""

    intrinsics: np.ndarray
    width: int
    height: int
    frame_id: str = ""


def intrinsics_for_image(camera: str, calibration: CameraCalibration | None, width: int, height: int,
                         warn_once: WarnOnceFn) -> np.ndarray | None:
    """K for an image of `width` x `height`, or None when the engine's predicted intrinsics must be used."""
    if calibration is None:
        warn_once(f"no-info:{camera}", f"no camera_info received yet for camera '{camera}': its frames are used "
                                       "with the intrinsics the model predicts until one arrives")
        return None
    k = np.array(calibration.intrinsics, dtype=np.float64)
    info_w, info_h = calibration.width, calibration.height
    if info_w and info_h and (info_w, info_h) != (width, height):
        warn_once(f"info-size:{camera}", f"camera_info of camera '{camera}' is for {info_w}x{info_h} images but its "
                                         f"images are {width}x{height}: K scaled to the image")
        k[0] *= width / info_w
        k[1] *= height / info_h
    return k


def camera_frame(camera: str, stamp_ns: int, frame_id: str, rgb: np.ndarray,
                 calibration: CameraCalibration | None, poses: PoseLookup | None,
                 warn_once: WarnOnceFn, on_problem: Callable[[InputProblem], object] | None = None,
                 topic: str = "") -> CameraFrame:
    """The frame the perception core receives for one decoded image ([H,W,3] uint8 RGB).

    A pose with non-finite values is not used (the frame goes on without one) and is reported to
    `on_problem` (counted by the adapter), or warned once per camera without it.
    """
    if not frame_id and calibration is not None:
        frame_id = calibration.frame_id
    k = intrinsics_for_image(camera, calibration, int(rgb.shape[1]), int(rgb.shape[0]), warn_once)
    pose = poses(frame_id, int(stamp_ns)) if (poses is not None and frame_id) else None
    bad_pose = pose_problem(topic or camera, int(stamp_ns), frame_id, pose)
    if bad_pose is not None:  # never a NaN pose as a keyframe reference or a world frame
        pose = None
        if on_problem is not None:
            on_problem(bad_pose)
        else:
            warn_once(f"pose:{camera}", bad_pose.text)
    return CameraFrame(camera=camera, stamp_ns=int(stamp_ns), image=rgb, intrinsics=k, frame_id=frame_id,
                       world_from_camera=pose)
