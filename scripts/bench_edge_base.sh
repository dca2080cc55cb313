#!/usr/bin/env bash
# Real-size perception on this machine: the edge-base preset (SigLIP-B/16 image and frame towers, Whisper-base audio
# encoder cut to the 4 s window) with RANDOM weights (no pretrained weights can be downloaded here; the cost of a graph
# does not depend on its weights), exported to cpu-x86 with the transformer INT8 layout and benched.
#   1. emo-edge init --random-weights  -> $CKPT (meta.json: random_weights true; the toy LLM of the shipped default)
#   2. emo-edge export --target cpu-x86 --int8-layout transformer -> $BUNDLE (parity vs eager, INT8 vs fp32 on real
#      clips, the manifest records random_weights)
#   3. emo-edge bench -> $OUT/results.json (targets: the issue's ratios), results.md; the docs page's edge-base section
# Env: ROUNDS (default 6), REPS (timed repetitions per stage, default 10), DATA (SynthEmo v2 with val/test splits).
# Run it on a quiet machine: ~40 min on 2 cores with ROUNDS=6; ROUNDS=1 REPS=3 for a smoke run.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-6}
REPS=${REPS:-10}
DATA=${DATA:-data/synthemo-v2}
CKPT=${CKPT:-runs/ckpt/edge-base-random}
BUNDLE=${BUNDLE:-export/build/edge-base-cpu-x86}
OUT=${OUT:-runs/bench/edge-base}
DOCS=${DOCS:-docs/benchmarks.md}
EE=.venv/bin/emo-edge
[ -f "$DATA/test.jsonl" ] && [ -f "$DATA/val.jsonl" ] || { echo "no $DATA/{val,test}.jsonl: set DATA" >&2; exit 2; }
[ -d "$CKPT" ] || $EE init --preset edge-base --random-weights --out "$CKPT"
# (re-)export when the bundle is missing or was built from another checkpoint
fresh=$(.venv/bin/python -c "import json, os, sys
from emo_edge.checkpoint import content_digest as d
m = json.load(open(sys.argv[1])) if os.path.isfile(sys.argv[1]) else {}
print(int(m.get('checkpoint', {}).get('sha256') == d(sys.argv[2])))" "$BUNDLE/manifest.json" "$CKPT")
[ "$fresh" = 1 ] || $EE export --force --checkpoint "$CKPT" --target cpu-x86 --int8-layout transformer \
  --out "$BUNDLE" --data "$DATA" --calibration "$DATA/val.jsonl" --parity-clips 8
# eval-clips 0: head and LLM accuracies of random weights mean nothing
$EE bench --bundle "$BUNDLE" --checkpoint "$CKPT" --data "$DATA" --out "$OUT" --rounds "$ROUNDS" --reps "$REPS" \
  --min-seconds 1 --eval-clips 0 "$@"
.venv/bin/python -m emo_edge.bench.report "$OUT/results.json" --docs "$DOCS" --section edge-base
