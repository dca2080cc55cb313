"""Does a stage-0 LM (text only, no clip) name in its reasons the attributes its prompt's words say?

    python scripts/evidence_copy_probe.py LLM_DIR [--data data/synthemo-v2] [--n 24] [--seed 7]

For the first N/2 worried/surprise and N/2 other test records, each attribute gets a random value in the evidence
words (the subtitle is the record's). Prints, per attribute, the share of greedy reasons naming the said value
(the onset over the other labels only), and for worried/surprise whether the onset sentence and the label follow
the said onset: there the reason is given up to that sentence (the face family comes from the clip in the full
model; a text-only LM cannot know it).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from emo_edge.data.synth_v2 import ATTRIBUTES, ONSET_PHRASES, PAIR_LABEL, TEMPORAL_PAIR, reason_target
from emo_edge.model.mllm import load_llm
from emo_edge.model.tokenizer import Tokenizer
from emo_edge.prompts import PREFIX, suffix
from emo_edge.train.loop import said_attributes


def greedy(lm: torch.nn.Module, tok: Tokenizer, text: str, n: int) -> str:
    ids = torch.tensor([[tok.bos_id, *tok.encode(text)]])
    with torch.no_grad():
        out = lm.generate(ids, max_new_tokens=n, do_sample=False, eos_token_id=tok.eos_id, pad_token_id=tok.pad_id)
    return tok.decode(out[0, ids.shape[1]:].tolist())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("llm")
    ap.add_argument("--data", default="data/synthemo-v2")
    ap.add_argument("--n", type=int, default=24)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    tok, lm = Tokenizer(a.llm), load_llm(a.llm).eval()
    recs = [json.loads(line) for line in (Path(a.data) / "test.jsonl").read_text().splitlines()]
    pair = [r for r in recs if r["label"] in TEMPORAL_PAIR][: a.n // 2]
    other = [r for r in recs if r["label"] not in TEMPORAL_PAIR][: a.n // 2]
    rng = np.random.default_rng(a.seed)
    named: dict[str, list[bool]] = {x.name: [] for x in ATTRIBUTES}
    onset_said, label_follows = [], []
    for r in pair + other:
        values = {x.name: str(rng.choice(sorted(x.phrases))) for x in ATTRIBUTES}
        prompt = PREFIX + suffix("reason", r["subtitle"], evidence=said_attributes(values))
        reason = greedy(lm, tok, prompt, 220).lower()
        for x in ATTRIBUTES:
            if not (x.name == "onset" and r["label"] in TEMPORAL_PAIR):
                named[x.name].append(x.phrases[values[x.name]] in reason)
        if r["label"] in TEMPORAL_PAIR:
            full = reason_target(PAIR_LABEL[values["onset"]], values, r["meta"]["mouth_style"])
            rest = greedy(lm, tok, prompt + " " + full[: full.index(". A ") + 1], 30).lower()
            onset_said.append(rest.strip().startswith(ONSET_PHRASES[values["onset"]]))
            label_follows.append(rest.strip().rstrip(".").endswith(PAIR_LABEL[values["onset"]]))
    print(f"{a.llm}: reasons naming the said value (n={len(pair) + len(other)}, the onset n={len(other)})")
    print("  " + ", ".join(f"{k} {np.mean(v):.2f}" for k, v in named.items()))
    print(f"  worried/surprise (n={len(pair)}): onset sentence says the said onset {np.mean(onset_said):.2f}, "
          f"label follows it {np.mean(label_follows):.2f}")


if __name__ == "__main__":
    main()
