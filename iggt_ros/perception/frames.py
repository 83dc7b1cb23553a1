"""Camera frames as the perception core receives them, independent of ROS messages.

The ROS node and the rosbag replay both convert their messages into these, so everything after
this point runs the same way online and offline.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class CameraFrame:
    """One image of one camera."""

    camera: str
    stamp_ns: int
    image: np.ndarray
    """[H,W,3] uint8 RGB at the camera's native resolution."""
    intrinsics: np.ndarray | None = None
    """[3,3] pinhole K at native resolution, from CameraInfo (None when not received yet)."""
    frame_id: str = ""
    """The optical frame of the header (used to look up TF and to stamp outputs)."""
    world_from_camera: np.ndarray | None = None
    """[4,4] pose of the optical frame in the world frame from TF, None when unavailable."""


@dataclass
class FrameSet:
    """Synchronised frames of all cameras at one time step."""

    stamp_ns: int
    frames: dict[str, CameraFrame] = field(default_factory=dict)

    @property
    def cameras(self) -> list[str]:
        return list(self.frames)


@dataclass(frozen=True)
class MissingFrame:
    """A camera has no usable image at `stamp_ns`: its message there was bad and dropped.

    Given to the synchroniser in place of the frame, it completes the set of that time step without
    this camera, so the other cameras' images of the step are used instead of waiting for an image
    that will never come (and being lost with it).
    """

    camera: str
    stamp_ns: int
