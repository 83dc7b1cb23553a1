"""Per-instance TF frames over DDS: `iggt/instance_<id>` on /tf follows the node's confirmed instances.

The node runs in-process with the oracle engine on the synthetic orbit of `test_node`; the test's
node records /tf and /iggt/instances. Each /tf message of the node is matched with the InstanceArray
of the same stamp: one frame per confirmed instance (tentative and lost ones have none), parent = the
array's frame, translation and yaw = the instance's box. Switched off (the default), no frame is sent;
after /iggt/reset the old instances' frames are no longer sent. Where tf2_ros is installed a tf2
buffer of the test node also looks the frames up, as a planner does.

Absence is ordered by events, not time: the node's /tf messages come from one reliable writer, so when
a later window's message has arrived, any message the node sent for an earlier window has too.
"""

from __future__ import annotations

import numpy as np
from test_node import HEIGHT, WIDTH, Harness, base_params, input_path, sequence, wait_for

from iggt_ros.engine.base import ViewKey
from iggt_ros.engine.oracle import OracleEngine, truth_from_sequence
from iggt_ros.messages.layouts import STATE_CONFIRMED, STATE_TENTATIVE
from iggt_ros.messages.message import stamp_ns
from iggt_ros.messages.outputs import INSTANCE_FRAME_PREFIX

__all__ = ["input_path"]  # the fixture: every behaviour test runs on both input paths


def later_ns() -> int:
    """After the reset the orbit is played again this much later, as if it went on (one step after its
    end: time only goes forward on a robot, and by less than a jump the node holds back as suspect)."""
    seq = sequence()
    first, second, last = (int(seq.steps[i][0].stamp_ns) for i in (0, 1, -1))
    return last - first + (second - first)


def engine() -> OracleEngine:
    """The oracle with the truth of the orbit at its own stamps and at the stamps `later_ns()` later."""
    truth = truth_from_sequence(sequence())
    truth.update({ViewKey(k.camera, k.stamp_ns + later_ns()): v for k, v in list(truth.items())})
    return OracleEngine(truth, input_size=(HEIGHT, WIDTH), seed=1)


