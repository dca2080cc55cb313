#!/usr/bin/env bash
# The numbers in the README: evaluate the shipped default on the SynthEmo test split (seed 0) and an
# unseen-seed test split, the single-modality ablation, then export a cpu-x86 bundle and evaluate it
# torch-free. Writes runs/results/*.json (+ confusion PNGs). ~10 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
R=runs/results
B=export/build/default-cpu-x86
mkdir -p "$R"
[ -f data/synthemo/test.jsonl ] || emo-edge data synth --out data/synthemo --seed 0
[ -f data/synthemo-seed12345/test.jsonl ] || emo-edge data synth --out data/synthemo-seed12345 --split test --n 600 --seed 12345
ev() { emo-edge eval --data data/synthemo "$@"; }
ev --answer-from llm --json $R/default-llm.json
ev --answer-from head --json $R/default-head.json
# views: image = peak frame, video = temporal frames (image,video is the whole visual input)
for m in image,video audio image video text audio,text; do
  n=${m//,/+}
  [ "$m" = text ] || ev --answer-from head --modalities $m --json $R/default-head-$n.json
  ev --answer-from llm --modalities $m --no-reason --json $R/default-llm-$n.json
done
emo-edge eval --data data/synthemo-seed12345 --answer-from llm --json $R/default-llm-seed12345.json
emo-edge export --checkpoint default --target cpu-x86 --out $B --llm-quant q4_k_m --data data/synthemo \
  --parity-clips 64 --force
for p in fp32 int8; do ev --bundle $B --precision $p --answer-from head --json $R/bundle-$p-head.json; done
ev --bundle $B --precision int8 --quant q8_0 --json $R/bundle-int8-q8_0.json
ev --bundle $B --precision fp32 --quant f16 --no-reason --json $R/bundle-fp32-f16.json
ev --bundle $B --precision int8 --quant q4_k_m --no-reason --json $R/bundle-int8-q4_k_m.json
python scripts/summarize_results.py $R | tee $R/summary.md
for b in fp32-f16 int8-q8_0 int8-q4_k_m; do
  echo -n "checkpoint vs bundle-$b: " | tee -a $R/summary.md
  python scripts/compare_runs.py $R/default-llm.json $R/bundle-$b.json | tee -a $R/summary.md
done
