"""The held-out benchmark scenes the query benchmarks replay, and their command-line options (one place)."""

from __future__ import annotations

import argparse


def add_scene_arguments(parser: argparse.ArgumentParser) -> None:
    """--scenes, --steps, --width, --height: how many benchmark scenes, and how each is rendered;
    --first-seed: scenes made the same way from other seeds (to look into failures without looking
    at the held-out scenes)."""
    parser.add_argument("--scenes", type=int, default=20)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--width", type=int, default=504)
    parser.add_argument("--height", type=int, default=336)
    parser.add_argument("--first-seed", type=int, default=None,
                        help="seed of the first scene (default: the first of the split's seed range)")


def scene_seeds(args: argparse.Namespace, default_first: int) -> list[int]:
    """The seeds of the scenes to run: `args.scenes` consecutive seeds from --first-seed or `default_first`."""
    first = default_first if args.first_seed is None else args.first_seed
    return list(range(first, first + args.scenes))
