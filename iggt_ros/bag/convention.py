"""Moved to `iggt_ros.messages.convention` (the message layer); kept importable for the
benchmarks that still use this name."""

from iggt_ros.messages.convention import *  # noqa: F401,F403
