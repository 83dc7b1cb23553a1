"""`iggt-ros make-sample-bag`: a synthetic rosbag2 with camera topics, TF and ground truth.

Ground-truth bag convention
===========================

Replay and evaluation read any rosbag2 (mcap or sqlite3) that follows this convention; the
`make-sample-bag` command writes such bags from synthetic scenes. For every camera `<cam>`
(sample bags: `front` for one camera, `front_left`/`front_right` for two, `cam0`..`camN-1` for
three or more):

| topic | type | content |
|---|---|---|
| `/<cam>/image_raw` | sensor_msgs/Image | rgb8 image; header frame_id `<cam>_optical_frame` |
| `/<cam>/camera_info` | sensor_msgs/CameraInfo | pinhole K (plumb_bob, zero distortion); image's header |
| `/tf` | tf2_msgs/TFMessage | `odom` -> `base_link` at every image stamp (but see `tf_start_s`, `tf_gaps`) |
| `/tf_static` | tf2_msgs/TFMessage | `base_link` -> `<cam>_optical_frame` of every camera; once, transient-local |
| `/gt/<cam>/instances` | sensor_msgs/Image | 16UC1 true instance ID per pixel, 0 = background; image's header |
| `/gt/<cam>/depth` | sensor_msgs/Image | 32FC1 true z-depth along the optical axis, metres; image's header |
| `/gt/objects` | iggt_ros/InstanceArray | every object of the scene, once per time step (see below) |

Frames follow REP-103/105: `odom` is the fixed world frame (metres, z up), `base_link` the robot
base, and camera optical frames have x right, y down, z forward. The pose of a camera at an image
stamp is the TF chain `odom` -> `base_link` -> `<cam>_optical_frame` at that stamp. All cameras of
a time step share one stamp, and each message is recorded at its header stamp.

`/gt/objects` is stamped like the images of its time step, in frame `odom`, and lists every object
of the scene, also those not seen yet. Per instance: `id` equals the value of that object's pixels
in `/gt/<cam>/instances`; `label` is "<size> <color> <shape>" (e.g. "small red cube"); `score` is
1; `centroid` and `box_pose` are the true box centre (boxes are upright: rotation about z only);
`box_size` is the full extent along the box axes; `attributes` holds `shape`, `color` and `size`
(plus `duplicate_of` = the ID of an identical object, for duplicates); `point_count` is the number
of the object's pixels over all cameras at this step; `views_seen` counts the images so far in
which the object is visible, and `first_seen`/`last_seen` are the stamps of the first and latest of
them (zero before it has been seen); `state` is CONFIRMED when the object is visible in some camera
at this step, LOST when it was seen before but is not visible now, and TENTATIVE when it has not
been seen yet. The last `/gt/objects` message therefore summarises the whole bag.

TF as a robot gives it: `SampleBagSpec.tf_start_s` (`--tf-start`) leaves `/tf` out for the first
seconds of the bag (the first images arrive before TF), and `tf_gaps` (`--tf-gap START DURATION`)
leaves it out in the given intervals (dropouts); `/tf_static` is always written. Images in those
spans have no camera pose, exactly as on a robot whose TF lookups fail.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from iggt_ros.bag.writer import STORAGES, BagWriter
from iggt_ros.messages import convention as C
from iggt_ros.messages import layouts as L
from iggt_ros.messages.message import Header
from iggt_ros.synthetic.spec import SceneSpec
from iggt_ros.synthetic.types import RenderedView, Scene

TRAJECTORIES = ("orbit", "walk", "pan")


@dataclass(frozen=True)
class SampleBagSpec(SceneSpec):
    """What to render into a sample bag: the scene (every `SceneSpec` field) and what only a bag has."""

    storage: str = "mcap"
    tf_start_s: float = 0.0
    """/tf is left out for this long after the first image (TF arriving late)."""
    tf_gaps: tuple[tuple[float, float], ...] = ()
    """(start, duration) in seconds after the first image during which /tf is left out (dropouts)."""

    def has_tf(self, seconds: float) -> bool:
        """Whether /tf is written at this time after the first image."""
        if seconds < self.tf_start_s:
            return False
        return not any(start <= seconds < start + duration for start, duration in self.tf_gaps)


@dataclass
class SampleBagSummary:
    """What was written: per-topic message counts, cameras and the bag's time span."""

    path: Path
    cameras: list[str]
    counts: dict[str, int]
    start_ns: int
    end_ns: int


