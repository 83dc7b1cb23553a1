"""The bounded hand-over between the node's callbacks and its inference worker.

Subscription callbacks must never wait for inference, and a node that cannot keep up must not
grow its memory: when the queue is full, the oldest waiting item is dropped (the newest window is
the one worth processing) and counted, so diagnostics can say how much input was lost.
"""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class QueueStats:
    """Counters of a `DropOldestQueue` since it was created."""

    enqueued: int
    dropped: int
    taken: int
    depth: int
    max_depth: int
    """Highest number of items that were ever waiting at once (never above the capacity)."""
    capacity: int


class DropOldestQueue(Generic[T]):
    """A thread-safe FIFO of at most `capacity` items that drops the oldest on overflow."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"queue capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self._items: collections.deque[T] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._enqueued = 0
        self._dropped = 0
        self._taken = 0
        self._max_depth = 0

    def put(self, item: T) -> T | None:
        """Add `item` without blocking; returns the item dropped to make room, if any."""
        with self._cond:
            if self._closed:
                raise RuntimeError("put() on a closed queue")
            dropped = None
            if len(self._items) >= self.capacity:
                dropped = self._items.popleft()
                self._dropped += 1
            self._items.append(item)
            self._enqueued += 1
            self._max_depth = max(self._max_depth, len(self._items))
            self._cond.notify()
            return dropped

    def get(self, timeout: float | None = None) -> T | None:
        """The oldest item, waiting up to `timeout` seconds; None on timeout or once closed."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._items or self._closed, timeout):
                return None
            if not self._items:
                return None
            self._taken += 1
            return self._items.popleft()

    def clear(self) -> int:
        """Discard everything waiting (e.g. after a reset); returns how many items were discarded."""
        with self._cond:
            n = len(self._items)
            self._items.clear()
            return n

    def close(self) -> None:
        """Wake every waiting `get` (they return None) and refuse further items."""
        with self._cond:
            self._closed = True
            self._items.clear()
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    def stats(self) -> QueueStats:
        with self._cond:
            return QueueStats(self._enqueued, self._dropped, self._taken, len(self._items), self._max_depth,
                              self.capacity)
