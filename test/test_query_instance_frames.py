"""Per-instance TF frames: one per confirmed instance while it is in the map, none when switched off."""

from __future__ import annotations

import dataclasses

import numpy as np

from iggt_ros.config import PublishConfig
from iggt_ros.messages.message import Header
from iggt_ros.messages.outputs import instance_frames
from iggt_ros.perception.records import STATE_CONFIRMED, STATE_LOST, STATE_TENTATIVE, InstanceRecord

H = Header(3_000_000_000, "odom")


def rec(iid: int, x: float, state: int = STATE_CONFIRMED) -> InstanceRecord:
    c = np.array([x, 0.5, 0.2])
    return InstanceRecord(id=iid, centroid=c, box_center=c, box_size=np.array([0.3, 0.3, 0.4]), box_yaw=0.4,
                          state=state)


def children(msg) -> dict[str, dict]:
    return {t["child_frame_id"]: t for t in msg.fields["transforms"]}


def test_frames_follow_the_confirmed_instances():
    first = children(instance_frames(H, [rec(1, 0.0), rec(2, 1.0, STATE_TENTATIVE)]))
    assert set(first) == {"iggt/instance_1"}  # tentative instances get no frame yet
    t = first["iggt/instance_1"]
    assert t["header"]["frame_id"] == "odom" and t["header"]["stamp"] == {"sec": 3, "nanosec": 0}
    assert t["transform"]["translation"] == {"x": 0.0, "y": 0.5, "z": 0.2}
    q = t["transform"]["rotation"]
    assert np.isclose(2 * np.arctan2(q["z"], q["w"]), 0.4) and (q["x"], q["y"]) == (0.0, 0.0)
    later = children(instance_frames(H, [rec(2, 1.0), dataclasses.replace(rec(1, 0.0), state=STATE_LOST)]))
    assert set(later) == {"iggt/instance_2"}  # instance 1 is lost: its frame is no longer sent
    assert children(instance_frames(H, [])) == {}


def test_the_adapter_sends_frames_only_when_asked():
    from test_outputs import make_result

    from iggt_ros.messages.outputs import OutputAdapter, OutputTopics
    from iggt_ros.perception.records import TrackState

    assert PublishConfig().instance_frames is False
    assert "/tf" not in OutputTopics().all_topics(["cam"], PublishConfig())
    assert OutputTopics().all_topics(["cam"], PublishConfig(instance_frames=True))["/tf"] == "tf2_msgs/msg/TFMessage"
    assert not [m for m in OutputAdapter(PublishConfig()).messages(make_result(0, [1, 2])) if m.topic == "/tf"]
    adapter = OutputAdapter(PublishConfig(instance_frames=True))
    tf = [m for m in adapter.messages(make_result(0, [1, 2])) if m.topic == "/tf"]
    assert len(tf) == 1 and set(children(tf[0].data)) == {"iggt/instance_1", "iggt/instance_2"}
    tf = [m for m in adapter.messages(make_result(1, [2, 3], {3: TrackState.LOST})) if m.topic == "/tf"]
    assert set(children(tf[0].data)) == {"iggt/instance_2"}  # 1 left the map, 3 is lost
