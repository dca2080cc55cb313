#!/usr/bin/env bash
# The robot's Python: install the torch-free runtime into a Python 3.10 venv (`pip install .[runtime]`,
# as on ROS 2 Humble / JetPack 6) and run a bundle there: every runtime module imports without torch,
# `emo-edge eval --bundle` scores a few clips and `emo-edge run` plays one clip
# (video + its wav, WebRTC VAD, the LLM's reasoning).
#
# Usage: scripts/check_py310.sh [BUNDLE]   (default export/build/test-default-cpu-x86, the test suite's
# cpu-x86 export of the shipped default; exported with .venv first if it is missing)
# Env: PY310 (interpreter, default pyenv's 3.10.13), VENV310 (venv directory, default .venv310, reused).
set -euo pipefail
cd "$(dirname "$0")/.."
PY310=${PY310:-/root/.pyenv/versions/3.10.13/bin/python}
VENV=$(realpath -m "${VENV310:-.venv310}")
BUNDLE=${1:-export/build/test-default-cpu-x86}
N_CLIPS=6
t0=$(date +%s)
stamp() { echo "[py310 +$(( $(date +%s) - t0 )) s] $*"; }

[ -x "$PY310" ] || { echo "error: no Python 3.10 at $PY310 (set PY310)" >&2; exit 2; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# test clips and, if needed, the bundle come from the main (3.11, torch) environment
.venv/bin/emo-edge data synth --out "$work/clips" --n "$N_CLIPS" --split test --seed 11 >/dev/null
if [ ! -f "$BUNDLE/manifest.json" ]; then
  stamp "exporting the shipped default for cpu-x86 into $BUNDLE (main venv)"
  .venv/bin/emo-edge data synth --out "$work/clips" --n 12 --split val --seed 11 >/dev/null
  .venv/bin/emo-edge export --out "$BUNDLE" --target cpu-x86 --data "$work/clips" \
    --calibration "$work/clips/val.jsonl" --parity-clips 4 --force
fi
BUNDLE=$(cd "$BUNDLE" && pwd)
stamp "clips ready"
unset PYTHONPATH  # from here on, only what the 3.10 venv installed

[ -x "$VENV/bin/python" ] || "$PY310" -m venv "$VENV"
"$VENV/bin/python" -c 'import sys; assert sys.version_info[:2] == (3, 10), sys.version'
# the llama-cpp-python wheel is py3-none: the one setup.sh built serves 3.10 too
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "$(bash scripts/llama_wheel.sh "$PY310")" ".[runtime]"
stamp "installed: $("$VENV/bin/python" -m pip list --format=freeze 2>/dev/null | grep -iE '^(numpy|onnxruntime|llama.cpp.python|emo.edge)==' | tr '\n' ' ')"

# from outside the checkout, so emo_edge is the installed one
cd "$work"
"$VENV/bin/python" - <<'PY'
import importlib, pkgutil, sys
try:
    import torch  # noqa: F401
    sys.exit("torch is importable in the Python 3.10 runtime venv; this check must run without it")
except ImportError:
    pass
import emo_edge, emo_edge.runtime
assert "site-packages" in emo_edge.__file__, emo_edge.__file__
names = ["emo_edge.cli", "emo_edge.resources", "emo_edge.config", "emo_edge.eval.evaluate"]
names += [m.name for m in pkgutil.iter_modules(emo_edge.runtime.__path__, "emo_edge.runtime.")]
for name in names:
    importlib.import_module(name)
from emo_edge.export.profiles import load_profile  # a target profile from the wheel's package data
assert load_profile("cpu-x86").llm.quantization == "q8_0"
print(f"imported {len(names)} modules on Python {sys.version.split()[0]} without torch; profiles from the wheel")
PY
"$VENV/bin/emo-edge" eval --bundle "$BUNDLE" --data "$work/clips" --limit "$N_CLIPS" --json "$work/eval.json"
"$VENV/bin/python" -c "
import json, sys
r = json.load(open('$work/eval.json'))
assert r['n'] == $N_CLIPS and r['n_bad'] == 0 and r['n_unparsed'] < $N_CLIPS, r
print('eval --bundle on Python 3.10: n', r['n'], 'acc', r['acc'], 'waf', r['waf'])"
stamp "eval done"
clip=$(ls "$work"/clips/test/*.mp4 | head -n 1)
"$VENV/bin/emo-edge" run --bundle "$BUNDLE" --video "$clip" --audio "${clip%.mp4}.wav" --jsonl "$work/run.jsonl"
[ -s "$work/run.jsonl" ] || { echo "error: emo-edge run wrote no updates" >&2; exit 1; }
stamp "run done ($(wc -l < "$work/run.jsonl") updates); Python 3.10 runtime check passed"
