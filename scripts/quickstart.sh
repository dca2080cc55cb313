#!/usr/bin/env bash
# One command on a fresh machine, showing the package's job: a stream in, emotion states and streamed reasons out.
#   1. set up (scripts/setup.sh: apt + .venv + the ROS 2 workspace)
#   2. export the shipped default model to a cpu-x86 bundle (skipped when it is up to date; the INT8 calibration
#      clips are generated when missing)
#   3. play QUICKSTART_CLIPS (default 3) SynthEmo test clips through `emo-edge run` at their real rate, each with
#      its subtitle as a timed transcript, in a compact live view (label, score bars, latency, the reason
#      streaming in; one line per update when not on a terminal)
#   4. the table of what was streamed per clip, then the evaluation table of the bundle on the same clips
# Output under runs/quickstart/. The README gives its time.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
[ "${QUICKSTART_SETUP:-1}" = 0 ] || bash scripts/setup.sh  # QUICKSTART_SETUP=0: a checkout already set up
. .venv/bin/activate
CLIPS=${QUICKSTART_CLIPS:-3}
BUNDLE=${QUICKSTART_BUNDLE:-export/build/default-cpu-x86}
OUT=runs/quickstart
mkdir -p "$OUT"

if ! python -c "import json, sys; from emo_edge.checkpoint import content_digest
m = json.load(open('$BUNDLE/manifest.json'))
sys.exit(m['checkpoint'].get('sha256') != content_digest('default'))" 2>/dev/null; then
  emo-edge export --out "$BUNDLE" --force
fi

emo-edge data synth --out "$OUT/clips" --split test --n "$CLIPS" --seed 0
# one line per clip: id, true label, video, audio; and a transcript file with its subtitle said at 0 s
python - "$OUT" > "$OUT/clips.tsv" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
for line in (out / "clips" / "test.jsonl").read_text().splitlines():
    r = json.loads(line)
    (out / f"{r['id']}.transcript").write_text(f"0.0 {r.get('subtitle') or ''}\n")
    print("\t".join([r["id"], r["label"], str(out / "clips" / r["video"]), str(out / "clips" / r["audio"])]))
PY
i=0
while IFS=$'\t' read -r id label video audio; do
  i=$((i + 1))
  emo-edge run --bundle "$BUNDLE" --video "$video" --audio "$audio" --transcript "$OUT/$id.transcript" \
    --view live --title "clip $i/$CLIPS: $id (true label: $label)" --jsonl "$OUT/$id.jsonl" </dev/null
done < "$OUT/clips.tsv"

python scripts/quickstart_table.py "$OUT"
emo-edge eval --bundle "$BUNDLE" --data "$OUT/clips" --json "$OUT/eval.json"
echo "quickstart done in $(( $(date +%s) - start )) s; streamed updates: $OUT/<clip>.jsonl, report: $OUT/eval.json"
