#!/usr/bin/env bash
# Reproduce the shipped default model (emo_edge/default/): generate the standard SynthEmo v2 splits
# (seed 0), train the edge-small preset (seed 0) through stages 0, 1, 2 and copy the checkpoint into the
# package; `bash scripts/measure_default.sh` then measures it. About 100 minutes on 2 CPU cores: the shipped
# run 9 was trained in two parts, its stages (61 min) from run 7's encoder warm-up (38 min);
# emo_edge/default/meta.json, `provenance`.
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
emo-edge train --preset edge-small --data "$DATA" --out "$OUT" --seed 0
rm -rf emo_edge/default.tmp && mkdir -p emo_edge/default.tmp
cp -r "$OUT"/config.yaml "$OUT"/perception.safetensors "$OUT"/meta.json "$OUT"/log.jsonl "$OUT"/llm "$OUT"/lora \
  emo_edge/default.tmp/
rm -rf emo_edge/default && mv emo_edge/default.tmp emo_edge/default
echo "shipped: emo_edge/default ($(du -sh emo_edge/default | cut -f1))"
