"""Standard ROS paths against the package's fallbacks: same input, same output.

On a ROS installation the node uses message_filters, cv_bridge, tf2_ros and (for users' tools)
sensor_msgs_py; elsewhere the package's own equivalents. These tests feed both the same data and
compare. They skip where the standard packages are missing (they run in the ROS CI workflow), and
the launch file is checked where launch_ros exists.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from test_launch import _launch_module

from iggt_ros.messages import layouts as L
from iggt_ros.messages.message import Header, MessageData
from iggt_ros.perception.frames import CameraFrame
from iggt_ros.perception.window import ApproximateTimeSynchronizer


def _rclpy_msg(data: MessageData):
    pytest.importorskip("rclpy")
    from iggt_ros.ros.convert import to_rclpy

    return to_rclpy(data)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "mono8", "mono16", "16UC1", "bgra8", "yuv422", "yuv422_yuy2",
                                      "uyvy", "yuyv"])
def test_cv_bridge_and_numpy_decoders_agree(encoding):
    pytest.importorskip("cv_bridge")
    from iggt_ros.ros.camera_input import CvBridgeImageDecoder, NumpyImageDecoder

    rng = np.random.default_rng(3)
    channels = {"rgb8": 3, "bgr8": 3, "bgra8": 4, "yuv422": 2, "yuv422_yuy2": 2, "uyvy": 2, "yuyv": 2}.get(encoding, 1)
    dtype = "<u2" if encoding in ("mono16", "16UC1") else "u1"
    high = 65535 if dtype == "<u2" else 255
    shape = (12, 20) if channels == 1 else (12, 20, channels)
    pixels = rng.integers(0, high, shape).astype(dtype)
    msg = _rclpy_msg(L._image(Header(1, "cam"), pixels, encoding, channels, dtype))
    ours = NumpyImageDecoder().image(msg, "/cam/image_raw")
    theirs = CvBridgeImageDecoder().image(msg, "/cam/image_raw")
    np.testing.assert_array_equal(theirs, ours)


def test_cv_bridge_and_numpy_decode_png_identically():
    pytest.importorskip("cv_bridge")
    import io

    from PIL import Image

    from iggt_ros.ros.camera_input import CvBridgeImageDecoder, NumpyImageDecoder

    rgb = np.random.default_rng(4).integers(0, 255, (16, 24, 3)).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    msg = _rclpy_msg(MessageData("sensor_msgs/msg/CompressedImage", {
        "header": Header(1, "cam").to_plain(), "format": "png", "data": np.frombuffer(buf.getvalue(), np.uint8)}))
    np.testing.assert_array_equal(NumpyImageDecoder().compressed(msg, "t"), rgb)
    np.testing.assert_array_equal(CvBridgeImageDecoder().compressed(msg, "t"), rgb)


def test_message_filters_and_package_synchroniser_group_the_same_frames():
    message_filters = pytest.importorskip("message_filters")
    from builtin_interfaces.msg import Time  # message_filters reads stamps with rclpy's Time.from_msg

    rng = np.random.default_rng(5)
    cameras = ["left", "right", "rear"]
    base = 1_700_000_000 * 10**9
    events = []
    for step in range(40):
        for cam in cameras:
            jitter = int(rng.integers(-15, 15)) * 10**6
            if rng.random() < 0.1:
                continue  # a lost frame
            events.append((cam, base + step * 100 * 10**6 + jitter))
    order = rng.permutation(len(events))
    events = [events[i] for i in order[np.argsort([events[i][1] for i in order], kind="stable")]]

    class Source(message_filters.SimpleFilter):
        pass

    sources = {cam: Source() for cam in cameras}
    theirs: list[tuple[int, ...]] = []
    sync = message_filters.ApproximateTimeSynchronizer([sources[c] for c in cameras], 10, 0.05)
    sync.registerCallback(lambda *msgs: theirs.append(tuple(m.stamp_ns for m in msgs)))
    ours_sync = ApproximateTimeSynchronizer(cameras, 10, 0.05)
    ours: list[tuple[int, ...]] = []
    for cam, stamp in events:
        sec, nsec = divmod(stamp, 10**9)
        msg = SimpleNamespace(header=SimpleNamespace(stamp=Time(sec=sec, nanosec=nsec)), stamp_ns=stamp)
        sources[cam].signalMessage(msg)
        fs = ours_sync.add(CameraFrame(cam, stamp, np.zeros((1, 1, 3), np.uint8)))
        if fs is not None:
            ours.append(tuple(fs.frames[c].stamp_ns for c in cameras))
    assert ours, "the stream must produce synchronised sets"
    assert ours == theirs


def test_tf2_ros_buffer_and_package_buffer_agree():
    pytest.importorskip("tf2_ros")
    import tf2_ros
    from rclpy.duration import Duration
    from rclpy.time import Time

    from iggt_ros.messages.tf_buffer import TransformBuffer
    from iggt_ros.ros.convert import to_rclpy
    from iggt_ros.spatial import transform_from

    rng = np.random.default_rng(6)
    theirs = tf2_ros.Buffer(cache_time=Duration(seconds=10))
    ours = TransformBuffer()
    base = 1_700_000_000 * 10**9

    def random_pose(scale: float) -> np.ndarray:
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        return transform_from(rng.normal(scale=scale, size=3), q)

    static = L.TransformData("base_link", "cam_optical", base, random_pose(0.3))
    theirs.set_transform_static(to_rclpy(MessageData("geometry_msgs/msg/TransformStamped",
                                                     L.transform_stamped(static))), "test")
    ours.set_transform(static.parent, static.child, static.stamp_ns, static.matrix, static=True)
    for i in range(5):
        t = L.TransformData("odom", "base_link", base + i * 10**8, random_pose(1.0))
        theirs.set_transform(to_rclpy(MessageData("geometry_msgs/msg/TransformStamped", L.transform_stamped(t))),
                             "test")
        ours.set_transform(t.parent, t.child, t.stamp_ns, t.matrix)
    for stamp in (base, base + 5 * 10**7, base + 3 * 10**8 + 12345):
        tf = theirs.lookup_transform("odom", "cam_optical", Time(nanoseconds=stamp)).transform
        m = transform_from((tf.translation.x, tf.translation.y, tf.translation.z),
                           (tf.rotation.x, tf.rotation.y, tf.rotation.z, tf.rotation.w))
        np.testing.assert_allclose(ours.lookup("odom", "cam_optical", stamp), m, atol=1e-6)


def test_sensor_msgs_py_reads_the_cloud_layout():
    point_cloud2 = pytest.importorskip("sensor_msgs_py.point_cloud2")
    pts = np.random.default_rng(7).normal(size=(50, 3)).astype(np.float32)
    labels = np.arange(50, dtype=np.uint32) % 4
    msg = _rclpy_msg(L.point_cloud(Header(1, "odom"), pts, np.zeros((50, 3), np.uint8), labels))
    read = point_cloud2.read_points(msg, field_names=("x", "y", "z", "label"))
    np.testing.assert_allclose(np.stack([read["x"], read["y"], read["z"]], axis=-1), pts)
    np.testing.assert_array_equal(read["label"], labels)




def test_launch_file_declares_its_arguments_and_a_lifecycle_node():
    module = _launch_module()
    from launch import LaunchContext
    from launch.actions import DeclareLaunchArgument, OpaqueFunction
    from launch_ros.actions import LifecycleNode

    ld = module.generate_launch_description()
    names = {a.name for a in ld.entities if isinstance(a, DeclareLaunchArgument)}
    assert {"config", "checkpoint", "engine_backend", "engine_path", "namespace", "camera_remaps",
            "use_sim_time", "autostart", "rviz"} <= names
    context = LaunchContext()
    for arg in ld.entities:
        if isinstance(arg, DeclareLaunchArgument):
            context.launch_configurations[arg.name] = arg.default_value[0].perform(context)
    context.launch_configurations["camera_remaps"] = "camera/image_raw=/cam/color/image_raw"
    opaque = next(a for a in ld.entities if isinstance(a, OpaqueFunction))
    actions = opaque.execute(context)
    nodes = [a for a in actions if isinstance(a, LifecycleNode)]
    assert len(nodes) == 1
    assert module.parse_remaps("a=b, c=d") == [("a", "b"), ("c", "d")]
    with pytest.raises(ValueError, match="FROM=TO"):
        module.parse_remaps("a")
