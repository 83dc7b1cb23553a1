"""What the node reports on /diagnostics, aggregated without ROS.

Per-stage latency (mean and maximum over the most recent windows), the window rate over the last
period, dropped windows and
the engine's name are what users ask for when the node falls behind; collecting them here keeps
the node's diagnostics timer a two-line conversion and lets the numbers be tested directly.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from iggt_ros.ros.work_queue import QueueStats

OK = "ok"
WARN = "warn"
ERROR = "error"


@dataclass
class StageLatency:
    """Latency of one pipeline stage over a period."""

    count: int = 0
    total_ms: float = 0.0
    max_ms: float = 0.0

    def add(self, ms: float) -> None:
        self.count += 1
        self.total_ms += ms
        self.max_ms = max(self.max_ms, ms)

    @property
    def mean_ms(self) -> float:
        return self.total_ms / self.count if self.count else 0.0


@dataclass
class DiagnosticsReport:
    """One status: a level (`OK`, `WARN`, `ERROR`), a one-line summary and key/value details."""

    level: str
    message: str
    values: dict[str, str] = field(default_factory=dict)


class RuntimeStats:
    """Thread-safe counters fed by the worker and the callbacks, read by the diagnostics timer."""

    def __init__(self, engine: str, clock: Callable[[], float] = time.monotonic, history: int = 50,
                 started: float | None = None) -> None:
        """history: how many recent windows the latency figures cover (they stay shown while idle);
        started: the `clock` time configure began (default: now), for the cold start of the first window."""
        self.engine = engine
        self._clock = clock
        self._started = clock() if started is None else started
        self._lock = threading.Lock()
        self._period_start = clock()
        self._recent: collections.deque[dict[str, float]] = collections.deque(maxlen=history)
        self._period_windows = 0
        self._period_warnings: list[str] = []
        self._period_dropped_base = 0
        self._period_errors: list[str] = []
        self.windows = 0
        self.frames = 0
        self.frame_sets = 0
        self.errors = 0
        self.info: dict[str, str] = {}
        """Static facts shown with every report (e.g. which sync, image and TF paths are active)."""

    def record_frame(self) -> None:
        """One image received on a camera topic, counted on arrival whether or not it ends in a set."""
        with self._lock:
            self.frames += 1

    def record_frame_set(self) -> None:
        with self._lock:
            self.frame_sets += 1

    def record_window(self, timings_ms: Mapping[str, float], warnings: Sequence[str] = ()) -> None:
        """One processed window: its stage timings (including publishing) and warnings."""
        with self._lock:
            if self.windows == 0:  # cold start: engine load, kernel and library warm-up, first frames, first window
                self.info["configure_to_first_window_s"] = f"{self._clock() - self._started:.2f}"
            self.windows += 1
            self._period_windows += 1
            self._recent.append({stage: float(ms) for stage, ms in timings_ms.items()})
            self._period_warnings.extend(warnings)

    def record_error(self, message: str) -> None:
        """A window that failed outside the pipeline's own error handling (e.g. while publishing)."""
        with self._lock:
            self.errors += 1
            self._period_errors.append(message)

    def report(self, queue: QueueStats | None = None) -> DiagnosticsReport:
        """The status since the previous report; starts a new period."""
        with self._lock:
            now = self._clock()
            elapsed = max(now - self._period_start, 1e-9)
            rate = self._period_windows / elapsed
            values: dict[str, str] = {"engine": self.engine, **self.info}
            values["windows_processed"] = str(self.windows)
            values["window_rate_hz"] = f"{rate:.3f}"
            values["frames_received"] = str(self.frames)
            values["frame_sets"] = str(self.frame_sets)
            dropped_now = 0
            if queue is not None:
                values["windows_dropped"] = str(queue.dropped)
                values["queue_depth"] = str(queue.depth)
                values["queue_capacity"] = str(queue.capacity)
                dropped_now = queue.dropped - self._period_dropped_base
                self._period_dropped_base = queue.dropped
            stages: dict[str, StageLatency] = {}
            for timings in self._recent:
                for stage, ms in timings.items():
                    stages.setdefault(stage, StageLatency()).add(ms)
            for stage in sorted(stages):
                lat = stages[stage]
                values[f"latency_{stage}_ms"] = f"{lat.mean_ms:.2f}"
                values[f"latency_{stage}_max_ms"] = f"{lat.max_ms:.2f}"
            values["errors"] = str(self.errors)
            level = OK
            message = f"{self._period_windows} windows in {elapsed:.1f} s ({rate:.2f} Hz), engine {self.engine}"
            if self._period_warnings:
                level = WARN
                message += f"; {len(self._period_warnings)} warnings, last: {self._period_warnings[-1]}"
            if dropped_now:
                level = WARN
                message += f"; {dropped_now} windows dropped (inference slower than input)"
            if self._period_errors:
                level = ERROR
                message += f"; {len(self._period_errors)} errors, last: {self._period_errors[-1]}"
            self._period_start = now
            self._period_windows = 0
            self._period_warnings = []
            self._period_errors = []
            return DiagnosticsReport(level, message, values)
