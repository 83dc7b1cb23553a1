"""The TF buffer: chains through static and dynamic transforms, interpolation, and clear failures."""

from __future__ import annotations

import numpy as np
import pytest

from iggt_ros.bag.convert import to_rosbags
from iggt_ros.bag.typestore import typestore
from iggt_ros.messages import layouts as L
from iggt_ros.messages.tf_buffer import ExtrapolationError, FrameNotFound, NotConnected, TransformBuffer
from iggt_ros.spatial import invert, matrix_from_quaternion, yaw_quaternion

S = 1_000_000_000


def pose(yaw: float, t: tuple[float, float, float]) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = matrix_from_quaternion(yaw_quaternion(yaw))
    m[:3, 3] = t
    return m


# a camera optical frame on the base: z forward along base x, x right along base -y, y down along base -z
BASE_FROM_CAM = np.array([[0.0, 0, 1, 0.2], [-1, 0, 0, 0.0], [0, -1, 0, 0.5], [0, 0, 0, 1]])


def robot_buffer(**kwargs) -> TransformBuffer:
    buf = TransformBuffer(**kwargs)
    buf.set_transform("base_link", "cam0_optical_frame", 0, BASE_FROM_CAM, static=True)
    buf.set_transform("odom", "base_link", 1 * S, pose(0.0, (0.0, 0.0, 0.0)))
    buf.set_transform("odom", "base_link", 2 * S, pose(np.pi / 2, (2.0, 0.0, 0.0)))
    return buf


def test_chain_odom_base_camera_at_a_sample_stamp():
    buf = robot_buffer()
    got = buf.lookup("odom", "cam0_optical_frame", 2 * S)
    np.testing.assert_allclose(got, pose(np.pi / 2, (2.0, 0.0, 0.0)) @ BASE_FROM_CAM, atol=1e-12)
    # the inverse direction is the inverse transform
    np.testing.assert_allclose(buf.lookup("cam0_optical_frame", "odom", 2 * S), invert(got), atol=1e-12)
    assert buf.lookup("odom", "odom", 5) is not None and (buf.lookup("odom", "odom", 5) == np.eye(4)).all()


def test_interpolates_translation_linearly_and_rotation_by_slerp():
    buf = robot_buffer()
    mid = buf.lookup("odom", "base_link", 1 * S + S // 4)
    np.testing.assert_allclose(mid, pose(np.pi / 8, (0.5, 0.0, 0.0)), atol=1e-12)
    cam = buf.lookup("odom", "cam0_optical_frame", 1 * S + S // 2)
    np.testing.assert_allclose(cam, pose(np.pi / 4, (1.0, 0.0, 0.0)) @ BASE_FROM_CAM, atol=1e-12)


def test_lookup_between_siblings_goes_through_the_common_parent():
    buf = robot_buffer()
    base_from_cam1 = pose(np.pi, (-0.2, 0.0, 0.5)) @ BASE_FROM_CAM
    buf.set_transform("base_link", "cam1_optical_frame", 0, base_from_cam1, static=True)
    got = buf.lookup("cam0_optical_frame", "cam1_optical_frame", 1 * S + 123)
    np.testing.assert_allclose(got, invert(BASE_FROM_CAM) @ base_from_cam1, atol=1e-12)


def test_latest_common_time_when_no_stamp_is_given():
    buf = robot_buffer()
    buf.set_transform("odom", "other", 5 * S, pose(0.0, (0, 0, 0)))
    np.testing.assert_allclose(buf.lookup("odom", "cam0_optical_frame"),
                               pose(np.pi / 2, (2.0, 0.0, 0.0)) @ BASE_FROM_CAM, atol=1e-12)


def test_errors_name_frames_and_times():
    buf = robot_buffer()
    with pytest.raises(FrameNotFound, match="frame 'map' does not exist.*base_link, cam0_optical_frame, odom"):
        buf.lookup("map", "cam0_optical_frame", S)
    buf.set_transform("world", "robot2", S, np.eye(4))
    with pytest.raises(NotConnected, match="different TF trees"):
        buf.lookup("odom", "robot2", S)
    with pytest.raises(ExtrapolationError, match=r"'odom' -> 'base_link' is known from 1.000 s to 2.000 s; "
                                                 r"the requested time is 0.500 s after the newest"):
        buf.lookup("odom", "cam0_optical_frame", 2 * S + S // 2)
    with pytest.raises(ExtrapolationError, match="before the oldest"):
        buf.lookup("odom", "cam0_optical_frame", S // 2)
    assert not buf.can_transform("odom", "cam0_optical_frame", 3 * S)
    assert buf.can_transform("odom", "cam0_optical_frame", 2 * S)


def test_tolerance_holds_the_newest_sample_for_a_short_lag():
    buf = robot_buffer(tolerance_s=0.05)
    np.testing.assert_allclose(buf.lookup("odom", "base_link", 2 * S + 40_000_000), pose(np.pi / 2, (2, 0, 0)),
                               atol=1e-12)
    with pytest.raises(ExtrapolationError):
        buf.lookup("odom", "base_link", 2 * S + 60_000_000)


def test_cache_bounds_memory_and_ignores_data_older_than_the_cache():
    buf = TransformBuffer(cache_time_s=1.0)
    for i in range(100):
        buf.set_transform("odom", "base_link", i * S // 10, pose(0.0, (i, 0, 0)))
    assert len(buf._edges["base_link"].stamps) == 11  # 8.9 s .. 9.9 s
    with pytest.raises(ExtrapolationError, match="before the oldest"):
        buf.lookup("odom", "base_link", 5 * S)
    # a looped bag sends old stamps again: ignored and counted until the buffer is cleared
    assert not buf.set_transform("odom", "base_link", 0, np.eye(4))
    assert buf.dropped_old == 1
    buf.clear()
    assert buf.set_transform("odom", "base_link", 0, np.eye(4))
    assert buf.dropped_old == 0


def test_clear_keeps_static_transforms_unless_asked():
    buf = robot_buffer()
    buf.clear()
    assert buf.frames == {"base_link", "cam0_optical_frame"}
    buf.clear(dynamic_only=False)
    assert buf.frames == set()


def test_reads_tf_messages():
    store = typestore()
    msgs = [L.tf_message([L.TransformData("odom", "base_link", t * S, pose(0.1 * t, (t, 0, 0)))]) for t in (1, 2)]
    static = L.tf_message([L.TransformData("base_link", "cam0_optical_frame", 0, BASE_FROM_CAM)])
    buf = TransformBuffer()
    for data, is_static in [(msgs[0], False), (msgs[1], False), (static, True)]:
        msg = store.deserialize_cdr(store.serialize_cdr(to_rosbags(data), data.typename), data.typename)
        assert buf.add_message(msg, static=is_static) == 1
    np.testing.assert_allclose(buf.lookup("odom", "cam0_optical_frame", 2 * S), pose(0.2, (2, 0, 0)) @ BASE_FROM_CAM,
                               atol=1e-9)
