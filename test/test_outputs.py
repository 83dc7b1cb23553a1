"""The output adapter: WindowResult -> topics and layout data, through rosbags CDR and back."""

from __future__ import annotations

import numpy as np

from iggt_ros.bag.convert import to_rosbags
from iggt_ros.bag.typestore import typestore
from iggt_ros.config import PublishConfig
from iggt_ros.engine.preprocess import resize_nearest
from iggt_ros.messages import layouts as L
from iggt_ros.messages.message import stamp_ns
from iggt_ros.messages.outputs import OutputAdapter, OutputTopics
from iggt_ros.perception.object_map import ObjectInstance
from iggt_ros.perception.pipeline import ViewInfo, WindowResult, pack_cloud
from iggt_ros.perception.records import InstanceRecord, TrackState, instance_record

H, W = 28, 56  # model resolution
SRC = (42, 84)  # source image (height, width)


def round_trip(data):
    store = typestore()
    raw = store.serialize_cdr(to_rosbags(data, store), data.typename)
    return store.deserialize_cdr(raw, data.typename)


def instance(i: int, state: TrackState = TrackState.CONFIRMED) -> ObjectInstance:
    c = np.array([float(i), 0.5, 0.25])
    return ObjectInstance(id=i, state=state, centroid=c, box_center=c + 0.01, box_size=np.array([0.2, 0.3, 0.4]),
                          box_yaw=0.3, num_points=100 + i, views_seen=3, windows_seen=2, first_seen_ns=10,
                          last_seen_ns=20, label="red cube" if i == 1 else "", score=0.5)


def make_result(index: int, ids: list[int], states: dict[int, TrackState] | None = None,
                new: tuple[bool, ...] = (True, True), stamp: int = 5_000_000_000) -> WindowResult:
    states = states or {}
    views = [ViewInfo("front", stamp - 100_000_000, "front_optical_frame", new[0]),
             ViewInfo("front", stamp, "front_optical_frame", new[1])]
    inst_images = np.zeros((2, H, W), np.uint16)
    for k, i in enumerate(ids):
        inst_images[:, :, k * 8:(k + 1) * 8] = i
    depth = np.linspace(1, 2, 2 * H * W, dtype=np.float32).reshape(2, H, W)
    depth[0, 0, 0] = np.nan
    pts = np.arange(len(ids) * 4 * 3, dtype=np.float32).reshape(-1, 3)
    labels = np.repeat(np.array(ids, np.uint32), 4)
    cloud = pack_cloud(pts, np.full((len(pts), 3), 200, np.uint8), labels)
    return WindowResult(index, stamp, "odom", views, inst_images, depth, True, cloud,
                        [instance(i, states.get(i, TrackState.CONFIRMED)) for i in ids], None)


def by_topic(msgs):
    out = {}
    for m in msgs:
        out.setdefault(m.topic, []).append(m)
    return out


def test_topics_types_headers_and_field_values():
    adapter = OutputAdapter(PublishConfig(colorized_instance_images=True))
    msgs = adapter.messages(make_result(0, [1, 2]), {"front": SRC})
    topics = by_topic(msgs)
    expected = OutputTopics().all_topics(["front"], adapter.publish)
    assert set(topics) == set(expected)
    assert set(expected) == {"/iggt/points", "/iggt/instances", "/iggt/detections", "/iggt/markers",
                             "/iggt/instance_image/front", "/iggt/instance_image/front/colorized", "/iggt/depth/front"}
    for m in msgs:
        assert m.data.typename == expected[m.topic]

    cloud = round_trip(topics["/iggt/points"][0].data)
    assert cloud.header.frame_id == "odom" and stamp_ns(cloud.header.stamp) == 5_000_000_000
    pts = L.read_points(cloud)
    np.testing.assert_array_equal(pts["label"], np.repeat([1, 2], 4))

    inst = round_trip(topics["/iggt/instances"][0].data)
    assert [i.id for i in inst.instances] == [1, 2]
    assert inst.instances[0].label == "red cube" and inst.instances[0].point_count == 101
    assert inst.instances[0].state == L.STATE_CONFIRMED

    det = round_trip(topics["/iggt/detections"][0].data)
    assert [d.id for d in det.detections] == ["1", "2"]

    # two new views -> two images per image topic, each with its source header, at the source size
    images = topics["/iggt/instance_image/front"]
    assert [m.stamp_ns for m in images] == [4_900_000_000, 5_000_000_000]
    img = round_trip(images[1].data)
    assert (img.encoding, img.height, img.width) == ("16UC1", *SRC)
    assert img.header.frame_id == "front_optical_frame" and stamp_ns(img.header.stamp) == 5_000_000_000
    ids = np.frombuffer(img.data, np.uint16).reshape(SRC)
    assert set(np.unique(ids)) == {0, 1, 2}
    np.testing.assert_array_equal(ids, resize_nearest(make_result(0, [1, 2]).instance_images[1], SRC))
    depth = round_trip(topics["/iggt/depth/front"][0].data)
    assert (depth.encoding, depth.height, depth.width) == ("32FC1", *SRC)
    d = np.frombuffer(depth.data, np.float32).reshape(SRC)
    assert np.isnan(d[0, 0]) and np.nanmin(d) >= 1.0
    col = round_trip(topics["/iggt/instance_image/front/colorized"][0].data)
    assert col.encoding == "rgb8" and (col.height, col.width) == SRC


