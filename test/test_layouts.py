"""Output layouts through rosbags CDR: serialise, deserialise, and check every field that users read."""

from __future__ import annotations

import numpy as np
import pytest

from iggt_ros.bag.convert import to_rosbags
from iggt_ros.bag.typestore import typestore
from iggt_ros.messages import layouts as L
from iggt_ros.messages.message import Header, stamp_ns
from iggt_ros.palette import instance_colors
from iggt_ros.spatial import matrix_from_quaternion, quaternion_from_matrix

MARKERS = "visualization_msgs/msg/MarkerArray"
HEADER = Header(1_700_000_123_456_789_012, "cam0_optical_frame")


def round_trip(data):
    store = typestore()
    raw = store.serialize_cdr(to_rosbags(data, store), data.typename)
    return store.deserialize_cdr(raw, data.typename)


def check_header(msg, header=HEADER):
    assert stamp_ns(msg.header.stamp) == header.stamp_ns
    assert msg.header.frame_id == header.frame_id


def sample_instances():
    return [
        L.InstanceRecord(id=3, centroid=np.array([1.0, 2.0, 0.5]), box_center=np.array([1.1, 2.0, 0.4]),
                       box_size=np.array([0.2, 0.3, 0.8]), box_yaw=0.5, label="red cube", score=0.9,
                       point_count=1234, views_seen=7, first_seen_ns=10**9, last_seen_ns=3 * 10**9 + 5,
                       attributes={"shape": "cube", "color": "red"}),
        L.InstanceRecord(id=12, centroid=np.zeros(3), box_center=np.array([-1.0, 0.0, 0.2]), box_size=np.ones(3) * 0.4,
                       state=L.STATE_LOST),
        L.InstanceRecord(id=40, centroid=np.ones(3), box_center=np.ones(3), box_size=np.ones(3) * 0.1,
                       state=L.STATE_TENTATIVE, score=0.2),
    ]


