"""How well TF serves the node: /tf lag and camera-pose lookup failures, for /diagnostics.

When TF arrives late or not at all the node keeps working in its own frame, which is right, but it
must not happen silently: a robot whose /tf is a second late (for example because large camera
images overflow Fast DDS's shared-memory segment) loses most camera poses, and the user needs to
see that and why. Lag is measured on /tf messages as they arrive (receive time minus the newest
stamp they carry); lookups are counted as the node asks for camera poses.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from iggt_ros.ros.launch_logic import PROFILE_VARIABLES
from iggt_ros.ros.runtime_stats import OK, WARN, DiagnosticsReport

LARGE_IMAGES_HINT = ("with large images, give Fast DDS a larger shared-memory segment "
                     "(launch argument large_images:=true, README 'Large images over Fast DDS')")


FASTDDS_SEGMENT_BYTES = 512 * 1024
"""Fast DDS's default shared-memory segment per writing process (Humble and Jazzy)."""


def transport_warning(cameras: int, width: int, height: int, env: Mapping[str, str]) -> str | None:
    """Why the default transport cannot carry the configured images (said at configure time), or None.

    One time step of `cameras` rgb8 images of at least `width` x `height` (the model input; camera
    images are rarely smaller) must fit Fast DDS's default shared-memory segment, or images are lost
    and /tf queued behind them arrives seconds late. Only Fast DDS without a profile is concerned.
    """
    rmw = env.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp") or "rmw_fastrtps_cpp"
    if not rmw.startswith("rmw_fastrtps") or any(env.get(v) for v in PROFILE_VARIABLES):
        return None
    step_bytes = cameras * width * height * 3
    if step_bytes <= FASTDDS_SEGMENT_BYTES:
        return None
    return (f"{cameras} camera(s) of at least {width}x{height} rgb8 send {step_bytes / 1e6:.2f} MB per time step, more "
            f"than the {FASTDDS_SEGMENT_BYTES // 1024} KiB shared-memory segment Fast DDS gives a publisher by "
            "default: images will be lost and /tf will arrive late (camera poses missing). Launch with "
            "large_images:=true and give the camera drivers (or ros2 bag play) the same profile, README "
            "'Large images over Fast DDS'")


@dataclass
class _Period:
    lookups: int = 0
    failures: int = 0
    messages: int = 0
    lag_total_s: float = 0.0
    lag_max_s: float = 0.0


class TfHealth:
    """Thread-safe counters fed by the /tf callback and the pose lookups, read by the diagnostics timer."""

    def __init__(self, lag_warn_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        """lag_warn_s: /tf later than this (seconds) makes the status WARN."""
        self.lag_warn_s = float(lag_warn_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._period = _Period()
        self._period_start = clock()
        self.lookups = 0
        self.failures = 0
        self.messages = 0
        self.last_failure = ""

    def record_message(self, newest_stamp_ns: int, received_ns: int) -> None:
        """One /tf message: received at `received_ns` (node clock), newest transform stamped `newest_stamp_ns`."""
        lag = (int(received_ns) - int(newest_stamp_ns)) * 1e-9
        with self._lock:
            self.messages += 1
            p = self._period
            p.messages += 1
            p.lag_total_s += lag
            p.lag_max_s = lag if p.messages == 1 else max(p.lag_max_s, lag)

    def record_lookup(self, ok: bool, why: str = "") -> None:
        """One camera-pose lookup; `why` says what failed (TF's own error text)."""
        with self._lock:
            self.lookups += 1
            self._period.lookups += 1
            if not ok:
                self.failures += 1
                self._period.failures += 1
                self.last_failure = why

    def report(self, fallback_frame: str) -> DiagnosticsReport:
        """The TF status since the previous report; starts a new period."""
        with self._lock:
            now = self._clock()
            elapsed = max(now - self._period_start, 1e-9)
            p, self._period, self._period_start = self._period, _Period(), now
            values = {
                "tf_lookups": str(self.lookups),
                "tf_lookup_failures": str(self.failures),
                "tf_lookup_failure_rate": f"{p.failures / p.lookups:.3f}" if p.lookups else "0.000",
                "tf_lookup_failures_per_s": f"{p.failures / elapsed:.3f}",
                "tf_messages": str(self.messages),
            }
            problems = []
            if p.messages:
                values["tf_lag_ms"] = f"{p.lag_total_s / p.messages * 1e3:.1f}"
                values["tf_lag_max_ms"] = f"{p.lag_max_s * 1e3:.1f}"
                if p.lag_max_s > self.lag_warn_s:
                    problems.append(f"/tf arrives up to {p.lag_max_s:.2f} s after its stamps (more than "
                                    f"input.tf_lag_warn_s = {self.lag_warn_s:.2f} s)")
            if p.failures:
                problems.append(f"{p.failures} of {p.lookups} camera pose lookups failed "
                                f"({100.0 * p.failures / p.lookups:.0f} %), those frames are in '{fallback_frame}'"
                                + (f"; last: {self.last_failure}" if self.last_failure else ""))
            if not problems:
                return DiagnosticsReport(OK, f"TF: {p.lookups} camera pose lookups in {elapsed:.1f} s, all found",
                                         values)
            return DiagnosticsReport(WARN, "TF: " + "; ".join(problems) + f"; {LARGE_IMAGES_HINT}", values)
