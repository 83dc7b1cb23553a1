#!/usr/bin/env bash
# Builds the iggt_ros ROS package (rosidl interfaces + Python package + executables) with colcon
# into build/ and install/, using the ROS 2 Jazzy wheels inside .venv.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
source tools/ros_env.sh
ros_wheels_link_build_paths
colcon --log-base log build --base-paths "$ROOT" --build-base build --install-base install \
  --event-handlers console_direct- \
  --cmake-args -DPython3_EXECUTABLE="$VENV/bin/python" \
    -DPython3_NumPy_INCLUDE_DIR=/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release
