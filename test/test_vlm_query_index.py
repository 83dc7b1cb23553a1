"""The query index the node (asynchronous) and the replay (synchronous) share: same embeddings either way."""

from __future__ import annotations

import numpy as np
from test_vlm_embedder import MeanColorEncoder, config, make_view

from iggt_ros.perception.object_map import ObjectInstance
from iggt_ros.perception.pipeline import CLOUD_DTYPE, ViewInfo, WindowResult
from iggt_ros.perception.records import TrackState
from iggt_ros.vlm.embedder import InstanceEmbedder
from iggt_ros.vlm.query_index import QueryIndex


def instance(iid: int) -> ObjectInstance:
    c = np.zeros(3)
    return ObjectInstance(id=iid, state=TrackState.CONFIRMED, centroid=c, box_center=c, box_size=np.full(3, 0.3),
                          box_yaw=0.0, num_points=10, views_seen=1, windows_seen=1, first_seen_ns=0, last_seen_ns=0)


def result(index: int, views: list[tuple[int, bool, list]], ids: list[int], discarded: bool = False) -> WindowResult:
    """views: (stamp, new, objects as `make_view` takes them); ids: the instances the map holds."""
    obs = [make_view(stamp, objects) for stamp, _, objects in views]
    infos = [ViewInfo("cam", stamp, "cam_optical", new) for stamp, new, _ in views]
    h, w = obs[0].instance_ids.shape
    return WindowResult(index, views[-1][0], "iggt_map", infos, np.stack([o.instance_ids for o in obs]),
                        np.ones((len(obs), h, w), np.float32), False, np.zeros(0, CLOUD_DTYPE),
                        [instance(i) for i in ids], None, images=np.stack([o.rgb for o in obs]), discarded=discarded)


RED, BLUE = (200, 30, 30), (30, 30, 200)
WINDOWS = [
    result(0, [(1, True, [(1, RED, 10, 10, 30)]), (2, True, [(1, RED, 12, 10, 30), (2, BLUE, 60, 80, 25)])], [1, 2]),
    result(1, [(2, False, [(2, BLUE, 0, 0, 90)]), (3, True, [(2, BLUE, 60, 90, 25)])], [1, 2]),
    result(2, [(3, False, []), (4, True, [(1, RED, 5, 5, 20)])], [1]),  # instance 2 left the map
]


def run(asynchronous: bool) -> tuple[QueryIndex, MeanColorEncoder, list[dict[int, np.ndarray]]]:
    encoder = MeanColorEncoder()
    index = QueryIndex(InstanceEmbedder(encoder, config(embed_queue_size=16)), asynchronous=asynchronous)
    states = []
    for r in WINDOWS:
        index.observe(r)
        if asynchronous:
            assert index.embedder.wait_idle(30.0)
        states.append(index.vectors())
    index.stop()
    return index, encoder, states


def test_synchronous_and_asynchronous_indexes_hold_the_same_embeddings():
    _, sync_encoder, sync_states = run(asynchronous=False)
    _, async_encoder, async_states = run(asynchronous=True)
    assert sync_encoder.regions == async_encoder.regions
    for a, b in zip(sync_states, async_states, strict=True):
        assert a.keys() == b.keys()
        for iid in a:
            np.testing.assert_allclose(a[iid], b[iid], rtol=1e-6)
    first, second, last = sync_states
    assert set(first) == {1, 2} and first[1].argmax() == 0 and first[2].argmax() == 2  # red, blue
    np.testing.assert_allclose(second[2], first[2], atol=1e-6)  # the old view (not new) was not embedded again
    assert set(last) == {1}, "an instance the map no longer holds is forgotten"


def test_discarded_results_and_results_without_images_are_not_embedded():
    encoder = MeanColorEncoder()
    index = QueryIndex(InstanceEmbedder(encoder, config()), asynchronous=False)
    stale = result(0, [(1, True, [(1, RED, 10, 10, 30)])], [1], discarded=True)
    assert index.observe(stale) == 0
    no_images = result(0, [(1, True, [(1, RED, 10, 10, 30)])], [1])
    no_images.images = None
    assert index.observe(no_images) == 0
    assert encoder.calls == 0 and index.vectors() == {}
    assert index.observe(result(0, [(1, True, [(1, RED, 10, 10, 30)])], [1])) == 1 and set(index.vectors()) == {1}
    index.reset()
    assert index.vectors() == {}
