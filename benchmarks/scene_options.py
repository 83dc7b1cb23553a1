"""The held-out benchmark scenes the query benchmarks replay, and their command-line options (one place)."""

from __future__ import annotations

import argparse


def add_scene_arguments(parser: argparse.ArgumentParser) -> None:
    """--scenes, --steps, --width, --height: how many benchmark scenes, and how each is rendered."""
    parser.add_argument("--scenes", type=int, default=20)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--width", type=int, default=504)
    parser.add_argument("--height", type=int, default=336)