class FrameRecorder:
    """/tf as a planner hears it, beside the harness's recordings (the harness itself publishes odom -> base_link)."""

    def __init__(self, h: Harness) -> None:
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from tf2_msgs.msg import TFMessage

        self.h = h
        self.sub = h.io.create_subscription(TFMessage, "/tf", lambda m: h._record("/tf", m),
                                            QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
        self.tf2_buffer = None
        try:  # the standard path: a planner's tf2 buffer, listening from the start
            import tf2_ros
        except ImportError:
            return
        self.tf2_buffer = tf2_ros.Buffer()
        self._listener = tf2_ros.TransformListener(self.tf2_buffer, h.io)

    def wait_matched(self) -> None:
        """Both /tf writers (the harness's and the node's) matched: nothing the node sends from now on is missed."""
        if hasattr(self.sub, "get_publisher_count"):
            wait_for(lambda: self.sub.get_publisher_count() >= 2, 30.0, "the node's /tf publisher")
        else:
            wait_for(lambda: len(self.h.io.get_publishers_info_by_topic("/tf")) >= 2, 30.0, "the node's /tf publisher")

    def by_stamp(self) -> dict[int, dict[str, object]]:
        """stamp -> child frame -> transform, of every /tf message carrying instance frames (the node's)."""
        out: dict[int, dict[str, object]] = {}
        for msg in self.h.messages("/tf"):
            children = [t.child_frame_id for t in msg.transforms]
            if not any(c.startswith(INSTANCE_FRAME_PREFIX) for c in children):
                continue
            assert all(c.startswith(INSTANCE_FRAME_PREFIX) for c in children), children
            stamps = {stamp_ns(t.header.stamp) for t in msg.transforms}
            assert len(stamps) == 1, "one message per window, all frames at the window's stamp"
            stamp = stamps.pop()
            assert stamp not in out, f"the frames of window {stamp} are sent once"
            out[stamp] = {t.child_frame_id: t for t in msg.transforms}
        return out


def instances_at(h: Harness, stamp: int):
    return next(a for a in h.messages("/iggt/instances") if stamp_ns(a.header.stamp) == stamp)


def confirmed(array) -> dict[int, object]:
    return {int(i.id): i for i in array.instances if i.state == STATE_CONFIRMED}


def assert_frames_match(frames: dict[str, object], array) -> None:
    """The window's frames are exactly its confirmed instances, at their boxes, in the array's frame."""
    boxes = confirmed(array)
    assert set(frames) == {f"{INSTANCE_FRAME_PREFIX}{i}" for i in boxes}, (sorted(frames), sorted(boxes))
    for iid, inst in boxes.items():
        t = frames[f"{INSTANCE_FRAME_PREFIX}{iid}"]
        assert t.header.frame_id == array.header.frame_id
        tr, p = t.transform.translation, inst.box_pose.position
        assert np.allclose([tr.x, tr.y, tr.z], [p.x, p.y, p.z], atol=1e-6), (iid, tr, p)
        q, o = t.transform.rotation, inst.box_pose.orientation
        assert abs(np.dot([q.x, q.y, q.z, q.w], [o.x, o.y, o.z, o.w])) > 1 - 1e-6, (iid, q, o)


def start(h: Harness) -> FrameRecorder:
    from lifecycle_msgs.msg import Transition

    recorder = FrameRecorder(h)
    assert h.change_state(Transition.TRANSITION_CONFIGURE)
    assert h.change_state(Transition.TRANSITION_ACTIVATE)
    recorder.wait_matched()
    h.publish_static_tf()
    return recorder


def window_stamps(steps, offset_ns: int = 0) -> list[int]:
    """Stamps of the windows ending among `steps` when the node's windows began at step 0 (after the start
    or a reset): window 4, stride 2, so every second step from the fourth."""
    seq = sequence()
    return [int(seq.steps[s][0].stamp_ns) + offset_ns for s in steps if s >= 3 and (s - 3) % 2 == 0]


def play_windows(h: Harness, steps, offset_ns: int = 0) -> list[int]:
    """Play `steps` and wait until every window they complete is processed and its instances received."""
    node, before = h.node, len(h.messages("/iggt/instances"))
    processed = node.worker.processed
    for step in steps:
        h.play(step, stamp_offset_ns=offset_ns)
    stamps = window_stamps(steps, offset_ns)
    wait_for(lambda: node.worker.processed >= processed + len(stamps), 120.0, f"{len(stamps)} windows")
    wait_for(lambda: len(h.messages("/iggt/instances")) >= before + len(stamps), 20.0, "their instance arrays")
    assert [stamp_ns(a.header.stamp) for a in h.messages("/iggt/instances")[before:]] == stamps
    return stamps


def params(**overrides):
    return base_params(**{"tracking.confirm_windows": 2, **overrides})


def test_frames_follow_confirmed_instances_and_leave_with_them_on_reset(rclpy_context, input_path):
    from std_srvs.srv import Trigger

    h = Harness(rclpy_context, params(**{"publish.instance_frames": True}), engine())
    try:
        recorder = start(h)
        first = play_windows(h, list(range(8)))  # windows at steps 3, 5, 7
        wait_for(lambda: first[-1] in recorder.by_stamp(), 20.0, "the frames of the last window")
        frames = recorder.by_stamp()
        assert not confirmed(instances_at(h, first[0])), "a first window holds tentative instances only"
        assert any(i.state == STATE_TENTATIVE for i in instances_at(h, first[0]).instances)
        assert first[0] not in frames, "tentative instances get no frame (an empty /tf message is not sent)"
        for stamp in first[1:]:
            assert confirmed(instances_at(h, stamp)), "the orbit's objects are confirmed in the second window"
            assert_frames_match(frames[stamp], instances_at(h, stamp))
        assert set(frames) == set(first[1:])
        if input_path == "standard":
            assert recorder.tf2_buffer is not None, "the standard path has tf2_ros"
            look_up_with_tf2(recorder.tf2_buffer, instances_at(h, first[-1]))
        else:
            assert_own_frames_not_counted_as_tf_input(h, frames[first[-1]])

        old = confirmed(instances_at(h, first[-1]))
        reply = h.call(h.service(Trigger, "/iggt/reset"), Trigger.Request(), 10.0)
        assert reply.success, reply.message
        # The orbit again, later: the first window after the reset holds new, tentative instances only, so
        # a frame sent for its stamp could only be one of the old map's.
        later = play_windows(h, list(range(6)), later_ns())  # windows at steps 3, 5
        wait_for(lambda: later[-1] in recorder.by_stamp(), 20.0, "the frames of the second window after the reset")
        frames = recorder.by_stamp()
        assert not confirmed(instances_at(h, later[0]))
        assert later[0] not in frames, f"frames of the old instances {sorted(old)} sent after the reset"
        assert_frames_match(frames[later[1]], instances_at(h, later[1]))
        assert set(frames) == set(first[1:]) | {later[1]}
    finally:
        h.close()


def test_no_frames_unless_switched_on_and_at_run_time(rclpy_context, input_path):
    h = Harness(rclpy_context, params(), engine())
    try:
        recorder = start(h)
        assert h.node.config.publish.instance_frames is False, "off by default"
        off = play_windows(h, list(range(6)))  # windows at steps 3, 5
        assert confirmed(instances_at(h, off[-1])), "confirmed instances that would have frames"
        results = h.set_remote_parameters({"publish.instance_frames": True})
        assert all(r.successful for r in results), [r.reason for r in results]
        on = play_windows(h, [6, 7])  # the window at step 7
        wait_for(lambda: on[0] in recorder.by_stamp(), 20.0, "the frames of the first window after switching on")
        frames = recorder.by_stamp()
        assert set(frames) == set(on), f"frames sent while publish.instance_frames was false: {sorted(frames)}"
        assert_frames_match(frames[on[0]], instances_at(h, on[0]))
    finally:
        h.close()


def assert_own_frames_not_counted_as_tf_input(h: Harness, last_frames: dict[str, object]) -> None:
    """TF health (lag, message rate in /diagnostics) counts the robot's /tf, not the node's own instance frames,
    which leave after inference and would read as the pipeline's latency. The fallback path records a /tf
    message and then adds it to its buffer in one callback, so once the buffer holds the last window's
    instance frames, every /tf message before them has been counted or skipped."""
    buffer = h.node.paths.tf_buffer
    wait_for(lambda: set(last_frames) <= buffer.frames, 20.0, "the node's own instance frames in its TF buffer")
    robot = [m for m in h.messages("/tf") if not any(t.child_frame_id.startswith(INSTANCE_FRAME_PREFIX)
                                                      for t in m.transforms)]
    assert robot and h.node.tf_health.messages == len(robot), (h.node.tf_health.messages, len(robot))


def look_up_with_tf2(buffer, array) -> None:
    """A planner's view: tf2 finds every confirmed instance's frame at the window's stamp, at its box."""
    from rclpy.time import Time

    stamp = Time(nanoseconds=stamp_ns(array.header.stamp))
    for iid, inst in confirmed(array).items():
        child = f"{INSTANCE_FRAME_PREFIX}{iid}"
        wait_for(lambda c=child: buffer.can_transform(array.header.frame_id, c, stamp), 20.0, f"{child} in tf2")
        t = buffer.lookup_transform(array.header.frame_id, child, stamp).transform.translation
        p = inst.box_pose.position
        assert np.allclose([t.x, t.y, t.z], [p.x, p.y, p.z], atol=1e-6), (iid, t, p)
