#!/usr/bin/env bash
# Final benchmark numbers for the shipped default on this machine (run it on a quiet machine: nothing else
# running). Exports the cpu-x86 bundle with all three GGUF quantisations, runs `emo-edge bench` (every
# backend in a fresh process per round, six rounds, ~12 min on 2 cores), and regenerates docs/benchmarks.md from the results.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/bench/default-cpu-x86}
BUNDLE=${BUNDLE:-export/build/default-cpu-x86-allquants}
DATA=${DATA:-data/synthemo-v2}
[ -f "$DATA/test.jsonl" ] || .venv/bin/emo-edge data synth --out "$DATA" --split test
# (re-)export when the bundle is missing, was built from another checkpoint than the shipped default, or
# with other perception settings than export/cpu-x86.yaml's
fresh=$(.venv/bin/python -c "import dataclasses, json, os, sys
from emo_edge.checkpoint import content_digest as d
from emo_edge.export.profiles import load_profile
m = json.load(open(sys.argv[1])) if os.path.isfile(sys.argv[1]) else {}
same = m.get('checkpoint', {}).get('sha256') == d('default') and \\
    m.get('target', {}).get('perception') == dataclasses.asdict(load_profile('cpu-x86'))['perception']
print(int(same))" "$BUNDLE/manifest.json")
[ "$fresh" = 1 ] || .venv/bin/emo-edge export --force --checkpoint default --target cpu-x86 --out "$BUNDLE" \
  --llm-quant f16 --llm-quant q4_k_m --data "$DATA"
.venv/bin/emo-edge bench --bundle "$BUNDLE" --checkpoint default --data "$DATA" --out "$OUT" "$@"
.venv/bin/python -m emo_edge.bench.report "$OUT/results.json" --docs docs/benchmarks.md
