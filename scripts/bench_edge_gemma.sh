#!/usr/bin/env bash
# Latency of edge-gemma's cpu-x86 bundles next to the toy default's, through `emo-edge bench`:
#   edge-gemma-lora    the base+lora form: the vendor's Q4_K_M file untouched + the GGUF LoRA adapter
#   edge-gemma-merged  LoRA folded in, converted and quantised: Q8_0 (the profile's) and Q4_K_M
#   default            the shipped toy default (4-layer LLaMA), Q8_0 and Q4_K_M
# Prints TTFT p50 and decode tok/s per GGUF. CKPT may name any edge-gemma-shaped checkpoint; one whose LoRA is
# (near) its zero init answers like the base model, which is fine for latency and must be labelled so.
# Run it on a quiet machine. Env: CKPT (edge-gemma), DATA (data/synthemo, its test split feeds the windows),
# CALIB (the INT8 calibration clips, default DATA/val.jsonl), BUILD (export/build), OUT (runs/bench-edge-gemma),
# ROUNDS (2).
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
CKPT=${CKPT:-edge-gemma}
DATA=${DATA:-data/synthemo}
CALIB=${CALIB:-$DATA/val.jsonl}
BUILD=${BUILD:-export/build}
OUT=${OUT:-runs/bench-edge-gemma}
ROUNDS=${ROUNDS:-2}
export_one() {  # name, checkpoint, export options...
  local name=$1 ckpt=$2
  shift 2
  [ -f "$BUILD/$name/manifest.json" ] && [ -z "${FORCE:-}" ] && return
  emo-edge export --checkpoint "$ckpt" --target cpu-x86 --out "$BUILD/$name" --data "$DATA" --calibration "$CALIB" \
    --parity-clips 2 --force "$@"
}
export_one edge-gemma-lora "$CKPT" --llm-form base+lora
export_one edge-gemma-merged "$CKPT" --llm-form merged --llm-quant q4_k_m
export_one default "default" --llm-quant q4_k_m
for name in default edge-gemma-lora edge-gemma-merged; do
  emo-edge bench --bundle "$BUILD/$name" --data "$DATA" --out "$OUT/$name" --rounds "$ROUNDS" --reps 10 \
    --min-seconds 1 --eval-clips 0
done
python - "$OUT" <<'EOF'
import json
import sys
from pathlib import Path

print("| bundle | GGUF | TTFT p50 ms | prefill p50 ms | decode tok/s | answer tokens | 1-min load before |")
print("|---|---|---|---|---|---|---|")
for run in ("default", "edge-gemma-lora", "edge-gemma-merged"):
    r = json.loads((Path(sys.argv[1]) / run / "results.json").read_text())
    for b in r["backends"]:
        if b["backend"].startswith("llama.cpp"):
            s = b["stages"]
            print(f"| {run} | {b['backend'].split('-', 1)[1]} | {s['ttft']['p50_ms']:.1f} | {s['prefill']['p50_ms']:.1f} "
                  f"| {s['decode_per_token']['tok_s']:.1f} | {b.get('answer_tokens_mean', 0):.0f} "
                  f"| {r['machine']['load_before']['load_1min']:.1f} |")
EOF
