#!/usr/bin/env bash
# Builds the iggt_ros ROS package (rosidl interfaces + Python package + executables) with colcon
# into build/ and install/, using the ROS 2 Jazzy wheels inside .venv.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
source tools/ros_env.sh
ros_wheels_link_build_paths
# tf2_msgs has no wheel; without it the node's TF fallback cannot receive /tf. Build the stand-in
# in tools/ros_deps (ignored by colcon everywhere else) only when the real package is missing.
if ! "$VENV/bin/python" -c "import tf2_msgs.msg" >/dev/null 2>&1 && [ ! -d install/tf2_msgs ]; then
  colcon --log-base log build --base-paths "$ROOT/tools/ros_deps/tf2_msgs" --build-base build --install-base install \
    --event-handlers console_direct- \
    --cmake-args -DPython3_EXECUTABLE="$VENV/bin/python" \
      -DPython3_NumPy_INCLUDE_DIR=/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include \
      -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release
fi
colcon --log-base log build --base-paths "$ROOT" --build-base build --install-base install \
  --event-handlers console_direct- \
  --cmake-args -DPython3_EXECUTABLE="$VENV/bin/python" \
    -DPython3_NumPy_INCLUDE_DIR=/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release
