#!/usr/bin/env bash
# One command on a fresh machine: set up, generate a SynthEmo test split, and evaluate the shipped
# default model on it (labels and reasons from the LLM). Output under runs/quickstart/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
N=${N:-600}
emo-edge data synth --out data/synthemo --split test --n "$N" --seed 0
emo-edge eval --checkpoint default --data data/synthemo --answer-from llm --json runs/quickstart/eval.json
echo "report: runs/quickstart/eval.json (confusion matrix: runs/quickstart/eval.confusion.png)"
