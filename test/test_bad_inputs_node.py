"""Bad inputs and bad requests to the running node over DDS: each costs only itself and is said and counted.

The same rules as the replay's (`iggt_ros.perception.input_checks`, tested bag by bag in
test_replay_bad_inputs.py): a zero or glitched stamp, a black or empty image, a NaN in camera_info
or TF is dropped alone, named in the log, counted on /diagnostics ("inputs"), and never resets the
map; a real loop still does. A lifecycle request that is invalid in the current state is refused
with a reason instead of ending the node.
"""

from __future__ import annotations

import numpy as np
import pytest
import test_node
from test_node import HeldEngine, base_params, oracle, sequence, wait_for

from iggt_ros.messages import layouts as L
from iggt_ros.messages.convention import optical_frame
from iggt_ros.messages.message import Header, stamp_ns

harness_factory = test_node.harness_factory
input_path = test_node.input_path


def inputs_status(h):
    """The latest 'inputs' diagnostics status, as a dict of its values (None before the first)."""
    for d in reversed(h.messages("/diagnostics")):
        for s in d.status:
            if s.name.endswith(": inputs"):
                return s, {kv.key: kv.value for kv in s.values}
    return None


def test_invalid_lifecycle_transition_is_refused_and_the_node_lives_on(harness_factory):
    from lifecycle_msgs.msg import Transition

    h = harness_factory(base_params(**{"input.use_tf": False}), HeldEngine(oracle()))
    assert h.change_state(Transition.TRANSITION_CONFIGURE)
    assert h.change_state(Transition.TRANSITION_ACTIVATE)
    # `ros2 lifecycle set /iggt_node configure` while active, and an id no state has: refused, not fatal
    assert not h.change_state(Transition.TRANSITION_CONFIGURE)
    assert not h.change_state(97)
    assert h.state() == "active"
    assert h._thread.is_alive()  # the executor still spins: the services above answered through it
    assert h.change_state(Transition.TRANSITION_DEACTIVATE)
    assert not h.change_state(Transition.TRANSITION_DEACTIVATE)
    assert h.state() == "inactive"


