#!/usr/bin/env bash
# The GPU check: one prepared run on an NVIDIA GPU machine without network (PyTorch with CUDA, nvcc, CMake, ninja;
# no TensorRT, no onnxruntime-gpu) in at most 8 minutes, writing one JSON of results (scripts/gpu_check.py
# lists the parts; each records pass / fail / skipped with its reason, and the next one runs regardless).
#
#   bash scripts/gpu_check.sh --prepare        here, with network and espeak-ng: fills .gpu_check/ (gitignored,
#                                              carried to the GPU machine): the trimmed llama-cpp-python source,
#                                              cp312 wheels of the pure-Python needs the machine lacks, SynthEmo clips
#   bash scripts/gpu_check.sh [JSON]           on the GPU machine (default $OUT/gpu_check.json, else ./gpu_check.json)
#   bash scripts/gpu_check.sh --dry-run [JSON] anywhere: the environment only, every other part skipped
#
# Without CUDA the full run still completes: the gpu tests report their skips, the llama.cpp parts say why not.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--prepare" ]; then
  dir=.gpu_check
  mkdir -p "$dir/wheels"
  bash scripts/vendor_llama_cpp.sh "$dir"
  # not on the GPU image (see the README's "Hardware verified"); the versions this venv holds
  pins=$(.venv/bin/python -c "import importlib.metadata as m
print(' '.join(f'{p}=={m.version(p)}' for p in ('soundfile', 'cffi', 'pycparser', 'gguf', 'diskcache')))")
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d "$dir/wheels" \
    $pins
  # SynthEmo clips: the test suite's set and 100 test clips for llama.cpp (espeak-ng is not on the GPU machine)
  .venv/bin/python scripts/gpu_check.py --prepare-data "$dir"
  du -sh "$dir" "$dir"/*
  exit 0
fi
exec "${PYTHON:-python3}" scripts/gpu_check.py "$@"
