#!/usr/bin/env bash
# The numbers in the README's Results, for a checkpoint (the shipped default unless CKPT=...) on SynthEmo v2:
#   the test split (data/synthemo-v2, seed 0), an unseen-seed test split (seed 12345, 600 clips) and the
#   neutral-text variant of the test split (emotion-neutral subtitles and speech); head and LLM evaluations,
#   the label read from the reason (as the runtime reads it) next to the short answer; ablations by view for
#   head and LLM; then a cpu-x86 bundle exported and evaluated torch-free against the checkpoint.
# Writes $R/*.json (+ confusion PNGs) and $R/summary.md (scripts/summarize_results.py: every run, then the
# issue's targets with value, goal and met). The full run evaluates ~20 x 600 clips: about an hour on 2 cores.
#   LIMIT=8 bash scripts/measure_default.sh     # a smoke run: 8 clips per evaluation, results under runs/results-limit8
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
CKPT=${CKPT:-default}
N_TEST=${LIMIT:-600}  # clips per generated test split and per evaluation
R=${RESULTS:-runs/results${LIMIT:+-limit$LIMIT}}
B=${BUNDLE:-export/build/default-cpu-x86}
D=data/synthemo-v2                      # standard splits, seed 0 (the training data of the default)
U=data/synthemo-v2-seed12345            # test split of an unseen seed
N=data/synthemo-v2-neutral-text         # the test split's neutral-text variant (seed 0)
LIM=(${LIMIT:+--limit "$LIMIT"})
mkdir -p "$R"

# has DIR a v2 test split of at least N_TEST clips of this seed, text variant and render revision? (a LIMIT run
# writes small ones)
has_test() {  # DIR SEED NEUTRAL(true|false)
  python - "$1/test.synth.json" "$2" "$3" "$N_TEST" <<'PY'
import json, sys
from pathlib import Path
from emo_edge.data.synth_v2 import RENDER
p, seed, neutral, n = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "true", int(sys.argv[4])
i = json.loads(p.read_text()) if p.is_file() else {}
ok = i.get("version") == 2 and i.get("seed") == seed and i.get("neutral_text") == neutral and i.get("n", 0) >= n
ok = ok and i.get("render") == RENDER  # a split drawn with other render ranges is regenerated
sys.exit(0 if ok else 1)
PY
}
if [ ! -f "$D/train.jsonl" ] && [ -z "${LIMIT:-}" ]; then emo-edge data synth --out "$D" --version 2 --seed 0; fi
has_test "$D" 0 false || emo-edge data synth --out "$D" --version 2 --seed 0 --split test --n "$N_TEST"
has_test "$U" 12345 false || emo-edge data synth --out "$U" --version 2 --seed 12345 --split test --n "$N_TEST"
has_test "$N" 0 true || emo-edge data synth --out "$N" --version 2 --seed 0 --split test --n "$N_TEST" --neutral-text

ev() {  # NAME DATA ARGS...: one checkpoint evaluation into $R/NAME.json
  local name=$1 data=$2
  shift 2
  emo-edge eval --checkpoint "$CKPT" --data "$data" "${LIM[@]}" --json "$R/$name.json" "$@"
}
# all views; the LLM's short answer with reasons (cue recall/precision, answer/reason consistency), and the
# label read from the reason (one generation, as the runtime answers)
for set in "default:$D" "seed12345:$U"; do
  name=${set%%:*} data=${set#*:}
  ev "$name-llm" "$data" --answer-from llm
  ev "$name-reason" "$data" --answer-from reason
  ev "$name-head" "$data" --answer-from head
done
# ablations by view: image = peak frame, video = temporal frames; image,audio,text = all but the temporal view
for m in image video audio text audio,text image,audio,text; do
  n=${m//,/+}
  [ "$m" = text ] || ev "default-head-$n" "$D" --answer-from head --modalities "$m"
  ev "default-llm-$n" "$D" --answer-from llm --modalities "$m" --no-reason
done
# the neutral-text variant: what text alone gives when it carries no emotion, and the fused model on it
ev neutral-llm-text "$N" --answer-from llm --modalities text --no-reason
ev neutral-llm "$N" --answer-from llm --no-reason
ev neutral-head "$N" --answer-from head

# the bundle, torch-free, clip by clip against the checkpoint
PARITY=$(( N_TEST < 64 ? N_TEST : 64 ))
emo-edge export --checkpoint "$CKPT" --target cpu-x86 --out "$B" --llm-quant q4_k_m --data "$D" \
  --parity-clips "$PARITY" --force
evb() {  # NAME ARGS...
  local name=$1
  shift
  emo-edge eval --bundle "$B" --data "$D" "${LIM[@]}" --json "$R/$name.json" "$@"
}
for p in fp32 int8; do evb "bundle-$p-head" --precision $p --answer-from head; done
evb bundle-int8-q8_0 --precision int8 --quant q8_0
evb bundle-fp32-f16 --precision fp32 --quant f16 --no-reason
evb bundle-int8-q4_k_m --precision int8 --quant q4_k_m --no-reason
python scripts/summarize_results.py "$R" | tee "$R/summary.md"
for b in fp32-f16 int8-q8_0 int8-q4_k_m; do
  echo -n "checkpoint vs bundle-$b: " | tee -a "$R/summary.md"
  python scripts/compare_runs.py "$R/default-llm.json" "$R/bundle-$b.json" | tee -a "$R/summary.md"
done
