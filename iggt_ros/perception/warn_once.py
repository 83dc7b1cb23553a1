"""Warn once per key: the one helper for warnings that would otherwise repeat for every frame.

A misconfigured camera sends the same bad message many times a second; the node, the bag reader
and the replay say so once per key (topic, camera, reason) and count the rest.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

Logger = Callable[[str], None]


class WarnOnce:
    """Calls `log(message)` the first time a key is seen; thread-safe (callbacks of several threads)."""

    def __init__(self, log: Logger) -> None:
        self._log = log
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, key: str, message: str) -> bool:
        """Log `message` unless `key` was logged before; True when it was logged now."""
        with self._lock:
            if key in self._seen:
                return False
            self._seen.add(key)
        self._log(message)
        return True

    def forget(self, key: str) -> None:
        """Allow `key` again (a condition that ended and may come back is worth saying again)."""
        with self._lock:
            self._seen.discard(key)
