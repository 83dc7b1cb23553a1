"""The launch file: its decisions (tested everywhere) and its launch actions (where launch_ros exists).

`iggt_ros.ros.launch_logic` holds what the launch file decides, so it is tested here without the
launch packages; the tests that build the real launch description skip where launch_ros is missing
and run in the ROS workflow.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from iggt_ros.ros.launch_logic import (
    ACTIVATE,
    CONFIGURE,
    PROFILE_VARIABLES,
    Autostart,
    fastdds_environment,
    parse_remaps,
)

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------ decisions
def test_autostart_configures_at_launch_and_activates_after_the_first_configure_only():
    plan = Autostart(enabled=True)
    assert plan.at_launch() == [CONFIGURE]
    assert plan.after_transition("unconfigured", "configuring") == [], "only the end of a configure counts"
    assert plan.after_transition("configuring", "inactive") == [ACTIVATE]
    assert plan.after_transition("activating", "active") == []
    # the user cleans up, configures and activates by hand: the launch file must not activate for them
    assert plan.after_transition("cleaningup", "unconfigured") == []
    assert plan.after_transition("configuring", "inactive") == []


def test_autostart_off_requests_nothing_and_a_failed_first_configure_spends_it():
    off = Autostart(enabled=False)
    assert off.at_launch() == [] and off.after_transition("configuring", "inactive") == []
    failed = Autostart(enabled=True)
    assert failed.after_transition("configuring", "unconfigured") == []
    assert failed.after_transition("configuring", "inactive") == [], "a later manual configure stays manual"


def test_camera_remaps_parse_and_malformed_entries_are_named():
    assert parse_remaps("a=b, c=d") == [("a", "b"), ("c", "d")]
    assert parse_remaps(" ") == []
    with pytest.raises(ValueError, match="'a' is not of the form FROM=TO"):
        parse_remaps("a")


def config_dir() -> Path:
    """The installed config directory (what the launch file uses, so CMake must install the profile)
    where the package is installed; the sources' otherwise."""
    if os.environ.get("IGGT_ROS_TEST_INSTALL"):
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory("iggt_ros"), "config")
    return REPO / "config"


def test_large_images_sets_both_fast_dds_profile_variables(tmp_path):
    assert fastdds_environment(False, str(config_dir())) == {}, "nothing asked: the user's profile stays"
    env = fastdds_environment(True, str(config_dir()))
    assert set(env) == set(PROFILE_VARIABLES) == {"FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE"}
    assert len(set(env.values())) == 1 and Path(next(iter(env.values()))).is_file()
    with pytest.raises(FileNotFoundError, match="fastdds_large_images.xml.*missing"):
        fastdds_environment(True, str(tmp_path))


_PUBLISHER = """
import sys, time, rclpy
from sensor_msgs.msg import Image
rclpy.init()
node = rclpy.create_node("iggt_profile_probe")
pub = node.create_publisher(Image, sys.argv[1], 10)
image = Image(height=600, width=1000, encoding="rgb8", step=3000, data=bytes(1800000))
for _ in range(300):  # at most 15 s; the test ends it (SIGTERM) as soon as it has seen what it needs
    if not rclpy.ok():
        break
    pub.publish(image)
    time.sleep(0.05)
"""


def _segments() -> dict[str, int]:
    """Fast DDS shared-memory segments on this machine (not their ports or lock files) -> size."""
    return {p: os.path.getsize(p) for p in glob.glob("/dev/shm/fastrtps_*")
            if "port" not in os.path.basename(p) and not p.endswith("_el")}