def test_point_cloud_fields_and_values_survive_cdr():
    rng = np.random.default_rng(1)
    xyz = rng.normal(size=(50, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, (50, 3), dtype=np.uint8)
    labels = rng.integers(0, 70000, 50).astype(np.uint32)
    msg = round_trip(L.point_cloud(HEADER, xyz, rgb, labels))
    check_header(msg)
    assert (msg.height, msg.width, msg.point_step, msg.row_step) == (1, 50, 20, 1000)
    assert not msg.is_bigendian and msg.is_dense
    assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == [
        ("x", 0, 7, 1), ("y", 4, 7, 1), ("z", 8, 7, 1), ("rgb", 12, 7, 1), ("label", 16, 6, 1)]
    pts = L.read_points(msg)
    np.testing.assert_array_equal(np.stack([pts["x"], pts["y"], pts["z"]], 1), xyz)
    np.testing.assert_array_equal(L.unpack_rgb(pts["rgb"]), rgb)
    np.testing.assert_array_equal(pts["label"], labels)
    # packed rgb is 0x00RRGGBB, the bit layout RViz's RGB8 transformer reads
    bits = pts["rgb"][:1].view(np.uint32)[0]
    assert bits == (int(rgb[0, 0]) << 16) | (int(rgb[0, 1]) << 8) | int(rgb[0, 2])


def test_point_cloud_with_nan_is_not_dense_and_empty_cloud_is_valid():
    xyz = np.array([[0, 0, 1], [np.nan, 0, 1]], np.float32)
    assert not round_trip(L.point_cloud(HEADER, xyz)).is_dense
    empty = round_trip(L.point_cloud(HEADER, np.zeros((0, 3), np.float32)))
    assert (empty.width, empty.row_step, len(empty.data)) == (0, 0, 0)
    with pytest.raises(ValueError, match="3 points but 2 labels"):
        L.point_cloud(HEADER, np.zeros((3, 3)), labels=np.zeros(2))


def test_instance_and_depth_images_keep_the_source_header_and_values():
    ids = np.array([[0, 1, 65535], [7, 7, 0]], dtype=np.uint32)
    msg = round_trip(L.instance_image(HEADER, ids))
    check_header(msg)
    assert (msg.encoding, msg.height, msg.width, msg.step, msg.is_bigendian) == ("16UC1", 2, 3, 6, 0)
    np.testing.assert_array_equal(np.frombuffer(msg.data, "<u2").reshape(2, 3), ids)
    with pytest.raises(ValueError, match="0..65535"):
        L.instance_image(HEADER, np.array([[70000]]))

    depth = np.array([[0.5, 1.25], [np.nan, 3.0]], np.float32)
    msg = round_trip(L.depth_image(HEADER, depth))
    assert (msg.encoding, msg.step) == ("32FC1", 8)
    np.testing.assert_array_equal(np.frombuffer(msg.data, "<f4").reshape(2, 2), depth)


def test_colorized_instance_image_uses_the_stable_palette():
    ids = np.array([[0, 5], [5, 9]])
    msg = round_trip(L.colorized_instance_image(HEADER, ids))
    assert (msg.encoding, msg.step) == ("rgb8", 6)
    img = np.frombuffer(msg.data, np.uint8).reshape(2, 2, 3)
    assert img[0, 0].tolist() == [0, 0, 0]
    np.testing.assert_array_equal(img[0, 1], img[1, 0])
    assert img[0, 1].tolist() != img[1, 1].tolist()
    np.testing.assert_array_equal(img[1, 1], instance_colors(np.array([9]))[0])


def test_palette_gives_distinct_colours_to_neighbouring_ids():
    colors = instance_colors(np.arange(1, 65)).astype(int)
    assert len({tuple(c) for c in colors}) == 64
    # consecutive IDs differ clearly (sum of channel differences)
    assert np.abs(np.diff(colors, axis=0)).sum(axis=1).min() > 60


def test_instance_array_carries_every_instance_field():
    instances = sample_instances()
    msg = round_trip(L.instance_array(HEADER, instances))
    check_header(msg)
    assert [m.id for m in msg.instances] == [3, 12, 40]
    assert [m.state for m in msg.instances] == [1, 2, 0]
    first = msg.instances[0]
    check_header(first)
    assert first.label == "red cube" and first.score == pytest.approx(0.9)
    assert (first.centroid.x, first.centroid.y, first.centroid.z) == (1.0, 2.0, 0.5)
    p, q = first.box_pose.position, first.box_pose.orientation
    assert (p.x, p.y, p.z) == (1.1, 2.0, 0.4)
    assert q.z == pytest.approx(np.sin(0.25)) and q.w == pytest.approx(np.cos(0.25))
    assert (first.box_size.x, first.box_size.y, first.box_size.z) == (0.2, 0.3, 0.8)
    assert (first.point_count, first.views_seen) == (1234, 7)
    assert stamp_ns(first.first_seen) == 10**9 and stamp_ns(first.last_seen) == 3 * 10**9 + 5
    assert [(kv.key, kv.value) for kv in first.attributes] == [("shape", "cube"), ("color", "red")]
    # an instance without a box rotation still has a valid unit quaternion
    assert msg.instances[1].box_pose.orientation.w == 1.0


def test_detection3d_array_mirrors_current_instances_with_string_ids():
    msg = round_trip(L.detection3d_array(HEADER, sample_instances()))
    check_header(msg)
    assert [d.id for d in msg.detections] == ["3", "40"]  # the lost instance is not a detection
    d = msg.detections[0]
    check_header(d)
    assert d.results[0].hypothesis.class_id == "red cube"
    assert d.results[0].hypothesis.score == pytest.approx(0.9)
    assert d.results[0].pose.pose.position.x == 1.1
    assert (d.bbox.center.position.x, d.bbox.size.z) == (1.1, 0.8)
    everything = round_trip(L.detection3d_array(HEADER, sample_instances(), include_lost=True))
    assert [d.id for d in everything.detections] == ["3", "12", "40"]


def test_markers_have_stable_namespace_ids_and_delete_lost_tracks():
    msg = round_trip(L.marker_array(HEADER, sample_instances(), removed_ids=[77]))
    adds = [(m.ns, m.id, m.type) for m in msg.markers if m.action == L.MARKER_ADD]
    deletes = [(m.ns, m.id) for m in msg.markers if m.action == L.MARKER_DELETE]
    assert adds == [(L.BOX_NAMESPACE, 3, L.MARKER_CUBE), (L.LABEL_NAMESPACE, 3, L.MARKER_TEXT_VIEW_FACING),
                    (L.BOX_NAMESPACE, 40, L.MARKER_CUBE), (L.LABEL_NAMESPACE, 40, L.MARKER_TEXT_VIEW_FACING)]
    assert sorted(deletes) == sorted([(ns, i) for i in (12, 77) for ns in (L.BOX_NAMESPACE, L.LABEL_NAMESPACE)])
    box, text = msg.markers[0], msg.markers[1]
    check_header(box)
    assert (box.scale.x, box.scale.y, box.scale.z) == (0.2, 0.3, 0.8)
    assert box.pose.position.z == 0.4 and 0 < box.color.a < 1
    assert text.text == "3 red cube"
    assert text.pose.position.z == pytest.approx(0.4 + 0.4 + 0.05)
    r, g, b = instance_colors(np.array([3]))[0] / 255.0
    assert (box.color.r, box.color.g, box.color.b) == pytest.approx((r, g, b))
    # the same input gives the same markers: RViz updates in place
    store = typestore()
    first, again = (bytes(store.serialize_cdr(to_rosbags(L.marker_array(HEADER, sample_instances())), MARKERS))
                    for _ in range(2))
    assert first == again


def test_camera_info_and_tf_layouts():
    k = np.array([[400.0, 0, 252], [0, 410.0, 168], [0, 0, 1]])
    msg = round_trip(L.camera_info(HEADER, k, 504, 336))
    check_header(msg)
    assert (msg.width, msg.height, msg.distortion_model) == (504, 336, "plumb_bob")
    np.testing.assert_array_equal(msg.k.reshape(3, 3), k)
    np.testing.assert_array_equal(msg.p.reshape(3, 4)[:, :3], k)
    assert msg.d.tolist() == [0.0] * 5

    rot = matrix_from_quaternion(np.array([0.1, -0.3, 0.2, 0.9]))
    pose = np.eye(4)
    pose[:3, :3], pose[:3, 3] = rot, [1.0, -2.0, 0.5]
    msg = round_trip(L.tf_message([L.TransformData("odom", "base_link", 42, pose)]))
    (t,) = msg.transforms
    assert (t.header.frame_id, t.child_frame_id, stamp_ns(t.header.stamp)) == ("odom", "base_link", 42)
    q = [t.transform.rotation.x, t.transform.rotation.y, t.transform.rotation.z, t.transform.rotation.w]
    np.testing.assert_allclose(matrix_from_quaternion(q), rot, atol=1e-12)
    assert (t.transform.translation.x, t.transform.translation.y) == (1.0, -2.0)


def test_quaternion_conversion_round_trips_all_branches():
    rng = np.random.default_rng(3)
    for q in [*rng.normal(size=(20, 4)), [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]:
        q = np.asarray(q, float) / np.linalg.norm(q)
        got = quaternion_from_matrix(matrix_from_quaternion(q))
        assert got[3] >= 0
        np.testing.assert_allclose(got, q if q[3] >= 0 else -q, atol=1e-12)


def test_rgb_image_layout_refuses_wrong_shapes():
    with pytest.raises(ValueError, match=r"rgb8 image needs shape \[H,W\]\[3\]"):
        L.rgb_image(HEADER, np.zeros((4, 4), np.uint8))
