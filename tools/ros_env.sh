# Sourced by the build and test scripts: points CMake, ament and colcon at the ROS 2 Jazzy
# wheels installed inside .venv, and applies the two workarounds those wheels need.
ROOT=${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
VENV="$ROOT/.venv"
export PATH="$VENV/bin:$PATH"
export VIRTUAL_ENV="$VENV"
export CMAKE_PREFIX_PATH="$VENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
# Keep DDS traffic of tests on this machine.
export ROS_LOCALHOST_ONLY=${ROS_LOCALHOST_ONLY:-1}
export ROS_AUTOMATIC_DISCOVERY_RANGE=${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}
export RMW_IMPLEMENTATION=${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}

# The wheels' CMake files name the Python of the machine they were built on. Point those
# paths at this interpreter's headers and this venv's numpy headers (needs write access to /opt).
ros_wheels_link_build_paths() {
  local inc np
  inc=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['include'])")
  np=$("$VENV/bin/python" -c "import numpy, os; print(os.path.join(os.path.dirname(numpy.__file__), '_core', 'include'))")
  local want_inc=/opt/python/cp311-cp311/include/python3.11
  local want_np=/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include
  for pair in "$want_inc|$inc" "$want_np|$np"; do
    local link=${pair%%|*} target=${pair##*|}
    if [ "$(readlink -f "$link" 2>/dev/null)" != "$(readlink -f "$target")" ]; then
      mkdir -p "$(dirname "$link")" 2>/dev/null || sudo mkdir -p "$(dirname "$link")"
      ln -sfn "$target" "$link" 2>/dev/null || sudo ln -sfn "$target" "$link"
    fi
  done
}