class _Visibility:
    """Running per-object visibility over the views written so far (for /gt/objects)."""

    def __init__(self, scene: Scene) -> None:
        self.views_seen = {o.id: 0 for o in scene.objects}
        self.first_ns = {o.id: 0 for o in scene.objects}
        self.last_ns = {o.id: 0 for o in scene.objects}

    def update(self, views: list[RenderedView]) -> dict[int, int]:
        """Count the views of one step; returns the object's pixel count at this step."""
        pixels: dict[int, int] = dict.fromkeys(self.views_seen, 0)
        for view in views:
            counts = np.bincount(view.instance_ids.reshape(-1).astype(np.int64), minlength=1)
            for obj_id in self.views_seen:
                n = int(counts[obj_id]) if obj_id < len(counts) else 0
                if n:
                    pixels[obj_id] += n
                    self.views_seen[obj_id] += 1
                    self.first_ns[obj_id] = self.first_ns[obj_id] or view.stamp_ns
                    self.last_ns[obj_id] = view.stamp_ns
        return pixels


def ground_truth_objects(scene: Scene, visibility: _Visibility, pixels: dict[int, int]) -> list[L.InstanceRecord]:
    """The /gt/objects instances of one time step (convention in the module docstring)."""
    out = []
    for obj in scene.objects:
        attributes = dict(obj.attributes)
        if obj.duplicate_of:
            attributes["duplicate_of"] = str(obj.duplicate_of)
        if pixels[obj.id]:
            state = L.STATE_CONFIRMED
        elif visibility.views_seen[obj.id]:
            state = L.STATE_LOST
        else:
            state = L.STATE_TENTATIVE
        center = np.asarray(obj.center, dtype=np.float64)
        out.append(L.InstanceRecord(
            id=obj.id, centroid=center, box_center=center, box_size=np.asarray(obj.extent, dtype=np.float64),
            box_yaw=float(obj.yaw), state=state, label=f"{obj.size_name} {obj.color_name} {obj.shape}", score=1.0,
            point_count=pixels[obj.id], views_seen=visibility.views_seen[obj.id],
            first_seen_ns=visibility.first_ns[obj.id], last_seen_ns=visibility.last_ns[obj.id],
            attributes=attributes))
    return out


