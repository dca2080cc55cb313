#!/usr/bin/env bash
# The full-size `paper` image encoder (random weights, ~4 GB fp32) exported once with ONNX external data and
# checked against eager PyTorch; time, peak RSS (/usr/bin/time -v) and file sizes go to $OUT/report.json and
# $OUT/time.txt. Needs ~16 GB of free memory; ~10 min on 2 quiet cores.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/export/paper-image-encoder}
mkdir -p "$OUT"
/usr/bin/time -v -o "$OUT/time.txt" .venv/bin/python scripts/export_paper_image_encoder.py --out "$OUT" "$@"
grep -E "Maximum resident|Elapsed" "$OUT/time.txt"
ls -l "$OUT"
