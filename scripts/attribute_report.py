"""Which SynthEmo v2 attributes a checkpoint perceives: per attribute, the accuracy of the fused attribute head and
of each encoder's own attribute probe (only the views that can see it), then the head's label confusion matrix.

    python scripts/attribute_report.py --checkpoint default --data data/synthemo-v2/val.jsonl

The probes are training-time diagnostics (never exported); an attribute near 0.5 everywhere is one the model does
not read, whatever the LLM's reasons then say about it (`cue_recall_by_attribute` in an eval report).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from emo_edge.checkpoint import CONFIG_FILE, load_checkpoint, resolve
from emo_edge.config import load_model_config
from emo_edge.data.features import load_features
from emo_edge.data.synth_v2 import ATTRIBUTES
from emo_edge.labels import LABELS
from emo_edge.model.perception import FUSED
from emo_edge.train.data import PROBE_ATTRIBUTES, attribute_targets
from emo_edge.train.loop import perceive_split


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", default="default")
    ap.add_argument("--data", required=True, help="a SynthEmo v2 split's JSONL")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cfg = load_model_config(resolve(a.checkpoint) / CONFIG_FILE)
    model = load_checkpoint(a.checkpoint)
    if model.perception.attributes is None:
        raise SystemExit(f"{a.checkpoint}: no attribute head (model.head.attributes is 0)")
    fs = load_features(a.data, cfg.frontend, workers=1)
    truth = attribute_targets(fs.records)
    if (truth < 0).all():
        raise SystemExit(f"{a.data}: no SynthEmo v2 attributes in its records")
    heads, probes, logits = [], [], []
    with torch.no_grad():
        for _, _, p in perceive_split(model, fs):
            heads.append(p["attributes"].float().numpy())
            probes.append(p["aux_attr"].float().numpy())
            logits.append(p["logits"].float().numpy())
    head, probe, pred = np.concatenate(heads), np.concatenate(probes), np.concatenate(logits).argmax(-1)
    print(f"{len(fs)} clips of {a.data}; accuracy per attribute (chance 0.5)")
    print(f"{'attribute':10} {'head':>6} " + " ".join(f"{k:>6}" for k in FUSED))
    for j, attr in enumerate(ATTRIBUTES):
        known = truth[:, j] >= 0
        t = truth[known, j] == 1
        row = [f"{np.mean((head[known, j] > 0) == t):6.3f}"]
        row += [f"{np.mean((probe[known, m, j] > 0) == t):6.3f}" if PROBE_ATTRIBUTES[m, j] else f"{'-':>6}"
                for m in range(len(FUSED))]
        print(f"{attr.name:10} " + " ".join(row))
    print(f"head label accuracy {np.mean(pred == fs.labels):.3f}; confusion (rows truth, columns predicted):")
    cm = np.zeros((len(LABELS), len(LABELS)), int)
    np.add.at(cm, (fs.labels[fs.labels >= 0], pred[fs.labels >= 0]), 1)
    print(" " * 9 + " ".join(f"{lab[:7]:>7}" for lab in LABELS))
    for lab, row in zip(LABELS, cm, strict=True):
        print(f"{lab:>8} " + " ".join(f"{v:7d}" for v in row))


if __name__ == "__main__":
    main()