def test_the_large_images_profile_gives_a_32_mib_segment_and_delivers_large_images(rclpy_context):
    """Fast DDS here (rmw_fastrtps_cpp) loads the shipped profile: a 1.8 MB image goes through 32 MiB."""
    if os.environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp") != "rmw_fastrtps_cpp" or not os.path.isdir("/dev/shm"):
        pytest.skip("needs Fast DDS (rmw_fastrtps_cpp) and /dev/shm")
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image

    topic = f"iggt_profile_probe_{os.getpid()}"
    received = threading.Event()
    node = rclpy.create_node("iggt_profile_listener", context=rclpy_context)
    node.create_subscription(Image, topic, lambda m: received.set() if len(m.data) == 1800000 else None, 10)
    executor = SingleThreadedExecutor(context=rclpy_context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    before = set(_segments())
    env = {**os.environ, **fastdds_environment(True, str(config_dir()))}
    child = subprocess.Popen([sys.executable, "-c", _PUBLISHER, topic], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        assert received.wait(30.0), "the 1.8 MB image did not arrive"
        sizes = [size for path, size in _segments().items() if path not in before]
        assert sizes and max(sizes) >= 32 * 1024 * 1024, f"new segments: {sizes}"
    finally:
        child.terminate()
        _, err = child.communicate(timeout=10)
        executor.shutdown()
        node.destroy_node()
    assert "XMLPARSER" not in err, err  # Fast DDS reports profile errors as [XMLPARSER Error]


# ------------------------------------------------------------------------------------------ launch actions
def _launch_module():
    pytest.importorskip("launch_ros")
    spec = importlib.util.spec_from_file_location("iggt_launch", REPO / "launch" / "iggt.launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _node_actions(module, **arguments: str) -> list:
    from launch import LaunchContext
    from launch.actions import DeclareLaunchArgument, OpaqueFunction

    ld = module.generate_launch_description()
    context = LaunchContext()
    for arg in ld.entities:
        if isinstance(arg, DeclareLaunchArgument):
            context.launch_configurations[arg.name] = arg.default_value[0].perform(context)
    context.launch_configurations.update(arguments)
    opaque = next(a for a in ld.entities if isinstance(a, OpaqueFunction))
    return context, opaque.execute(context)


def _transition(node, start: str, goal: str):
    from launch_ros.events.lifecycle import StateTransition
    from lifecycle_msgs.msg import TransitionEvent

    msg = TransitionEvent()
    msg.start_state.label, msg.goal_state.label = start, goal
    return StateTransition(action=node, msg=msg)


def _activates(entities, context) -> int:
    """How many activate requests the handler's entities emit for the event in `context.locals`."""
    from launch.actions import EmitEvent, OpaqueFunction
    from lifecycle_msgs.msg import Transition

    count = 0
    for entity in entities or []:
        emitted = entity.execute(context) if isinstance(entity, OpaqueFunction) else [entity]
        for action in emitted or []:
            if isinstance(action, EmitEvent) and action.event.transition_id == Transition.TRANSITION_ACTIVATE:
                count += 1
    return count


def test_launch_autostart_activates_after_the_first_configure_only():
    module = _launch_module()
    from launch.actions import RegisterEventHandler
    from launch_ros.actions import LifecycleNode

    context, actions = _node_actions(module, autostart="true")
    node = next(a for a in actions if isinstance(a, LifecycleNode))
    handlers = [a.event_handler for a in actions if isinstance(a, RegisterEventHandler)]
    assert len(handlers) == 1 and handlers[0].handle_once, "the launch file reacts to one configure only"
    handler = handlers[0]
    context.register_event_handler(handler)
    first = _transition(node, "configuring", "inactive")
    assert handler.matches(first)
    assert _activates(handler.handle(first, context), context) == 1
    # later configures (after a manual cleanup) are the user's: the handler is gone, and would not activate
    context.extend_locals({"event": _transition(node, "configuring", "inactive")})
    assert _activates(handler.entities, context) == 0


def test_launch_large_images_argument_is_declared_and_builds_the_node():
    module = _launch_module()
    from launch_ros.actions import LifecycleNode

    _, actions = _node_actions(module, large_images="true", autostart="false")
    assert [a for a in actions if isinstance(a, LifecycleNode)]


def test_launch_without_autostart_registers_nothing():
    module = _launch_module()
    from launch.actions import EmitEvent, RegisterEventHandler

    _, actions = _node_actions(module, autostart="false")
    assert not [a for a in actions if isinstance(a, (RegisterEventHandler, EmitEvent))]
