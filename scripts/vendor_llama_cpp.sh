#!/usr/bin/env bash
# A trimmed llama-cpp-python source for building llama.cpp with CUDA on a machine without network
# (scripts/gpu_check.sh). From the PyPI sdist it drops what a `-DGGML_CUDA=on -DLLAVA_BUILD=OFF` library build
# never reads: model/vocab GGUFs, docs, media, tests, benches, examples, tools (mtmd included: build with
# LLAVA_BUILD=OFF), conversion scripts, gguf-py and the ggml backends other than CPU and CUDA.
# Writes OUT_DIR/llama-cpp-python-<version>-trimmed.tar.gz (default OUT_DIR .gpu_check/, gitignored).
# Usage: scripts/vendor_llama_cpp.sh [OUT_DIR]   (env LLAMA_SDIST: an already downloaded sdist to start from)
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=0.3.36
OUT=${1:-.gpu_check}
mkdir -p "$OUT"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sdist=${LLAMA_SDIST:-}
if [ -z "$sdist" ]; then
  python3 -m pip download -q --no-deps --no-binary :all: -d "$work" "llama-cpp-python==${VERSION}"
  sdist=$(ls "$work"/llama_cpp_python-${VERSION}.tar.gz)
fi
tar xzf "$sdist" -C "$work"
src="$work/llama_cpp_python-${VERSION}"
lc="$src/vendor/llama.cpp"
rm -rf "$src"/{docs,examples,docker,tests,scripts} \
  "$lc"/{models,docs,media,benches,tests,gguf-py,conversion,scripts,examples,pocs,tools,grammars,prompts,requirements} \
  "$lc"/{.github,.devops,ci,licenses/.git} "$lc"/*.py "$lc"/requirements*.txt
for backend in "$lc"/ggml/src/ggml-*/; do
  case "$(basename "$backend")" in ggml-cpu|ggml-cuda) ;; *) rm -rf "$backend" ;; esac
done
find "$src" -name '.git*' -prune -exec rm -rf {} +
tar czf "$OUT/llama-cpp-python-${VERSION}-trimmed.tar.gz" -C "$work" "llama_cpp_python-${VERSION}"
du -sh "$src" | awk '{print "trimmed source: " $1 " unpacked"}'
ls -l "$OUT/llama-cpp-python-${VERSION}-trimmed.tar.gz" | awk '{print "wrote " $NF ": " $5 " bytes"}'