def test_glitched_inputs_cost_only_themselves_and_are_counted(harness_factory, input_path):
    from rclpy.lifecycle import TransitionCallbackReturn

    from iggt_ros.ros.convert import to_rclpy

    seq = sequence()
    h = harness_factory(base_params(), HeldEngine(oracle()))
    node = h.node
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    h.publish_static_tf()
    cams = list(seq.rig.names)
    counts = node.inputs.counts.total

    def bad_step(step: int, change) -> None:
        """Publish step `step` with its images changed by `change(camera, header, rgb)` -> message or None."""
        views = seq.steps[step]
        stamp = int(views[0].stamp_ns)
        h.publish_raw("/tf", to_rclpy(L.tf_message([L.TransformData("odom", "base_link", stamp,
                                                                    seq.world_from_base[step])])))
        for view in views:
            header = Header(stamp, optical_frame(view.camera))
            h.publish_raw(f"{view.camera}/camera_info",
                          to_rclpy(L.camera_info(header, view.intrinsics, view.rgb.shape[1], view.rgb.shape[0])))
            h.publish_raw(f"{view.camera}/image_raw", to_rclpy(change(view.camera, header, view.rgb)))

    h.play(0)
    h.play(1)
    # a set stamped 0 (a driver whose clock was not set): dropped, no reset
    bad_step(2, lambda cam, header, rgb: L.rgb_image(Header(0, header.frame_id), rgb))
    wait_for(lambda: counts.get("zero stamp", 0) >= 1, 20.0, "the zero stamps counted")
    # a black image on one camera: that image is lost, nothing else
    bad_step(3, lambda cam, header, rgb: L.rgb_image(header, np.zeros_like(rgb) if cam == cams[0] else rgb))
    wait_for(lambda: counts.get("black image", 0) == 1, 20.0, "the black image counted")
    # a 0x0 image
    bad_step(4, lambda cam, header, rgb: L.rgb_image(header, np.zeros((0, 0, 3), np.uint8)) if cam == cams[1]
             else L.rgb_image(header, rgb))
    wait_for(lambda: counts.get("malformed image", 0) == 1, 20.0, "the empty image counted")
    # a NaN in camera_info: the previous calibration stays
    info = L.camera_info(Header(seq.steps[5][0].stamp_ns, optical_frame(cams[0])), seq.steps[5][0].intrinsics,
                         seq.steps[5][0].rgb.shape[1], seq.steps[5][0].rgb.shape[0])
    info.fields["k"] = np.full(9, np.nan)
    h.publish_raw(f"{cams[0]}/camera_info", to_rclpy(info))
    wait_for(lambda: counts.get("bad camera_info", 0) == 1, 20.0, "the bad camera_info counted")
    assert node.inputs.camera_info(cams[0]) is not None
    assert np.all(np.isfinite(node.inputs.camera_info(cams[0]).intrinsics))
    # a /tf sample with a NaN rotation between two images
    nan_pose = np.full((4, 4), np.nan)
    if input_path == "fallback":  # tf2_ros refuses it itself (and logs it); our buffer refuses and counts it
        between = int(seq.steps[4][0].stamp_ns) + 1000
        h.publish_raw("/tf", to_rclpy(L.tf_message([L.TransformData("odom", "base_link", between, nan_pose)])))
        wait_for(lambda: counts.get("bad transform", 0) == 1, 20.0, "the NaN transform counted")
    sets_before = node.stats.frame_sets
    for step in range(5, 9):
        h.play(step)
    assert node.stats.frame_sets == sets_before + 4
    assert node.pipeline.time_jumps == 0 and node.pipeline.resets == 0  # no glitch was taken for a loop
    wait_for(lambda: h.messages("/iggt/instances"), 30.0, "outputs after the glitches")

    def reported() -> bool:
        got = inputs_status(h)
        if got is None:
            return False
        _, values = got
        return values.get("bad_black_image") == "1" and values.get("bad_malformed_image") == "1" \
            and values.get("bad_bad_camera_info") == "1" and int(values.get("bad_zero_stamp", "0")) >= 1

    wait_for(reported, 20.0, "the bad inputs on /diagnostics")
    warned = [s for d in h.messages("/diagnostics") for s in d.status
              if s.name.endswith(": inputs") and s.level == s.WARN]
    assert warned and any("black image" in s.message for s in warned)


def test_a_real_loop_still_restarts_and_a_single_jump_does_not(harness_factory, input_path):
    from rclpy.lifecycle import TransitionCallbackReturn

    h = harness_factory(base_params(**{"input.use_tf": False}), HeldEngine(oracle()))
    node = h.node
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    for step in range(6):
        h.play(step, with_tf=False)
    # one set stamped 100 s in the past, then the sequence goes on: a glitch, dropped, no reset
    h.publish_step(6, with_tf=False, stamp_offset_ns=-100 * 10**9)
    h.play(7, with_tf=False)
    wait_for(lambda: node.inputs.counts.total.get("stamp jump", 0) >= 1, 20.0, "the glitch counted")
    assert node.pipeline.resets == 0
    # the bag starts over and stays there: the first set is held, the next confirms it, the core restarts
    h.publish_step(0, with_tf=False)
    h.publish_step(1, with_tf=False)
    wait_for(lambda: node.pipeline.resets == 1, 20.0, "the pipeline restarting at the loop")
    for step in range(2, 5):
        h.play(step, with_tf=False)
    assert node.pipeline.resets == 1 and node.inputs.counts.total.get("stamp jump", 0) == 2  # one per camera


