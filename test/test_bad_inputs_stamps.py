"""Where a camera lost a capture, and how the synchroniser forms that time step without it.

The rule the node and the replay share (`input_checks.StampGuard.missing_ns`, `window.ApproximateTimeSynchronizer`
with `MissingFrame`): a message dropped for its stamp is placed by the camera's period when the next message
shows where it belonged, and nothing is guessed where the stamps do not show it.
"""

from __future__ import annotations

import numpy as np

from iggt_ros.perception.frames import CameraFrame, MissingFrame
from iggt_ros.perception.input_checks import StampGuard
from iggt_ros.perception.window import ApproximateTimeSynchronizer

SECOND = 1_000_000_000
S = 1_700_000_000 * SECOND  # a stamp of today
P = 100_000_000  # a 10 Hz camera


def run(stamps: list[int]) -> tuple[list[int], list[int], list[str]]:
    """Admit `stamps` on one stream: the stamps used, the places of lost captures, the kinds of problems."""
    guard: StampGuard[int] = StampGuard()
    used, missing, kinds = [], [], []
    for stamp in stamps:
        admitted = guard.admit("/cam/image_raw", stamp, stamp)
        used += admitted.items
        missing += admitted.missing_ns
        kinds += [p.kind for p in admitted.problems]
    return used, missing, kinds


def test_a_capture_lost_for_its_stamp_is_placed_by_the_cameras_period():
    t = [S + i * P for i in range(6)]
    assert run([t[0], t[1], t[2], 0, t[4], t[5]]) == ([t[0], t[1], t[2], t[4], t[5]], [t[3]], ["zero stamp"])
    glitch = t[3] - 1000 * SECOND
    assert run([t[0], t[1], t[2], glitch, t[4], t[5]]) == ([t[0], t[1], t[2], t[4], t[5]], [t[3]], ["stamp jump"])
    assert run([t[0], t[1], 0, 0, t[4]])[1] == [t[2], t[3]]  # two in a row


def test_nothing_is_placed_where_the_stamps_do_not_show_a_lost_capture():
    t = [S + i * P for i in range(6)]
    assert run([t[0], t[1], t[1], t[2]]) == ([t[0], t[1], t[2]], [], ["duplicate stamp"])  # a repeat: no gap
    assert run([t[0], 0, t[2]])[1] == []  # no period known yet
    assert run([t[0], t[1], 0, t[5]])[1] == []  # the gap is not one period per lost capture
    assert run([t[0], t[1], t[2], t[3]])[1] == []


def frame(camera: str, stamp: int) -> CameraFrame:
    return CameraFrame(camera, stamp, np.zeros((2, 2, 3), np.uint8))


def test_a_missing_frame_completes_its_time_step_with_the_other_cameras():
    sync = ApproximateTimeSynchronizer(["a", "b", "c"], queue_size=5, slop_s=0.05)
    assert sync.add(frame("b", S)) is None and sync.add(frame("c", S + 1000)) is None
    done = sync.add(MissingFrame("a", S))
    assert done is not None and list(done.frames) == ["b", "c"] and done.stamp_ns == S
    assert sync.incomplete == 1 and all(not sync.queued(c) for c in "abc")
    # in any order; and a step every camera lost forms nothing
    assert sync.add(MissingFrame("a", S + P)) is None and sync.add(MissingFrame("b", S + P)) is None
    assert sync.add(MissingFrame("c", S + P)) is None and sync.emitted == 1
    assert sync.add(frame("a", S + 2 * P)) is None and sync.add(MissingFrame("b", S + 2 * P)) is None
    done = sync.add(frame("c", S + 2 * P))
    assert done is not None and list(done.frames) == ["a", "c"] and sync.incomplete == 2
    # complete steps are what they were
    for cam in "abc":
        done = sync.add(frame(cam, S + 3 * P))
    assert done is not None and list(done.frames) == ["a", "b", "c"] and sync.incomplete == 2
