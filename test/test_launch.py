"""The launch file: its decisions (tested everywhere) and its launch actions (where launch_ros exists).

`iggt_ros.ros.launch_logic` holds what the launch file decides, so it is tested here without the
launch packages; the tests that build the real launch description skip where launch_ros is missing
and run in the ROS workflow.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from iggt_ros.ros.launch_logic import ACTIVATE, CONFIGURE, Autostart, parse_remaps

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


def test_launch_without_autostart_registers_nothing():
    module = _launch_module()
    from launch.actions import EmitEvent, RegisterEventHandler

    _, actions = _node_actions(module, autostart="false")
    assert not [a for a in actions if isinstance(a, (RegisterEventHandler, EmitEvent))]
