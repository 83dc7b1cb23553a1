"""The node's saved-map side: `iggt/save_map`, `iggt/load_map`, `mapping.map_file` and the map's diagnostics.

Kept free of rclpy (requests and responses are duck-typed: `.name` in, `.success` and `.message` out) so
the rules are tested without ROS. Anyone on the DDS domain can call the services, so a request names a
map and never a path (`map_store.map_path` refuses a name that would leave ``mapping.map_directory``),
a refusal never raises out of a callback, and loading reads the file without pickle.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from iggt_ros.config import MappingConfig
from iggt_ros.perception.map_bounds import MapSize
from iggt_ros.perception.map_store import MapFileError, map_path, read_map, write_map
from iggt_ros.perception.pipeline import Pipeline
from iggt_ros.ros.runtime_stats import OK, WARN, DiagnosticsReport

log = logging.getLogger(__name__)


@dataclass
class MapReply:
    success: bool
    message: str


def save_map(pipeline: Pipeline, config: MappingConfig, name: str) -> MapReply:
    """Write the pipeline's map as `name` in the map directory; a refusal says why."""
    try:
        path = map_path(config.map_directory, name, for_writing=True)
        saved = pipeline.capture_map()
        write_map(saved, path)
    except MapFileError as exc:
        return MapReply(False, str(exc))
    except OSError as exc:
        return MapReply(False, f"map {name!r} could not be written ({exc}); check mapping.map_directory")
    log.info("map saved to %s: %d instances", path, len(saved.instances))
    return MapReply(True, f"saved {len(saved.instances)} instances (frame '{saved.frame_id}', next ID "
                          f"{saved.next_id}) to {path.name} in mapping.map_directory")


def load_map(pipeline: Pipeline, config: MappingConfig, name: str,
             before_swap: Callable[[], None] | None = None) -> MapReply:
    """Replace the pipeline's map by map `name`; nothing changes on a refusal.

    before_swap: run once the file is read and accepted, right before the map is replaced (the node
    discards its queued windows there, as for a reset).
    """
    try:
        path = map_path(config.map_directory, name)
        saved = read_map(path)
        if before_swap is not None:
            pipeline.check_map(saved)
            before_swap()
        pipeline.load_map(saved)
    except MapFileError as exc:
        log.warning("map %r not loaded: %s", name, exc)
        return MapReply(False, str(exc))
    return MapReply(True, f"loaded {len(saved.instances)} instances (IDs up to {max(saved.ids, default=0)}, frame "
                          f"'{saved.frame_id}') from {path.name}; they are re-identified when seen again")


def map_report(size: MapSize, config: MappingConfig) -> DiagnosticsReport:
    """The "map" status of /diagnostics: size against the bounds, and what the bounds removed."""
    level = WARN if size.instances > config.max_instances else OK
    message = f"{size.instances} instances ({size.confirmed} confirmed, {size.lost} lost), {size.points} points"
    if level == WARN:
        message += f"; above mapping.max_instances {config.max_instances} (every instance is in view)"
    values = {"instances": str(size.instances), "confirmed": str(size.confirmed), "lost": str(size.lost),
              "points": str(size.points), "max_instances": str(config.max_instances),
              "max_points_per_object": str(config.max_points_per_object),
              "max_lost_age_s": f"{config.max_lost_age_s:g}", "removed_by_age": str(size.removed_by_age),
              "removed_by_count": str(size.removed_by_count)}
    return DiagnosticsReport(level, message, values)
