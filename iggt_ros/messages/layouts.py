"""Every message iggt_ros writes, described once as plain data (`iggt_ros.messages.message`).

The node converts these with `iggt_ros.ros.convert.to_rclpy`, the replay and the sample-bag writer
with `iggt_ros.bag.convert.to_rosbags`; both read the same description, so a topic looks byte for
byte the same whether it came from the robot or from a replay. Inputs are plain numpy arrays and
the small dataclasses below, so the perception core does not depend on message types.

Layout decisions that users rely on (the ROS interface in the README):
- PointCloud2: one row (height 1), little-endian fields x, y, z (float32), rgb (float32 holding
  0x00RRGGBB, RViz's RGB8 transformer), label (uint32 instance ID, 0 = none); 20 bytes a point.
- Instance images: 16UC1, 0 = no instance; depth: 32FC1 metres; both keep the source header.
- Markers: a CUBE in namespace ``instance_boxes`` and a TEXT_VIEW_FACING in ``instance_labels``,
  marker id = instance ID, so RViz updates them in place; lost or removed instances get DELETE.
- Detection3D.id is the instance ID as a decimal string.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from iggt_ros.messages.message import Header, MessageData, stamp_ns, time_plain
from iggt_ros.palette import instance_colors
from iggt_ros.perception.records import (  # noqa: F401  (state codes re-exported for the layouts' users)
    STATE_CONFIRMED,
    STATE_LOST,
    STATE_TENTATIVE,
    InstanceRecord,
)
from iggt_ros.spatial import quaternion_from_matrix, yaw_quaternion

# sensor_msgs/PointField datatypes
POINTFIELD_UINT32 = 6
POINTFIELD_FLOAT32 = 7

# visualization_msgs/Marker types and actions
MARKER_CUBE = 1
MARKER_TEXT_VIEW_FACING = 9
MARKER_ADD = 0
MARKER_DELETE = 2

BOX_NAMESPACE = "instance_boxes"
LABEL_NAMESPACE = "instance_labels"
TEXT_HEIGHT_M = 0.08

POINT_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<f4"), ("label", "<u4")])
"""One point of /iggt/points, in the order and with the offsets of its PointField list."""


@dataclass
class TransformData:
    """One stamped transform: the pose of `child` in `parent` as a 4x4 `parent_from_child`."""

    parent: str
    child: str
    stamp_ns: int
    matrix: np.ndarray


# ---------------------------------------------------------------------------------------------
# point cloud


def pack_rgb(colors: np.ndarray) -> np.ndarray:
    """[N] float32 whose bits are 0x00RRGGBB of [N,3] uint8 colours (PCL/RViz packed rgb)."""
    c = np.asarray(colors, dtype=np.uint32)
    packed = (c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]
    return packed.astype("<u4").view("<f4")


def unpack_rgb(rgb: np.ndarray) -> np.ndarray:
    """[N,3] uint8 colours of packed-rgb float32 values (the inverse of `pack_rgb`)."""
    bits = np.ascontiguousarray(rgb, dtype="<f4").view("<u4")
    return np.stack([(bits >> 16) & 0xFF, (bits >> 8) & 0xFF, bits & 0xFF], axis=-1).astype(np.uint8)


def pack_points(points: np.ndarray, colors: np.ndarray | None = None, labels: np.ndarray | None = None) -> np.ndarray:
    """[N] structured array of POINT_DTYPE from [N,3] xyz, optional [N,3] uint8 rgb and [N] IDs."""
    pts = np.asarray(points, dtype=np.float32).reshape(-1, 3)
    n = len(pts)
    out = np.zeros(n, dtype=POINT_DTYPE)
    out["x"], out["y"], out["z"] = pts[:, 0], pts[:, 1], pts[:, 2]
    if colors is not None:
        cols = np.asarray(colors).reshape(-1, 3)
        if len(cols) != n:
            raise ValueError(f"point cloud has {n} points but {len(cols)} colours")
        out["rgb"] = pack_rgb(cols)
    if labels is not None:
        lab = np.asarray(labels).reshape(-1)
        if len(lab) != n:
            raise ValueError(f"point cloud has {n} points but {len(lab)} labels")
        if n and lab.min() < 0:
            raise ValueError("instance labels must be >= 0")
        out["label"] = lab
    return out


def point_cloud(header: Header, points: np.ndarray, colors: np.ndarray | None = None,
                labels: np.ndarray | None = None) -> MessageData:
    """sensor_msgs/PointCloud2 of /iggt/points (x, y, z, rgb, label), one unordered row."""
    cloud = points if points.dtype == POINT_DTYPE else pack_points(points, colors, labels)
    n = int(cloud.shape[0])
    xyz_finite = bool(np.isfinite(cloud["x"]).all() and np.isfinite(cloud["y"]).all()
                      and np.isfinite(cloud["z"]).all())
    fields = []
    for name in POINT_DTYPE.names:
        dtype, offset = POINT_DTYPE.fields[name][:2]
        datatype = POINTFIELD_UINT32 if dtype.kind == "u" else POINTFIELD_FLOAT32
        fields.append({"name": name, "offset": offset, "datatype": datatype, "count": 1})
    return MessageData("sensor_msgs/msg/PointCloud2", {
        "header": header.to_plain(),
        "height": 1,
        "width": n,
        "fields": fields,
        "is_bigendian": False,
        "point_step": POINT_DTYPE.itemsize,
        "row_step": POINT_DTYPE.itemsize * n,
        "data": np.ascontiguousarray(cloud).view(np.uint8).reshape(-1),
        "is_dense": xyz_finite,
    })


def read_points(msg: Any) -> np.ndarray:
    """[N] POINT_DTYPE array of a received PointCloud2 (rclpy or rosbags) in the layout above."""
    names = [f.name for f in msg.fields]
    offsets = [int(f.offset) for f in msg.fields]
    expected = list(POINT_DTYPE.names)
    if names != expected or offsets != [POINT_DTYPE.fields[n][1] for n in expected]:
        raise ValueError(f"PointCloud2 fields {list(zip(names, offsets, strict=True))} are not the iggt layout")
    if int(msg.point_step) != POINT_DTYPE.itemsize or bool(msg.is_bigendian):
        raise ValueError(f"PointCloud2 point_step {msg.point_step} / big-endian {msg.is_bigendian} unsupported")
    raw = np.frombuffer(memoryview(msg.data), dtype=np.uint8)
    return raw.view(POINT_DTYPE).copy()


# ---------------------------------------------------------------------------------------------
# images


def _image(header: Header, array: np.ndarray, encoding: str, channels: int, dtype: str) -> MessageData:
    arr = np.ascontiguousarray(array, dtype=dtype)
    if arr.ndim != (2 if channels == 1 else 3) or (channels > 1 and arr.shape[2] != channels):
        raise ValueError(f"{encoding} image needs shape [H,W]{'' if channels == 1 else f'[{channels}]'}, "
                         f"got {list(np.shape(array))}")
    height, width = arr.shape[:2]
    return MessageData("sensor_msgs/msg/Image", {
        "header": header.to_plain(),
        "height": height,
        "width": width,
        "encoding": encoding,
        "is_bigendian": 0,
        "step": width * channels * arr.dtype.itemsize,
        "data": arr.view(np.uint8).reshape(-1),
    })


def rgb_image(header: Header, rgb: np.ndarray) -> MessageData:
    """sensor_msgs/Image rgb8 of an [H,W,3] uint8 image."""
    return _image(header, rgb, "rgb8", 3, "u1")


def instance_image(header: Header, ids: np.ndarray) -> MessageData:
    """sensor_msgs/Image 16UC1 of [H,W] instance IDs (0 = none); IDs above 65535 are refused."""
    arr = np.asarray(ids)
    if arr.size and (arr.min() < 0 or arr.max() > 0xFFFF):
        raise ValueError(f"instance IDs must be in 0..65535 for a 16UC1 image, got {arr.min()}..{arr.max()}")
    return _image(header, arr, "16UC1", 1, "<u2")


def depth_image(header: Header, depth: np.ndarray) -> MessageData:
    """sensor_msgs/Image 32FC1 of [H,W] depth in metres (NaN or 0 where unknown)."""
    return _image(header, depth, "32FC1", 1, "<f4")


def colorized_instance_image(header: Header, ids: np.ndarray) -> MessageData:
    """sensor_msgs/Image rgb8 of [H,W] instance IDs coloured with `instance_colors` (0 = black)."""
    ids = np.asarray(ids)
    if ids.size and ids.min() >= 0 and ids.max() <= 0xFFFF:
        colors = instance_colors(np.arange(int(ids.max()) + 1))[ids]  # a lookup table: IDs are few, pixels many
    else:
        colors = instance_colors(ids)
    return _image(header, colors, "rgb8", 3, "u1")


def camera_info(header: Header, intrinsics: np.ndarray, width: int, height: int) -> MessageData:
    """sensor_msgs/CameraInfo of an undistorted pinhole camera (plumb_bob with zero coefficients)."""
    k = np.asarray(intrinsics, dtype=np.float64).reshape(3, 3)
    p = np.zeros((3, 4))
    p[:, :3] = k
    return MessageData("sensor_msgs/msg/CameraInfo", {
        "header": header.to_plain(),
        "height": int(height),
        "width": int(width),
        "distortion_model": "plumb_bob",
        "d": np.zeros(5),
        "k": k.reshape(-1),
        "r": np.eye(3).reshape(-1),
        "p": p.reshape(-1),
    })


# ---------------------------------------------------------------------------------------------
# transforms


def _pose(position: np.ndarray, quaternion: np.ndarray) -> dict[str, Any]:
    x, y, z = (float(v) for v in np.asarray(position, dtype=np.float64).reshape(3))
    qx, qy, qz, qw = (float(v) for v in quaternion)
    return {"position": {"x": x, "y": y, "z": z}, "orientation": {"x": qx, "y": qy, "z": qz, "w": qw}}


def _vector(values: np.ndarray) -> dict[str, float]:
    x, y, z = (float(v) for v in np.asarray(values, dtype=np.float64).reshape(3))
    return {"x": x, "y": y, "z": z}


def transform_stamped(t: TransformData) -> dict[str, Any]:
    """geometry_msgs/TransformStamped fields of one transform."""
    m = np.asarray(t.matrix, dtype=np.float64)
    qx, qy, qz, qw = (float(v) for v in quaternion_from_matrix(m[:3, :3]))
    return {
        "header": Header(t.stamp_ns, t.parent).to_plain(),
        "child_frame_id": t.child,
        "transform": {"translation": _vector(m[:3, 3]), "rotation": {"x": qx, "y": qy, "z": qz, "w": qw}},
    }


def tf_message(transforms: Iterable[TransformData]) -> MessageData:
    """tf2_msgs/TFMessage (for /tf and /tf_static)."""
    return MessageData("tf2_msgs/msg/TFMessage", {"transforms": [transform_stamped(t) for t in transforms]})


# ---------------------------------------------------------------------------------------------
# instances


def _instance(header: Header, inst: InstanceRecord) -> dict[str, Any]:
    return {
        "header": header.to_plain(),
        "id": int(inst.id),
        "state": int(inst.state),
        "label": inst.label,
        "score": float(inst.score),
        "centroid": _vector(inst.centroid),
        "box_pose": _pose(inst.box_center, yaw_quaternion(inst.box_yaw)),
        "box_size": _vector(inst.box_size),
        "point_count": int(inst.point_count),
        "views_seen": int(inst.views_seen),
        "first_seen": time_plain(inst.first_seen_ns),
        "last_seen": time_plain(inst.last_seen_ns),
        "attributes": [{"key": str(k), "value": str(v)} for k, v in inst.attributes.items()],
    }


def instance_array(header: Header, instances: Sequence[InstanceRecord]) -> MessageData:
    """iggt_ros/InstanceArray of /iggt/instances (every tracked instance, whatever its state)."""
    return MessageData("iggt_ros/msg/InstanceArray", {
        "header": header.to_plain(),
        "instances": [_instance(header, inst) for inst in instances],
    })


def detection3d_array(header: Header, instances: Sequence[InstanceRecord], include_lost: bool = False) -> MessageData:
    """vision_msgs/Detection3DArray mirror of the instances (id = instance ID string).

    Lost instances are not current detections and are left out unless `include_lost`. Each detection
    carries one hypothesis: class_id = the instance label (empty when unknown) with its score, posed
    at the box centre.
    """
    detections = []
    for inst in instances:
        if inst.state == STATE_LOST and not include_lost:
            continue
        pose = _pose(inst.box_center, yaw_quaternion(inst.box_yaw))
        detections.append({
            "header": header.to_plain(),
            "results": [{
                "hypothesis": {"class_id": inst.label, "score": float(inst.score)},
                "pose": {"pose": pose, "covariance": np.zeros(36)},
            }],
            "bbox": {"center": pose, "size": _vector(inst.box_size)},
            "id": str(int(inst.id)),
        })
    return MessageData("vision_msgs/msg/Detection3DArray", {"header": header.to_plain(), "detections": detections})


def marker_array(header: Header, instances: Sequence[InstanceRecord], removed_ids: Iterable[int] = ()) -> MessageData:
    """visualization_msgs/MarkerArray of /iggt/markers: a box and a text per visible instance.

    Marker ids are the instance IDs in two fixed namespaces, so each publication updates the
    previous markers in place. Lost instances and `removed_ids` (tracks deleted since the last
    publication) get DELETE markers in both namespaces, so nothing stale stays in RViz.
    """
    markers: list[dict[str, Any]] = []
    deleted: list[int] = []
    for inst in instances:
        if inst.state == STATE_LOST:
            deleted.append(int(inst.id))
            continue
        r, g, b = (float(c) / 255.0 for c in instance_colors(np.array([inst.id]))[0])
        pose = _pose(inst.box_center, yaw_quaternion(inst.box_yaw))
        markers.append({
            "header": header.to_plain(), "ns": BOX_NAMESPACE, "id": int(inst.id), "type": MARKER_CUBE,
            "action": MARKER_ADD, "pose": pose, "scale": _vector(inst.box_size),
            "color": {"r": r, "g": g, "b": b, "a": 0.4},
        })
        top = np.asarray(inst.box_center, dtype=np.float64) + np.array([0.0, 0.0, float(inst.box_size[2]) / 2 + 0.05])
        markers.append({
            "header": header.to_plain(), "ns": LABEL_NAMESPACE, "id": int(inst.id), "type": MARKER_TEXT_VIEW_FACING,
            "action": MARKER_ADD, "pose": _pose(top, (0.0, 0.0, 0.0, 1.0)),
            "scale": {"x": 0.0, "y": 0.0, "z": TEXT_HEIGHT_M},
            "color": {"r": 1.0, "g": 1.0, "b": 1.0, "a": 1.0},
            "text": f"{inst.id} {inst.label}".strip(),
        })
    deleted.extend(int(i) for i in removed_ids)
    for inst_id in dict.fromkeys(deleted):
        for ns in (BOX_NAMESPACE, LABEL_NAMESPACE):
            markers.append({"header": header.to_plain(), "ns": ns, "id": inst_id, "action": MARKER_DELETE,
                            "pose": _pose((0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0))})
    return MessageData("visualization_msgs/msg/MarkerArray", {"markers": markers})


# ---------------------------------------------------------------------------------------------
# reading back


def read_instances(msg: Any) -> list[InstanceRecord]:
    """The instances of a received iggt_ros/InstanceArray (rclpy or rosbags), e.g. /gt/objects."""
    out = []
    for m in msg.instances:
        q = m.box_pose.orientation
        yaw = float(np.arctan2(2.0 * (q.w * q.z + q.x * q.y), 1.0 - 2.0 * (q.y * q.y + q.z * q.z)))
        p = m.box_pose.position
        out.append(InstanceRecord(
            id=int(m.id), centroid=np.array([m.centroid.x, m.centroid.y, m.centroid.z]),
            box_center=np.array([p.x, p.y, p.z]), box_size=np.array([m.box_size.x, m.box_size.y, m.box_size.z]),
            box_yaw=yaw, state=int(m.state), label=str(m.label), score=float(m.score),
            point_count=int(m.point_count), views_seen=int(m.views_seen), first_seen_ns=stamp_ns(m.first_seen),
            last_seen_ns=stamp_ns(m.last_seen), attributes={kv.key: kv.value for kv in m.attributes}))
    return out