def test_only_new_views_are_published_and_unknown_sizes_stay_at_model_resolution():
    adapter = OutputAdapter()
    msgs = adapter.messages(make_result(1, [1], new=(False, True)))
    images = by_topic(msgs)["/iggt/instance_image/front"]
    assert len(images) == 1 and images[0].stamp_ns == 5_000_000_000
    assert round_trip(images[0].data).height == H


def test_markers_delete_lost_and_removed_instances_once():
    adapter = OutputAdapter()
    adapter.messages(make_result(0, [1, 2, 3]), {"front": SRC})
    # 2 is lost now, 3 disappeared from the map
    msgs = by_topic(adapter.messages(make_result(1, [1, 2], {2: TrackState.LOST}), {"front": SRC}))
    markers = round_trip(msgs["/iggt/markers"][0].data).markers
    deletes = sorted((m.ns, m.id) for m in markers if m.action == L.MARKER_DELETE)
    adds = sorted((m.ns, m.id) for m in markers if m.action == L.MARKER_ADD)
    assert deletes == sorted((ns, i) for ns in (L.BOX_NAMESPACE, L.LABEL_NAMESPACE) for i in (2, 3))
    assert adds == [(L.BOX_NAMESPACE, 1), (L.LABEL_NAMESPACE, 1)]
    # 3 is not deleted again, nor 2 (deleted while lost, now gone); a removed ID passed by the caller is
    msgs = by_topic(adapter.messages(make_result(2, [1]), {"front": SRC}, removed_ids=[7]))
    markers = round_trip(msgs["/iggt/markers"][0].data).markers
    assert sorted({m.id for m in markers if m.action == L.MARKER_DELETE}) == [7]
    # detections leave lost instances out, InstanceArray keeps them
    msgs = by_topic(adapter.messages(make_result(3, [1, 2], {2: TrackState.LOST})))
    assert [d.id for d in round_trip(msgs["/iggt/detections"][0].data).detections] == ["1"]
    states = [i.state for i in round_trip(msgs["/iggt/instances"][0].data).instances]
    assert states == [L.STATE_CONFIRMED, L.STATE_LOST]


def test_publish_flags_apply_on_the_next_call():
    publish = PublishConfig()
    adapter = OutputAdapter(publish, OutputTopics("/robot/iggt"))
    assert "/robot/iggt/points" in by_topic(adapter.messages(make_result(0, [1])))
    publish.points = publish.depth = publish.markers = publish.detections = publish.instance_images = False
    topics = set(by_topic(adapter.messages(make_result(1, [1]))))
    assert topics == {"/robot/iggt/instances"}
    assert set(OutputTopics("/robot/iggt").all_topics(["front"], publish)) == topics


def test_one_record_of_a_map_instance_for_messages_and_queries():
    inst = instance(4, TrackState.LOST)
    vec = np.array([0.6, 0.8])
    rec = instance_record(inst, vec)
    assert isinstance(rec, L.InstanceRecord) and isinstance(rec, InstanceRecord)
    assert (rec.id, rec.state, rec.point_count, rec.views_seen) == (4, L.STATE_LOST, 104, 3)
    assert (rec.first_seen_ns, rec.last_seen_ns, rec.box_yaw) == (10, 20, 0.3)
    np.testing.assert_array_equal(rec.box_center, inst.box_center)
    assert rec.embedding is vec
    assert [instance_record(instance(5, s)).state for s in TrackState] == [
        L.STATE_TENTATIVE, L.STATE_CONFIRMED, L.STATE_LOST]
