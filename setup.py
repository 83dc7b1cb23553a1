"""pip entry point: makes iggt_ros installable without ROS (core, CLI, replay, training, export).

The ROS package build (interfaces, node executables, launch files) is CMakeLists.txt's job;
both install the same Python package.
"""

from setuptools import setup

setup()
