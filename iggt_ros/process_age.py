"""Seconds since this process started, for cold-start figures (process start to first window).

A cold start is mostly spent before `main` runs (imports of torch, numba, the clustering libraries) and
in the first window's one-time work, so it is counted from the kernel's record of the process start,
not from any point inside the program.
"""

from __future__ import annotations

import os
import time

_IMPORTED_AT = time.time()


def process_age_s() -> float:
    """Seconds since the process started: from /proc on Linux (10 ms steps), else since this module's import."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22 of stat(5): start, in ticks after boot
        with open("/proc/uptime") as f:
            now = float(f.read().split()[0])  # seconds after boot, the same clock
        return max(now - started, 0.0)
    except (OSError, ValueError, IndexError):
        return time.time() - _IMPORTED_AT
