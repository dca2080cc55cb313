#!/usr/bin/env bash
# Reproduce the shipped default model (emo_edge/default/): generate the standard SynthEmo v2 splits
# (seed 0), train the edge-small preset (seed 0) through stages 0, 1, 2, then a second pass from that run's
# perception (a second isolated encoder warm-up of REFINE_STEPS, then stages 1 and 2 again with the first pass's
# stage-0 LM and fresh adapters and LoRA), and copy the second pass into the package; `bash
# scripts/measure_default.sh` then measures it. About 160 minutes on 2 CPU cores (first pass ~100, second ~61).
# The shipped run 10 is such a second pass over run 9 (itself run 7's perception under run 9's stage 0);
# emo_edge/default/meta.json, `provenance`; docs/synthemo-v2-training.md.
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
DATA=${DATA:-data/synthemo-v2}
OUT=${OUT:-runs/edge-small-default}
# (re)generate unless every split is there, drawn with the current render ranges (synth_v2.RENDER)
python - "$DATA" <<'PY' || emo-edge data synth --out "$DATA" --version 2 --seed 0
import json, sys
from pathlib import Path
from emo_edge.data.synth_v2 import RENDER
info = [Path(sys.argv[1]) / f"{s}.synth.json" for s in ("train", "val", "test")]
sys.exit(0 if all(p.is_file() and json.loads(p.read_text()).get("render") == RENDER for p in info) else 1)
PY
REFINE_STEPS=${REFINE_STEPS:-2000}
emo-edge train --preset edge-small --data "$DATA" --out "$OUT-pass1" --seed 0
# the second pass: a directory holding a stage-0 LM (llm/) and no training state trains stages 1 and 2 on it
rm -rf "$OUT" && mkdir -p "$OUT" && cp -r "$OUT-pass1/llm" "$OUT/"
emo-edge train --preset edge-small --data "$DATA" --out "$OUT" --seed 0 --stages 1,2 \
  --set init_perception="$OUT-pass1" --set encoder_steps="$REFINE_STEPS"
rm -rf emo_edge/default.tmp && mkdir -p emo_edge/default.tmp
cp -r "$OUT"/config.yaml "$OUT"/perception.safetensors "$OUT"/meta.json "$OUT"/log.jsonl "$OUT"/llm "$OUT"/lora \
  emo_edge/default.tmp/
rm -rf emo_edge/default && mv emo_edge/default.tmp emo_edge/default
echo "shipped: emo_edge/default ($(du -sh emo_edge/default | cut -f1))"
