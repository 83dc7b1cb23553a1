"""Moved to `iggt_ros.messages.layouts` (the message layer); kept importable for the
benchmarks that still use this name."""

from iggt_ros.messages.layouts import *  # noqa: F401,F403
