"""Saved maps over DDS: save, stop the node, start a new one with mapping.map_file, and the map comes back.

The node runs in-process with the oracle engine on the synthetic orbit of `test_node` (cameras and TF
published by another node, lifecycle and services called over DDS). Checked: the same IDs and boxes
(within 1 cm) after the restart, re-identification of saved objects in the first window, new IDs after
the largest saved one, refusals of names that leave the map directory and of a corrupted file with the
running map kept, and the map's size on /diagnostics.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from test_node import Harness, HeldEngine, base_params, input_path, oracle, read_image, truth_by_key, wait_for

from iggt_ros.messages.message import stamp_ns

__all__ = ["input_path"]  # the fixture: every behaviour test runs on both input paths


def published_ids_of_objects(h: Harness) -> dict[int, int]:
    """True object -> the ID covering most of its pixels over every published instance image."""
    truth = truth_by_key()
    votes: dict[int, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for cam in h.cameras:
        for msg in h.messages(f"/iggt/instance_image/{cam}"):
            pred = read_image(msg)
            gt = truth[(cam, stamp_ns(msg.header.stamp))].instance_ids
            for obj in np.unique(gt[gt > 0]).tolist():
                ids, counts = np.unique(pred[gt == obj], return_counts=True)
                for i, c in zip(ids.tolist(), counts.tolist(), strict=True):
                    if i:
                        votes[obj][i] += c
    return {obj: max(v, key=v.get) for obj, v in votes.items() if v}


def boxes(msg) -> dict[int, tuple[np.ndarray, np.ndarray, int]]:
    return {int(i.id): (np.array([i.box_pose.position.x, i.box_pose.position.y, i.box_pose.position.z]),
                        np.array([i.box_size.x, i.box_size.y, i.box_size.z]), int(i.state)) for i in msg.instances}


def start(h: Harness, steps, configured=None) -> None:
    from lifecycle_msgs.msg import Transition

    assert h.change_state(Transition.TRANSITION_CONFIGURE)
    if configured is not None:
        configured()
    assert h.change_state(Transition.TRANSITION_ACTIVATE)
    h.publish_static_tf()
    for step in steps:
        h.play(step)


def test_save_restart_load_keeps_ids_and_boxes_and_reidentifies(rclpy_context, tmp_path, input_path):
    from iggt_ros.srv import LoadMap, SaveMap

    maps = tmp_path / "maps"
    params = base_params(**{"mapping.map_directory": str(maps)})
    first = Harness(rclpy_context, params, HeldEngine(oracle()))
    try:
        start(first, range(14))  # windows end at steps 4, 6, ..., 14
        wait_for(lambda: first.node.worker.processed >= 6, 120.0, "six processed windows")
        wait_for(lambda: len(first.messages("/iggt/instances")) >= 6, 20.0, "six instance arrays")
        save = first.service(SaveMap, "/iggt/save_map")
        reply = first.call(save, SaveMap.Request(name="lab"), 30.0)
        assert reply.success, reply.message
        for bad in ("../lab", "/tmp/lab", "a/b", ".."):
            refused = first.call(save, SaveMap.Request(name=bad), 10.0)
            assert not refused.success and "refused" in refused.message
        saved = boxes(first.messages("/iggt/instances")[-1])
        object_ids = published_ids_of_objects(first)
        assert len(saved) >= 2 and object_ids, (saved, object_ids)
    finally:
        first.close()
    assert sorted(p.name for p in maps.iterdir()) == ["lab.npz"], "only the named map, in the map directory"

    second = Harness(rclpy_context, dict(params, **{"mapping.map_file": "lab"}), HeldEngine(oracle()))
    try:
        node = second.node

        def loaded_at_configure() -> None:
            loaded = {i.id: i for i in node.pipeline.snapshot().instances}
            assert set(loaded) == set(saved)
            for i, inst in loaded.items():
                assert np.abs(inst.box_center - saved[i][0]).max() < 0.01
                assert np.abs(inst.box_size - saved[i][1]).max() < 0.01

        start(second, range(6, 10), loaded_at_configure)  # places seen before the save: one window (steps 6..9)
        wait_for(lambda: node.worker.processed >= 1, 120.0, "the first window after the restart")
        wait_for(lambda: second.messages("/iggt/instances"), 20.0, "an instance array")
        now = boxes(second.messages("/iggt/instances")[0])
        assert set(saved) <= set(now), "every saved instance is in the map after the restart"
        for i, (centre, size, state) in now.items():
            if i in saved and state == 2:  # not seen again yet: exactly as saved
                assert np.abs(centre - saved[i][0]).max() < 0.01 and np.abs(size - saved[i][1]).max() < 0.01
        again = published_ids_of_objects(second)
        known = [obj for obj in again if obj in object_ids]
        assert known, (again, object_ids)
        assert node.pipeline.tracker.reidentifications >= len(known), "matched to the saved (lost) instances"
        assert all(again[obj] == object_ids[obj] for obj in known), (again, object_ids)
        assert all(i > max(saved) for i in set(now) - set(saved)), "new IDs continue after the largest saved one"

        # the load service: refusals keep the running map; a good name replaces it
        load = second.service(LoadMap, "/iggt/load_map")
        (maps / "broken.npz").write_bytes((maps / "lab.npz").read_bytes()[:200])
        running = {i.id for i in node.pipeline.snapshot().instances}
        for name, why in (("broken", "corrupted or truncated"), ("../maps/lab", "refused"), ("missing", "no map")):
            refused = second.call(load, LoadMap.Request(name=name), 10.0)
            assert not refused.success and why in refused.message, refused.message
            assert {i.id for i in node.pipeline.snapshot().instances} == running
        loaded = second.call(load, LoadMap.Request(name="lab"), 10.0)
        assert loaded.success, loaded.message
        assert {i.id for i in node.pipeline.snapshot().instances} == set(saved)

        def map_status():
            for msg in reversed(second.messages("/diagnostics")):
                for status in msg.status:
                    if status.name.endswith(": map"):
                        return {kv.key: kv.value for kv in status.values}
            return None

        wait_for(lambda: (s := map_status()) and s["instances"] == str(len(saved)), 20.0, "the map on /diagnostics")
        assert int(map_status()["points"]) > 0 and map_status()["max_instances"] == "1000"
    finally:
        second.close()

    from lifecycle_msgs.msg import Transition

    third = Harness(rclpy_context, dict(params, **{"mapping.map_file": "broken"}), HeldEngine(oracle()))
    try:  # a map_file that cannot be loaded fails the configure, with the reason; the node stays up
        assert not third.change_state(Transition.TRANSITION_CONFIGURE)
        assert third.state() == "unconfigured" and third.node.pipeline is None
    finally:
        third.close()
