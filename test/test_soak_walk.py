"""The soak input (a long walk through several rooms, rendered on the fly) and the soak's revisit score."""

from __future__ import annotations

import sys
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

from iggt_ros.synthetic.long_walk import LongWalk, LongWalkSpec, iter_long_walk

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def test_an_hour_of_walk_revisits_every_room_and_objects_stay_in_their_room():
    walk = LongWalk(LongWalkSpec(seed=0, frames=36_000))
    assert sum(v.steps for v in walk.visits) == 36_000
    assert [v.start for v in walk.visits] == list(np.cumsum([0] + [v.steps for v in walk.visits[:-1]]))
    rooms = [v.space for v in walk.visits if v.space != walk.corridor]
    assert set(rooms) == set(range(walk.spec.rooms)) and min(rooms.count(r) for r in set(rooms)) >= 5
    assert all(a.space == walk.corridor or b.space == walk.corridor for a, b in pairwise(walk.visits))
    assert not walk.spaces[walk.corridor].objects, "the corridor holds no object"
    ids = [gid for gid, _, _ in walk.objects()]
    assert ids == list(range(1, walk.num_objects + 1)), "global IDs, one per object of the building"


@pytest.mark.parametrize("cameras", [1, 2])
def test_streamed_steps_are_the_same_from_any_start_and_carry_global_ids(cameras):
    walk = LongWalk(LongWalkSpec(seed=1, frames=400, cameras=cameras, width=84, height=56))
    second_visit = walk.visits[1]
    start = second_visit.start + 3
    stream = iter_long_walk(walk)
    full = [next(stream) for _ in range(second_visit.start + 60)]
    resumed = list(zip(range(2), iter_long_walk(walk, start_step=start), strict=False))
    for k in range(2):
        a, b = full[start + k], resumed[k][1]
        assert len(a) == cameras and [v.camera for v in a] == list(walk.rig.names)
        for va, vb in zip(a, b, strict=True):
            assert va.stamp_ns == vb.stamp_ns and np.array_equal(va.rgb, vb.rgb)
            assert np.array_equal(va.world_from_camera, vb.world_from_camera)
    room = second_visit.space
    seen = {int(i) for step in full[second_visit.start:] for v in step for i in np.unique(v.instance_ids)} - {0}
    lo = walk.id_offsets[room]
    assert seen and all(lo < i <= lo + len(walk.spaces[room].objects) for i in seen), "only that room's objects"
    x = full[start][0].world_from_camera[0, 3]
    assert abs(x - 20.0 * room) < 10.0, "each space has its own place in the world frame"


def test_revisit_score_counts_an_old_id_coming_back_and_a_new_one_not():
    from benchmarks.soak import REVISIT_GAP, RevisitScore

    walk = LongWalk(LongWalkSpec(seed=0, frames=100))
    score = RevisitScore(walk)
    gt = np.zeros((1, 20, 20), np.uint16)
    gt[0, :10, :10] = 5
    pred = np.where(gt > 0, 7, 0).astype(np.uint16)
    score.add(0, 0, pred, list(gt))
    score.add(1, 0, pred, list(gt))  # seen again at once: not a revisit
    assert score.revisits == 0
    score.add(1 + REVISIT_GAP, 2, pred, list(gt))  # away for REVISIT_GAP windows, came back in another visit
    assert (score.revisits, score.reidentified, score.room_revisits, score.room_reidentified) == (1, 1, 1, 1)
    other = np.where(gt > 0, 9, 0).astype(np.uint16)
    score.add(2 + 2 * REVISIT_GAP, 2, other, list(gt))  # back under another ID
    assert (score.revisits, score.reidentified) == (2, 1)
    assert score.object_ids({7, 9, 11}) == (2, 1)  # 11 never covered an object
