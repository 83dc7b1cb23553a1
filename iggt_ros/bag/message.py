"""Moved to `iggt_ros.messages.message` (the message layer); kept importable for the
benchmarks that still use this name."""

from iggt_ros.messages.message import *  # noqa: F401,F403