def write_sample_bag(out: str | Path, spec: SampleBagSpec) -> SampleBagSummary:
    """Render `spec` and write it as a rosbag2 directory at `out` following the ground-truth convention."""
    from iggt_ros.synthetic.sequence import iter_steps

    if spec.trajectory not in TRAJECTORIES:
        raise ValueError(f"unknown trajectory '{spec.trajectory}'; choose from {', '.join(TRAJECTORIES)}")
    if spec.frames < 1 or spec.cameras < 1:
        raise ValueError(f"need at least one frame and one camera (got {spec.frames} frames, {spec.cameras} cameras)")
    if spec.tf_start_s < 0 or any(start < 0 or duration <= 0 for start, duration in spec.tf_gaps):
        raise ValueError(f"TF start and gaps must be >= 0 s with positive durations (got start {spec.tf_start_s} s, "
                         f"gaps {list(spec.tf_gaps)})")
    plan = spec.plan()
    rig = plan.rig
    visibility = _Visibility(plan.scene)
    with BagWriter(out, spec.storage) as bag:
        bag.add_topic(C.TF_STATIC_TOPIC, C.TF_TYPE, latched=True)
        bag.add_topic(C.TF_TOPIC, C.TF_TYPE, depth=100)
        for cam in rig.names:
            bag.add_topic(C.image_topic(cam), C.IMAGE_TYPE)
            bag.add_topic(C.camera_info_topic(cam), C.CAMERA_INFO_TYPE)
            bag.add_topic(C.gt_instances_topic(cam), C.IMAGE_TYPE)
            bag.add_topic(C.gt_depth_topic(cam), C.IMAGE_TYPE)
        bag.add_topic(C.GT_OBJECTS_TOPIC, C.INSTANCE_ARRAY_TYPE)

        first = plan.stamps_ns[0]
        bag.write(C.TF_STATIC_TOPIC, first, L.tf_message(
            L.TransformData(C.BASE_FRAME, C.optical_frame(cam), first, base_from_cam)
            for cam, base_from_cam in zip(rig.names, rig.base_from_camera, strict=True)))
        for step, views in enumerate(iter_steps(plan)):
            stamp = plan.stamps_ns[step]
            if spec.has_tf((stamp - first) / 1e9):
                bag.write(C.TF_TOPIC, stamp, L.tf_message(
                    [L.TransformData(C.WORLD_FRAME, C.BASE_FRAME, stamp, plan.world_from_base[step])]))
            for view in views:
                header = Header(stamp, C.optical_frame(view.camera))
                bag.write(C.camera_info_topic(view.camera), stamp,
                          L.camera_info(header, view.intrinsics, rig.width, rig.height))
                bag.write(C.image_topic(view.camera), stamp, L.rgb_image(header, view.rgb))
                bag.write(C.gt_instances_topic(view.camera), stamp, L.instance_image(header, view.instance_ids))
                bag.write(C.gt_depth_topic(view.camera), stamp, L.depth_image(header, view.depth))
            pixels = visibility.update(views)
            bag.write(C.GT_OBJECTS_TOPIC, stamp, L.instance_array(
                Header(stamp, C.WORLD_FRAME), ground_truth_objects(plan.scene, visibility, pixels)))
    return SampleBagSummary(Path(out), list(rig.names), dict(bag.counts), first, plan.stamps_ns[-1])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", metavar="OUT", help="bag directory to create (metadata.yaml + data file)")
    parser.add_argument("--scene", type=int, default=0, metavar="SEED", help="scene seed (default 0)")
    parser.add_argument("--cameras", type=int, default=1, metavar="N", help="cameras on the rig (default 1)")
    parser.add_argument("--frames", type=int, default=60, metavar="N", help="time steps (default 60)")
    parser.add_argument("--storage", choices=tuple(STORAGES), default="mcap", help="bag storage (default mcap)")
    parser.add_argument("--trajectory", choices=TRAJECTORIES, default="orbit", help="camera path (default orbit)")
    parser.add_argument("--width", type=int, default=504, help="image width (default 504)")
    parser.add_argument("--height", type=int, default=336, help="image height (default 336)")
    parser.add_argument("--rate", type=float, default=10.0, metavar="HZ", help="frame rate (default 10)")
    parser.add_argument("--objects", type=int, default=None, metavar="N", help="objects in the scene (default: seed)")
    parser.add_argument("--tf-start", type=float, default=0.0, metavar="S",
                        help="leave /tf out for the first S seconds (TF arriving after the first images)")
    parser.add_argument("--tf-gap", type=float, nargs=2, action="append", default=[], metavar=("START", "DURATION"),
                        help="leave /tf out from START for DURATION seconds after the first image (repeatable)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it is an existing bag")


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists():
        if not args.overwrite:
            print(f"make-sample-bag: {out} already exists; pass --overwrite or choose another path", file=sys.stderr)
            return 2
        if not (out / "metadata.yaml").exists():
            print(f"make-sample-bag: refusing to overwrite {out}: it is not a rosbag2 directory", file=sys.stderr)
            return 2
        shutil.rmtree(out)
    spec = SampleBagSpec(seed=args.scene, cameras=args.cameras, frames=args.frames, storage=args.storage,
                         trajectory=args.trajectory, width=args.width, height=args.height, rate_hz=args.rate,
                         num_objects=args.objects, tf_start_s=args.tf_start,
                         tf_gaps=tuple((start, duration) for start, duration in args.tf_gap))
    started = time.monotonic()
    try:
        summary = write_sample_bag(out, spec)
    except ValueError as exc:
        print(f"make-sample-bag: {exc}", file=sys.stderr)
        return 2
    took = time.monotonic() - started
    print(f"wrote {summary.path} ({spec.storage}): {spec.frames} frames x {len(summary.cameras)} camera(s) "
          f"[{', '.join(summary.cameras)}] at {spec.width}x{spec.height}, scene {spec.seed}, "
          f"{spec.trajectory} trajectory, in {took:.1f} s")
    for topic, count in summary.counts.items():
        print(f"  {topic:<32} {count}")
    return 0
