#!/usr/bin/env bash
# The test command: builds the ROS package with colcon (interfaces generated, Python package
# installed next to them) and runs pytest against the built install, so node tests use real
# rclpy over DDS on loopback. Extra arguments go to pytest.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
[ -x .venv/bin/python ] || { echo "no .venv: run tools/setup.sh first" >&2; exit 2; }
bash tools/colcon_build.sh >/tmp/iggt_colcon_build.log 2>&1 || { cat /tmp/iggt_colcon_build.log; exit 1; }
source tools/ros_env.sh
set +u
source install/setup.bash
set -u
export IGGT_ROS_TEST_INSTALL="$ROOT/install"
# -P: do not put the source tree first on sys.path; tests import the colcon-built install.
exec "$VENV/bin/python" -P -m pytest -q -p no:cacheprovider "$@"
