"""`iggt-ros map`: save, load, list and inspect saved object maps.

    iggt-ros map save NAME [--namespace /]     # asks the running node (/iggt/save_map) to save its map
    iggt-ros map load NAME [--namespace /]     # asks it to load a saved map (/iggt/load_map)
    iggt-ros map list [--config FILE | --directory DIR]
    iggt-ros map inspect NAME [--config FILE | --directory DIR]

`save` and `load` call the node's services, so they need rclpy and the built iggt_ros interfaces (a
sourced ROS workspace); maps are named, and the node writes and reads them in its own
``mapping.map_directory``. `list` and `inspect` read the directory here (``mapping.map_directory`` of
--config, or --directory), without ROS; inspecting checks the file as a load would (version, digest).
"""

from __future__ import annotations

import argparse
import datetime
import sys

from iggt_ros.config import ConfigError, load_config
from iggt_ros.perception.map_store import MapFileError, list_maps, map_path, read_map

ACTIONS = ("save", "load", "list", "inspect")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=ACTIONS)
    parser.add_argument("name", nargs="?", default="", help="map name (letters, digits, '_', '-', '.')")
    parser.add_argument("--config", default=None, help="parameter file whose mapping.map_directory is used")
    parser.add_argument("--directory", default=None, help="map directory (instead of --config's)")
    parser.add_argument("--namespace", default="/", help="namespace of the node's iggt/ services (save, load)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the node (save, load)")


def run(args: argparse.Namespace) -> int:
    if args.action in ("save", "load", "inspect") and not args.name:
        print(f"iggt-ros map {args.action}: give a map name", file=sys.stderr)
        return 2
    if args.action in ("save", "load"):
        return call_node(args.action, args.name, args.namespace, args.timeout)
    try:
        directory = args.directory or load_config(args.config).mapping.map_directory
    except ConfigError as exc:
        print(f"iggt-ros map: {exc}", file=sys.stderr)
        return 2
    if args.action == "list":
        for name in list_maps(directory):
            print(name)
        return 0
    try:
        saved = read_map(map_path(directory, args.name))
    except MapFileError as exc:
        print(f"iggt-ros map inspect: {exc}", file=sys.stderr)
        return 1
    when = datetime.datetime.fromtimestamp(saved.saved_unix_ns / 1e9, datetime.timezone.utc) if saved.saved_unix_ns \
        else None
    print(f"map {args.name}: format version {saved.version}, frame '{saved.frame_id}', last window "
          f"{saved.window_index} at stamp {saved.stamp_ns}, saved {when.isoformat() if when else 'unknown'}, "
          f"{len(saved.instances)} instances, next ID {saved.next_id}, voxel {saved.voxel_size_m} m")
    print(f"{'id':>5} {'state':<9} {'points':>6} {'views':>5}  {'box centre (m)':<24} {'box size (m)':<20} label")
    for inst in saved.instances:
        centre = " ".join(f"{v:7.2f}" for v in inst.box_center)
        size = " ".join(f"{v:5.2f}" for v in inst.box_size)
        print(f"{inst.id:>5} {inst.state.name.lower():<9} {len(inst.points):>6} {inst.views_seen:>5}  {centre:<24} "
              f"{size:<20} {inst.label}")
    return 0


def call_node(action: str, name: str, namespace: str, timeout: float) -> int:
    """One request to the node's save_map or load_map service; prints its answer."""
    try:
        import rclpy

        from iggt_ros.srv import LoadMap, SaveMap
    except ImportError as exc:
        print(f"iggt-ros map {action} calls the node's service and needs rclpy and the built iggt_ros interfaces "
              f"(source your ROS workspace): {exc}", file=sys.stderr)
        return 2
    srv_type = SaveMap if action == "save" else LoadMap
    service = f"{namespace.rstrip('/')}/iggt/{action}_map"
    rclpy.init()
    node = rclpy.create_node("iggt_map_cli")
    try:
        client = node.create_client(srv_type, service)
        if not client.wait_for_service(timeout_sec=timeout):
            print(f"iggt-ros map {action}: no node answers on {service} (is iggt_node configured?)", file=sys.stderr)
            return 1
        future = client.call_async(srv_type.Request(name=name))
        rclpy.spin_until_future_complete(node, future, timeout_sec=timeout)
        if not future.done():
            print(f"iggt-ros map {action}: {service} did not answer within {timeout} s", file=sys.stderr)
            return 1
        reply = future.result()
        print(reply.message, file=sys.stdout if reply.success else sys.stderr)
        return 0 if reply.success else 1
    finally:
        node.destroy_node()
        rclpy.shutdown()
