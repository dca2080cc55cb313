#!/usr/bin/env bash
# Reproduce the shipped default model (emo_edge/default/): generate the standard SynthEmo v2 splits
# (seed 0), train the edge-small preset (seed 0) through stages 0, 1, 2 and copy the checkpoint into the
# package; `bash scripts/measure_default.sh` then measures it. About an hour on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
DATA=${DATA:-data/synthemo-v2}
OUT=${OUT:-runs/edge-small-default}
[ -f "$DATA/test.jsonl" ] || emo-edge data synth --out "$DATA" --version 2 --seed 0
emo-edge train --preset edge-small --data "$DATA" --out "$OUT" --seed 0
rm -rf emo_edge/default.tmp && mkdir -p emo_edge/default.tmp
cp -r "$OUT"/config.yaml "$OUT"/perception.safetensors "$OUT"/meta.json "$OUT"/log.jsonl "$OUT"/llm "$OUT"/lora \
  emo_edge/default.tmp/
rm -rf emo_edge/default && mv emo_edge/default.tmp emo_edge/default
echo "shipped: emo_edge/default ($(du -sh emo_edge/default | cut -f1))"
