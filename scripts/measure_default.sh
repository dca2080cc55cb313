#!/usr/bin/env bash
# The numbers in the README: evaluate the shipped default on the SynthEmo test split (seed 0) and an
# unseen-seed test split, the single-modality ablation, then export a cpu-x86 bundle and evaluate it
# torch-free. Writes runs/results/*.json (+ confusion PNGs). ~15 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
R=runs/results
mkdir -p "$R"
[ -f data/synthemo/test.jsonl ] || emo-edge data synth --out data/synthemo --seed 0
[ -f data/synthemo-seed12345/test.jsonl ] || emo-edge data synth --out data/synthemo-seed12345 --split test --n 600 --seed 12345
emo-edge eval --checkpoint default --data data/synthemo --answer-from llm --json $R/default-llm.json
emo-edge eval --checkpoint default --data data/synthemo --answer-from head --json $R/default-head.json
for m in video audio; do
  emo-edge eval --checkpoint default --data data/synthemo --answer-from llm --modalities $m --no-reason --json $R/default-llm-$m.json
  emo-edge eval --checkpoint default --data data/synthemo --answer-from head --modalities $m --json $R/default-head-$m.json
done
emo-edge eval --checkpoint default --data data/synthemo-seed12345 --answer-from llm --json $R/default-llm-seed12345.json
emo-edge export --checkpoint default --target cpu-x86 --out export/build/default-cpu-x86 --llm-quant q4_k_m \
  --data data/synthemo --parity-clips 64 --force
for p in fp32 int8; do
  emo-edge eval --bundle export/build/default-cpu-x86 --data data/synthemo --precision $p --quant q8_0 --json $R/bundle-$p-q8_0.json
done
emo-edge eval --bundle export/build/default-cpu-x86 --data data/synthemo --precision int8 --quant q4_k_m --json $R/bundle-int8-q4_k_m.json
emo-edge eval --bundle export/build/default-cpu-x86 --data data/synthemo --precision fp32 --quant f16 --no-reason --json $R/bundle-fp32-f16.json
python scripts/summarize_results.py $R
for b in fp32-f16 fp32-q8_0 int8-q8_0 int8-q4_k_m; do
  echo -n "checkpoint vs bundle-$b: "; python scripts/compare_runs.py $R/default-llm.json $R/bundle-$b.json
done
