#!/usr/bin/env bash
# Print the path of the llama-cpp-python wheel in .wheels/, building it there once if it is missing.
# llama-cpp-python is published as an sdist only; its wheel is tagged py3-none (ctypes bindings, no CPython
# ABI), so one build serves every Python of this machine (scripts/setup.sh for 3.11, check_py310.sh for 3.10).
# Default flags: a portable AVX2 build (~4 min on 2 cores); override with CMAKE_ARGS.
# Usage: scripts/llama_wheel.sh [PYTHON]   (the interpreter whose pip builds it; default python3)
set -euo pipefail
cd "$(dirname "$0")/.."
LLAMA_CPP_VERSION=0.3.36
PY=${1:-python3}
whl=$(ls .wheels/llama_cpp_python-${LLAMA_CPP_VERSION}-*.whl 2>/dev/null | head -n 1 || true)
if [ -z "$whl" ]; then
  echo "building llama-cpp-python ${LLAMA_CPP_VERSION} (one time, a few minutes)" >&2
  CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF}" \
    "$PY" -m pip wheel -q --no-deps -w .wheels "llama-cpp-python==${LLAMA_CPP_VERSION}" >&2
  whl=$(ls .wheels/llama_cpp_python-${LLAMA_CPP_VERSION}-*.whl | head -n 1)
fi
echo "$whl"
