"""Launch the iggt_ros lifecycle node, configured and activated automatically, with optional RViz.

    ros2 launch iggt_ros iggt.launch.py
    ros2 launch iggt_ros iggt.launch.py config:=/path/my_iggt.yaml checkpoint:=/models/iggt_1b.safetensors
    ros2 launch iggt_ros iggt.launch.py camera_remaps:="camera/image_raw=/realsense/color/image_raw,\
camera/camera_info=/realsense/color/camera_info" rviz:=true

Arguments:
  config         parameter file (default: the package's config/iggt.yaml, all defaults)
  checkpoint     weights file; overrides engine.checkpoint when given
  engine_backend torch | onnxruntime | tensorrt; overrides engine.backend when given
  engine_path    ONNX model or TensorRT plan; overrides engine.engine_path when given
  namespace      namespace of the node (outputs become <namespace>/iggt/...)
  camera_remaps  comma-separated FROM=TO topic remappings, e.g. for each camera's image_raw and camera_info
  use_sim_time   true when replaying a bag with --clock
  autostart      configure the node at start and activate it after that first configure (default true);
                 later lifecycle transitions (ros2 lifecycle set ...) are left to you
  large_images   true: run the node with config/fastdds_large_images.xml, a Fast DDS profile whose 32 MiB
                 shared-memory segment holds large images and clouds (default false; see the README,
                 "Large images over Fast DDS", for the camera drivers' side)
  torch_threads  PyTorch threads, 0 = every CPU the node may use (threads.torch; default 1)
  pixel_threads  threads of the compiled per-pixel passes, 0 = every CPU (threads.pixel; default 0)
  rviz           start RViz with the package's config/iggt.rviz (default false); also turns on
                 publish.colorized_instance_images, the instance image it shows (of the camera 'camera';
                 pick another camera's topic in RViz)
"""

from __future__ import annotations

import os

import lifecycle_msgs.msg
from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler
from launch.conditions import IfCondition
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from launch_ros.parameter_descriptions import ParameterValue

from iggt_ros.ros.launch_logic import (
    ACTIVATE,
    CONFIGURE,
    THREAD_ARGUMENTS,
    Autostart,
    fastdds_environment,
    parse_remaps,
    thread_setup,
)

PACKAGE = "iggt_ros"
NODE_NAME = "iggt_node"
TRANSITIONS = {CONFIGURE: lifecycle_msgs.msg.Transition.TRANSITION_CONFIGURE,
               ACTIVATE: lifecycle_msgs.msg.Transition.TRANSITION_ACTIVATE}

__all__ = ["generate_launch_description", "parse_remaps"]


def _node_actions(context, *args, **kwargs):
    def get(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    parameters: dict = {"config_file": get("config"), "use_sim_time": get("use_sim_time").lower() == "true"}
    if get("rviz").lower() == "true":
        parameters["publish.colorized_instance_images"] = True  # the instance image RViz shows
    for arg, key in (("checkpoint", "engine.checkpoint"), ("engine_backend", "engine.backend"),
                     ("engine_path", "engine.engine_path")):
        if get(arg):
            parameters[key] = get(arg)
    environment = fastdds_environment(get("large_images").lower() == "true",
                                      os.path.join(get_package_share_directory(PACKAGE), "config"))
    thread_parameters, thread_environment = thread_setup(get("config"), {name: get(name) for name in THREAD_ARGUMENTS})
    parameters.update(thread_parameters)
    environment.update(thread_environment)
    node = LifecycleNode(
        package=PACKAGE, executable=NODE_NAME, name=NODE_NAME, namespace=get("namespace"),
        parameters=[parameters], remappings=parse_remaps(get("camera_remaps")), output="screen",
        additional_env=environment or None,
    )
    autostart = Autostart(enabled=get("autostart").lower() == "true")
    if not autostart.enabled:
        return [node]

    def change(name: str) -> EmitEvent:
        return EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node),
                                           transition_id=TRANSITIONS[name]))

    def after_first_configure(context):
        event = context.locals.event
        return [change(name) for name in autostart.after_transition(event.start_state, event.goal_state)]

    # handle_once: the handler goes after the end of the first configure, so a configure the user
    # requests later (after a cleanup) is not followed by an activate the user did not ask for.
    after_configure = RegisterEventHandler(OnStateTransition(
        target_lifecycle_node=node, start_state="configuring",
        entities=[OpaqueFunction(function=after_first_configure)], handle_once=True))
    return [after_configure, node, *(change(name) for name in autostart.at_launch())]


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory(PACKAGE)
    return LaunchDescription([
        DeclareLaunchArgument("config", default_value=os.path.join(share, "config", "iggt.yaml"),
                              description="parameter file of the node"),
        DeclareLaunchArgument("checkpoint", default_value="",
                              description="weights file; overrides engine.checkpoint when not empty"),
        DeclareLaunchArgument("engine_backend", default_value="",
                              description="torch | onnxruntime | tensorrt; overrides engine.backend when not empty"),
        DeclareLaunchArgument("engine_path", default_value="",
                              description="ONNX model or TensorRT plan; overrides engine.engine_path when not empty"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node"),
        DeclareLaunchArgument("camera_remaps", default_value="",
                              description="comma-separated FROM=TO remappings of camera topics"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="use /clock (bag replay)"),
        DeclareLaunchArgument("autostart", default_value="true",
                              description="configure and activate the lifecycle node at start"),
        DeclareLaunchArgument("large_images", default_value="false",
                              description="run the node with the Fast DDS profile for large images "
                                          "(config/fastdds_large_images.xml, 32 MiB shared memory)"),
        DeclareLaunchArgument("torch_threads", default_value="",
                              description="PyTorch threads (0 = every CPU); overrides threads.torch when not empty"),
        DeclareLaunchArgument("pixel_threads", default_value="",
                              description="threads of the per-pixel passes; overrides threads.pixel when not empty"),
        DeclareLaunchArgument("rviz", default_value="false", description="start RViz with config/iggt.rviz"),
        OpaqueFunction(function=_node_actions),
        Node(package="rviz2", executable="rviz2", name="iggt_rviz", output="screen",
             arguments=["-d", os.path.join(share, "config", "iggt.rviz")],
             parameters=[{"use_sim_time": ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool)}],
             condition=IfCondition(LaunchConfiguration("rviz"))),
    ])
