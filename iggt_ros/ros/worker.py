"""The node's inference thread: windows from the bounded queue through the pipeline to a publisher.

Kept free of rclpy so its behaviour (order, drops, resets, error handling) is tested directly. The
pipeline call is the only slow step, and it runs here, never in a subscription or service callback.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from iggt_ros.perception.pipeline import Pipeline, WindowResult
from iggt_ros.perception.window import Window
from iggt_ros.ros.runtime_stats import RuntimeStats
from iggt_ros.ros.work_queue import DropOldestQueue

log = logging.getLogger(__name__)

ResultHandler = Callable[[WindowResult, Window], dict[str, float]]
"""Publishes a result; returns extra stage timings (e.g. {'publish': ms})."""


class InferenceWorker:
    """A daemon thread that processes queued windows one at a time.

    A window collected before a pipeline reset belongs to the old map: the pipeline flags its result
    discarded (`WindowResult.discarded`) and it is counted here instead of published.
    """

    def __init__(self, pipeline: Pipeline, queue: DropOldestQueue[Window], handle: ResultHandler,
                 stats: RuntimeStats) -> None:
        self.pipeline = pipeline
        self.queue = queue
        self.handle = handle
        self.stats = stats
        self.busy = False
        self.processed = 0
        self.discarded = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="iggt-inference", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop after the window in progress; returns False when the thread did not end in time."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def discard_pending(self) -> int:
        """After a reset: forget queued windows (the one in flight is discarded by the pipeline)."""
        return self.queue.clear()

    def _run(self) -> None:
        while not self._stop.is_set():
            window = self.queue.get(timeout=0.1)
            if window is None:
                if self.queue.closed:
                    return
                continue
            self.busy = True
            try:
                self._process(window)
            finally:
                self.busy = False

    def _process(self, window: Window) -> None:
        try:
            result = self.pipeline.process_window(window)
        except Exception as exc:  # the pipeline handles bad input itself; anything else is a bug to report
            log.exception("window %d failed", window.index)
            self.stats.record_error(f"window {window.index} failed: {exc}")
            return
        if result.discarded:
            self.discarded += 1
            return
        timings = dict(result.timings_ms)
        t = time.perf_counter()
        try:
            timings.update(self.handle(result, window))
        except Exception as exc:
            log.exception("publishing window %d failed", window.index)
            self.stats.record_error(f"publishing window {window.index} failed: {exc}")
            return
        timings.setdefault("publish", (time.perf_counter() - t) * 1e3)
        self.processed += 1
        self.stats.record_window(timings, result.warnings)
