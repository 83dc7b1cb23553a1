"""Which bags a fleet evaluation replays, and the name each one's results are filed under."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

BAG_METADATA = "metadata.yaml"


class FleetInputError(ValueError):
    """A path given to `iggt-ros evaluate` that is neither a bag nor a folder holding bags."""


@dataclass(frozen=True)
class BagJob:
    """One bag to replay: its path and the folder name its outputs go to (unique within a fleet)."""

    name: str
    input_bag: Path


def is_bag(path: Path) -> bool:
    """A rosbag2 directory (it has metadata.yaml) or a single .mcap file."""
    return (path.is_dir() and (path / BAG_METADATA).is_file()) or (path.is_file() and path.suffix == ".mcap")


def _walk(folder: Path, skip: Path | None) -> Iterable[Path]:
    """Bags under `folder`: a bag directory is not searched further; loose .mcap files count one each."""
    for root, dirs, files in os.walk(folder):
        here = Path(root)
        if skip is not None and (here == skip or skip in here.parents):
            dirs[:] = []
            continue
        if (here / BAG_METADATA).is_file():
            dirs[:] = []
            yield here
            continue
        dirs.sort()
        yield from (here / f for f in sorted(files) if f.endswith(".mcap"))


def find_bags(paths: Sequence[str | Path], exclude: str | Path | None = None) -> list[Path]:
    """The bags named by `paths` (bags, or folders searched for bags), in a stable order, without repeats.

    `exclude` (the fleet's own output folder) is never searched: its output bags are bags too.
    """
    skip = Path(exclude).resolve() if exclude is not None else None
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise FleetInputError(f"{path} does not exist; give rosbag2 directories, .mcap files or folders "
                                  "holding them")
        if is_bag(path):
            found.append(path.resolve())
            continue
        if not path.is_dir():
            raise FleetInputError(f"{path} is not a bag (a rosbag2 directory with {BAG_METADATA}, or a .mcap file)")
        inside = [p.resolve() for p in _walk(path.resolve(), skip)]
        if not inside:
            raise FleetInputError(f"no bag under {path} (looked for directories with {BAG_METADATA} and .mcap files)")
        found.extend(inside)
    unique: list[Path] = []
    for p in found:
        if p not in unique:
            unique.append(p)
    return unique


def plan_jobs(bags: Sequence[Path]) -> list[BagJob]:
    """One job per bag; bags of the same name get a numbered suffix in the order given."""
    jobs: list[BagJob] = []
    used: set[str] = set()
    for bag in bags:
        base = bag.stem if bag.is_file() else bag.name
        name, n = base, 1
        while name in used:
            n += 1
            name = f"{base}_{n}"
        used.add(name)
        jobs.append(BagJob(name=name, input_bag=bag))
    return jobs