def test_the_suite_runs_on_a_domain_of_its_own_whatever_the_shell_set(tmp_path):
    """Run from a robot's shell (ROS_DOMAIN_ID=0, discovery on the subnet), tests must not reach the robot."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    shutil.copy(Path(__file__).with_name("conftest.py"), tmp_path / "conftest.py")
    (tmp_path / "test_probe.py").write_text(
        "import os\n\ndef test_env():\n"
        "    print('ENV', os.environ['ROS_DOMAIN_ID'], os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'],"
        " os.environ['ROS_LOCALHOST_ONLY'], os.environ.get('ROS_STATIC_PEERS', '-'))\n")
    env = {**os.environ, "ROS_DOMAIN_ID": "0", "ROS_AUTOMATIC_DISCOVERY_RANGE": "SUBNET", "ROS_LOCALHOST_ONLY": "0",
           "ROS_STATIC_PEERS": "192.168.1.10"}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", str(tmp_path)],
                         env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    line = next(ln for ln in run.stdout.splitlines() if "ENV " in ln)
    domain, discovery, localhost, peers = line.split("ENV ", 1)[1].split()
    assert domain != "0" and 1 <= int(domain) <= 100
    assert (discovery, localhost, peers) == ("LOCALHOST", "1", "-")


def test_configure_warns_when_the_default_transport_cannot_carry_the_images():
    from iggt_ros.ros.tf_health import transport_warning

    text = transport_warning(2, 504, 336, {})  # the robot: 2 cameras at 504x336, default Fast DDS
    assert text is not None and "1.02 MB per time step" in text and "large_images:=true" in text
    assert transport_warning(1, 504, 336, {}) is None  # one image fits the 512 KiB segment
    assert transport_warning(2, 504, 336, {"FASTDDS_DEFAULT_PROFILES_FILE": "/p.xml"}) is None
    assert transport_warning(2, 504, 336, {"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"}) is None


def test_configure_says_so_on_the_node(harness_factory, monkeypatch):
    from rclpy.lifecycle import TransitionCallbackReturn

    for name in ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE", "RMW_IMPLEMENTATION"):
        monkeypatch.delenv(name, raising=False)
    h = harness_factory(base_params(**{"input.use_tf": False, "input.image_width": 504, "input.image_height": 336}),
                        HeldEngine(oracle()))
    assert h.node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert h.node.stats.info["transport"] == "default Fast DDS segment too small for these images"


def test_no_request_from_outside_ends_the_node(harness_factory):
    """Parameters of the wrong type, out of range or unknown, queries and resets in any state: each is answered
    (refused with a reason where it must be) and the node keeps serving."""
    from lifecycle_msgs.msg import Transition
    from std_srvs.srv import Trigger

    from iggt_ros.srv import Query

    h = harness_factory(base_params(**{"input.use_tf": False}), HeldEngine(oracle()))
    # unconfigured: the services of the node's own interface do not exist yet; lifecycle ones refuse
    assert not h.change_state(Transition.TRANSITION_ACTIVATE)
    assert h.change_state(Transition.TRANSITION_CONFIGURE)
    results = h.set_remote_parameters({"window.size": "eight"})
    assert not results[0].successful
    results = h.set_remote_parameters({"mapping.voxel_size_m": float("nan")})
    assert not results[0].successful and results[0].reason
    results = h.set_remote_parameters({"window.size": 10**6})
    assert not results[0].successful and "window.size" in results[0].reason
    h.set_remote_parameters({"no.such_key": 3})  # accepted or refused, but answered
    query = h.service(Query, "/iggt/query")
    answer = h.call(query, Query.Request(text="", max_results=2**32 - 1, min_score=float("nan")), 30.0)
    assert answer is not None and answer.message
    reset = h.call(h.service(Trigger, "/iggt/reset"), Trigger.Request(), 30.0)
    assert reset.success
    assert h.change_state(Transition.TRANSITION_ACTIVATE) and h.state() == "active"
    assert h._thread.is_alive()


def test_duplicate_stamps_are_dropped_and_large_images_used_and_said(harness_factory, input_path):
    from rclpy.lifecycle import TransitionCallbackReturn

    from iggt_ros.ros.convert import to_rclpy

    seq = sequence()
    h = harness_factory(base_params(**{"input.use_tf": False}), HeldEngine(oracle()))
    node = h.node
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    counts = node.inputs.counts.total
    h.play(0, with_tf=False)
    h.play(1, with_tf=False)
    h.publish_step(1, with_tf=False)  # the same set again: a driver repeating its stamp
    wait_for(lambda: counts.get("duplicate stamp", 0) >= 1, 20.0, "the repeated stamp counted")
    # a set of images 5x the model input on each side (25x its pixels): resized and used, said once per camera
    sets = node.stats.frame_sets
    stamp = int(seq.steps[2][0].stamp_ns)
    for view in seq.steps[2]:
        big = np.repeat(np.repeat(view.rgb, 5, axis=0), 5, axis=1)
        header = Header(stamp, optical_frame(view.camera))
        h.publish_raw(f"{view.camera}/camera_info", to_rclpy(L.camera_info(header, view.intrinsics * [[5], [5], [1]],
                                                                          big.shape[1], big.shape[0])))
        h.publish_raw(f"{view.camera}/image_raw", to_rclpy(L.rgb_image(header, big)))
    wait_for(lambda: node.stats.frame_sets > sets, 30.0, "the large set used")
    assert counts.get("large image") == len(seq.rig.names)
    assert node.pipeline.resets == 0 and node.pipeline.time_jumps == 0


@pytest.mark.parametrize("kind", ["black image", "malformed image", "zero stamp"])
def test_a_bad_image_of_one_camera_costs_only_itself(harness_factory, input_path, kind):
    """The other camera's image of that time step is used (its view reaches a window); the bad one is said once."""
    from rclpy.lifecycle import TransitionCallbackReturn

    from iggt_ros.ros.convert import to_rclpy

    seq = sequence()
    h = harness_factory(base_params(**{"input.use_tf": False}), HeldEngine(oracle()))
    node = h.node
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    bad_cam, good_cam = seq.rig.names[0], seq.rig.names[1]  # the bad image is published first
    counts = node.inputs.counts.total
    for step in range(3):
        h.play(step, with_tf=False)
    bad_step = 3
    stamp = int(seq.steps[bad_step][0].stamp_ns)
    sets = node.stats.frame_sets
    for view in seq.steps[bad_step]:
        header = Header(stamp, optical_frame(view.camera))
        h.publish_raw(f"{view.camera}/camera_info", to_rclpy(L.camera_info(header, view.intrinsics,
                                                                          view.rgb.shape[1], view.rgb.shape[0])))
        msg = L.rgb_image(header, view.rgb)
        if view.camera == bad_cam:
            msg = {"black image": L.rgb_image(header, np.zeros_like(view.rgb)),
                   "malformed image": L.rgb_image(header, np.zeros((0, 0, 3), np.uint8)),
                   "zero stamp": L.rgb_image(Header(0, header.frame_id), view.rgb)}[kind]
        h.publish_raw(f"{view.camera}/image_raw", to_rclpy(msg))
    wait_for(lambda: counts.get(kind, 0) == 1, 20.0, f"the {kind} counted")
    for step in range(bad_step + 1, 8):
        h.play(step, with_tf=False)
    # every time step formed, the bad one with the good camera alone; nothing was taken for a loop (a capture
    # dropped for its stamp is placed when the camera's next message shows where it belonged, so its set may
    # form after `play` of the next step has returned: wait for the count, do not read it at once)
    wait_for(lambda: node.stats.frame_sets >= sets + 8 - bad_step, 20.0, "every time step's frame set")
    assert node.stats.frame_sets == sets + 8 - bad_step
    assert node.pipeline.resets == 0 and node.pipeline.time_jumps == 0

    def depth_stamps(cam: str) -> set[int]:
        return {stamp_ns(m.header.stamp) for m in h.messages(f"/iggt/depth/{cam}")}

    wait_for(lambda: {int(seq.steps[s][0].stamp_ns) for s in range(6)} <= depth_stamps(good_cam), 30.0,
             "the good camera's views of steps 0-5 published")
    assert stamp in depth_stamps(good_cam) and stamp not in depth_stamps(bad_cam)
    assert counts == {kind: 1}
    text = node.inputs.counts.last
    assert text.startswith(f"{bad_cam}/image_raw at ") and ("Check" in text or "check" in text)

    def reported() -> bool:
        got = inputs_status(h)
        return got is not None and got[1].get(f"bad_{kind.replace(' ', '_')}") == "1"

    wait_for(reported, 20.0, f"the {kind} on /diagnostics")
