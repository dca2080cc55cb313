"""Seconds per training step of a preset, float32 against bf16 autocast on the CPU.

    python scripts/step_time.py --preset edge-gemma --data data/synthemo-v2 [--steps 4] [--stage 2]

Builds the preset's model as training does (backbone, LoRA, `init_perception`), draws the stage's batches from
the first clips of the val split and runs the training step (`window_backward`, clip, AdamW step) `--steps`
times per precision; the first step of each is a warm-up and left out. Prints one JSON line per precision.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from emo_edge.config import load_preset
from emo_edge.data.features import load_features
from emo_edge.data.schema import find_split
from emo_edge.train.data import sample_batch
from emo_edge.train.loop import Dist, build_model, clip_and_step, optimizer_for, window_backward


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="edge-gemma")
    ap.add_argument("--data", required=True)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--stage", type=int, default=2, choices=(1, 2))
    ap.add_argument("--clips", type=int, default=64)
    a = ap.parse_args()
    p = load_preset(a.preset)
    tc, cfg = p.train, p.model
    torch.set_num_threads(tc.threads)
    fs = load_features(find_split(a.data, "val"), cfg.frontend, limit=a.clips, progress=False)
    t0 = time.time()
    model = build_model(cfg, Path("/nonexistent"), resume_lora=False, init_perception=tc.init_perception)
    load_s = time.time() - t0
    model.train()
    params = [q for q in model.parameters() if q.requires_grad]
    opt = optimizer_for([(params, tc.lr)], tc)
    rng = np.random.default_rng(0)
    for bf16 in (False, True):
        tc.cpu_bf16 = bf16
        times = []
        for step in range(a.steps):
            sample = sample_batch(fs, rng.choice(len(fs), tc.batch_size, replace=False), a.stage, tc, rng)
            t = time.time()
            window_backward(model, [sample], True, tc, Dist())
            clip_and_step(opt, params, step, a.steps, tc)
            times.append(time.time() - t)
        print(json.dumps({"preset": a.preset, "stage": a.stage, "batch_size": tc.batch_size, "cpu_bf16": bf16,
                          "threads": tc.threads, "model_load_s": round(load_s, 1),
                          "step_s": [round(x, 2) for x in times],
                          "mean_step_s_after_first": round(float(np.mean(times[1:])), 2)}), flush=True)


if __name__ == "__main__":
    main()
