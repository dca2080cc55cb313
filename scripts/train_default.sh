#!/usr/bin/env bash
# Reproduce the shipped default model (emo_edge/default/). It is trained on SynthEmo v2 (seed 0) with
# its encoders, fusion and head started from the SynthEmo v1 model (the earlier default): from fresh
# weights the v2 warm-up left the peak-frame encoder at chance after 1400 steps (v1's had left chance by
# step 600), so the v1 model is trained first when $V1 does not hold it. Then stage 0 (the LM on v2's
# text), stage 1 (1000 warm-up steps + 500 with the LLM) and stage 2 (700). About 40 min of training on
# 2 CPU cores for the v2 run, plus about 55 min when the v1 model must be trained first.
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
DATA=${DATA:-data/synthemo-v2}
V1=${V1:-runs/edge-small-v1}
OUT=${OUT:-runs/edge-small-v2}
if [ ! -f "$V1/perception.safetensors" ]; then
  [ -f data/synthemo/train.jsonl ] || emo-edge data synth --out data/synthemo --version 1 --seed 0
  emo-edge train --preset edge-small --data data/synthemo --out "$V1" --seed 0
fi
[ -f "$DATA/test.jsonl" ] || emo-edge data synth --out "$DATA" --version 2 --seed 0
emo-edge train --preset edge-small --data "$DATA" --out "$OUT" --seed 0 --set init_perception="$V1" \
  --set encoder_steps=1000
rm -rf emo_edge/default.tmp && mkdir -p emo_edge/default.tmp
cp -r "$OUT"/config.yaml "$OUT"/perception.safetensors "$OUT"/meta.json "$OUT"/log.jsonl "$OUT"/llm "$OUT"/lora \
  emo_edge/default.tmp/
rm -rf emo_edge/default && mv emo_edge/default.tmp emo_edge/default
echo "shipped: emo_edge/default ($(du -sh emo_edge/default | cut -f1))"
