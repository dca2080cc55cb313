"""How much of each SynthEmo clip's audio the WebRTC VAD + utterance tracker keep, per aggressiveness (0-3),
with the stream's other defaults: the clip padded with 1 s of silence before and 1.5 s after.

    python scripts/vad_spans.py DATA_DIR SPLIT      # DATA_DIR holds SPLIT.jsonl (emo-edge data synth)
"""
import json
import sys
from pathlib import Path

import numpy as np

from emo_edge.audio import SAMPLE_RATE, load_wav
from emo_edge.runtime.stream import StreamConfig
from emo_edge.runtime.vad import FRAME_MS, UtteranceTracker, make_vad

d, split = Path(sys.argv[1]), sys.argv[2]
recs = [json.loads(x) for x in (d / f"{split}.jsonl").read_text().splitlines()]
cfg = StreamConfig()
n = SAMPLE_RATE * FRAME_MS // 1000
for agg in (0, 1, 2, 3):
    one, cover, onset = 0, [], []
    for r in recs:
        w = load_wav(d / r["audio"])
        lead, tail = np.zeros(SAMPLE_RATE, np.float32), np.zeros(int(1.5 * SAMPLE_RATE), np.float32)
        x = np.concatenate([lead, w, tail])
        vad = make_vad("webrtc", SAMPLE_RATE, agg)
        tr = UtteranceTracker(FRAME_MS / 1000, cfg.utterance_start_s, cfg.utterance_hangover_s, cfg.utterance_max_s,
                              cfg.utterance_min_s)
        utts = []
        for i in range(len(x) // n):
            u = tr.update(i * n / SAMPLE_RATE, vad.is_speech(x[i * n:(i + 1) * n]))
            if u is not None:
                utts.append(u)
        clip = len(w) / SAMPLE_RATE
        one += len(utts) == 1
        if utts:
            cover.append(sum(u.end - u.start for u in utts) / clip)
            onset.append(utts[0].start - 1.0)
    print(f"aggressiveness {agg}: one utterance per clip {one}/{len(recs)}, speech span / clip {np.mean(cover):.2f}, "
          f"first onset after clip start median {np.median(onset)*1000:.0f} ms")
