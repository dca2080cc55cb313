"""Can one view's encoder learn the label on its own? An encoder of edge-small (or a variant of it) and a linear
probe on its mean token, trained with cross-entropy on one view of a SynthEmo split's cached features, validated
every 50 steps. This is how the temporal view's failure was traced (docs/synthemo-v2-training.md):

    python scripts/encoder_probe.py --data data/synthemo-v2 --variant video        # frames, 1 token per frame
    python scripts/encoder_probe.py --data data/synthemo-v2 --variant video-k16    # frames, every patch token
    python scripts/encoder_probe.py --data data/synthemo-v2 --variant image        # the peak frame, 112 px
    python scripts/encoder_probe.py --data data/synthemo-v2 --variant image --target mouth,gaze  # v2 attributes

Variants: image (peak frame, image encoder), image64 / image64-d0 (the peak frame at the frames' 64 px, depth 1 / 0),
video (the temporal view as configured: tokens_per_frame 1), video-k4 / video-k16 (4 / 16 tokens per frame into the
temporal blocks), video-d1 (a transformer block per frame), video-t0 (no temporal blocks), video-1frame (the middle
frame only). `--target` is the label (cross-entropy, six-way) or a comma list of SynthEmo v2 attributes (binary
cross-entropy; each attribute's validation accuracy is printed). Needs the split's feature cache (any
`emo-edge train` or `eval` on the directory writes it).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from emo_edge.config import ModelConfig, load_preset
from emo_edge.data.features import load_features
from emo_edge.data.synth_v2 import ATTRIBUTE, ATTRIBUTES
from emo_edge.model.perception import ImageEncoder, VideoEncoder
from emo_edge.train.augment import augment_views
from emo_edge.train.data import attribute_targets

VARIANTS = ("image", "image64", "image64-d0", "video", "video-k4", "video-k16", "video-d1", "video-t0", "video-1frame")


def variant_config(cfg: ModelConfig, variant: str) -> ModelConfig:
    """edge-small's model config changed as the variant says."""
    vc, fe, r = cfg.video_encoder, cfg.frontend, dataclasses.replace
    changes = {
        "image64": {"frontend": r(fe, image_size=fe.frame_size)},
        "image64-d0": {"frontend": r(fe, image_size=fe.frame_size), "image_encoder": r(cfg.image_encoder, depth=0)},
        "video-k4": {"video_encoder": r(vc, tokens_per_frame=4)},
        "video-k16": {"video_encoder": r(vc, tokens_per_frame=(fe.frame_size // vc.frame.patch) ** 2)},
        "video-d1": {"video_encoder": r(vc, frame=r(vc.frame, depth=1))},
        "video-t0": {"video_encoder": r(vc, temporal_depth=0)},
        "video-1frame": {"frontend": r(fe, n_frames=1), "tokens": r(cfg.tokens, video=1)},
    }
    return r(cfg, **changes.get(variant, {}))


def view(frames: np.ndarray, image: np.ndarray, variant: str, size: int) -> torch.Tensor:
    """The variant's input tensor from uint8 views: (B, 3, S, S) for an image variant, else (B, T, 3, s, s)."""
    if variant.startswith("image"):
        if image.shape[1] != size:
            image = np.stack([cv2.resize(x, (size, size), interpolation=cv2.INTER_AREA) for x in image])
        return torch.from_numpy(np.ascontiguousarray(image)).permute(0, 3, 1, 2).float() / 255.0
    if variant == "video-1frame":
        frames = frames[:, frames.shape[1] // 2 :][:, :1]
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 1, 4, 2, 3).float() / 255.0


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="SynthEmo directory with train.jsonl and val.jsonl")
    ap.add_argument("--variant", choices=VARIANTS, default="video")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--target", default="label", help="label, or a comma list of v2 attributes (e.g. mouth,gaze)")
    args = ap.parse_args(argv)
    names = [] if args.target == "label" else [t.strip() for t in args.target.split(",") if t.strip()]
    unknown = [n for n in names if n not in ATTRIBUTE]
    if unknown:
        raise SystemExit(f"--target: unknown attribute(s) {unknown}; expected label or some of "
                         f"{', '.join(a.name for a in ATTRIBUTES)}")
    cols = [[a.name for a in ATTRIBUTES].index(n) for n in names]
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    base = load_preset("edge-small").model
    cfg = variant_config(base, args.variant)
    # the views as edge-small cuts them (its cache); `view` resizes or slices them for the variant
    train = load_features(args.data / "train.jsonl", base.frontend, progress=False)
    val = load_features(args.data / "val.jsonl", base.frontend, progress=False)
    enc: nn.Module = ImageEncoder(cfg) if args.variant.startswith("image") else VideoEncoder(cfg)
    if names:
        y_train, y_val = attribute_targets(train.records)[:, cols], attribute_targets(val.records)[:, cols]
        if (y_train < 0).any() or (y_val < 0).any():
            raise SystemExit(f"{args.data}: --target {args.target} needs SynthEmo v2 clips (attributes in meta)")
    else:
        y_train, y_val = train.labels, val.labels
    probe = nn.Linear(enc.width, len(names) or int(train.labels.max()) + 1)

    def loss_of(logits: torch.Tensor, y: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(y)
        return F.binary_cross_entropy_with_logits(logits, t) if names else F.cross_entropy(logits, t)

    def hits_of(logits: torch.Tensor, y: np.ndarray) -> np.ndarray:  # per attribute, or one count for the label
        if names:
            return ((logits.numpy() > 0) == (y == 1)).sum(axis=0)
        return np.array([(logits.argmax(-1).numpy() == y).sum()])

    opt = torch.optim.AdamW([*enc.parameters(), *probe.parameters()], lr=args.lr, weight_decay=0.01)
    rng = np.random.default_rng(args.seed)
    size = cfg.frontend.image_size
    t0 = time.perf_counter()
    for step in range(1, args.steps + 1):
        idx = rng.choice(len(train.labels), args.batch, replace=False)
        frames, image = augment_views(train.frames[idx], train.image[idx], rng)
        loss = loss_of(probe(enc(view(frames, image, args.variant, size)).mean(1)), y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == args.steps:
            enc.eval()
            with torch.no_grad():
                hits = sum(hits_of(probe(enc(view(val.frames[s:s + 100], val.image[s:s + 100], args.variant, size))
                                         .mean(1)), y_val[s:s + 100])
                           for s in range(0, len(val.labels), 100))
            enc.train()
            acc = hits / len(val.labels)
            shown = " ".join(f"{n} {a:.3f}" for n, a in zip(names, acc, strict=True)) if names else f"{acc[0]:.3f}"
            print(f"{args.variant} step {step} train loss {loss.item():.3f} val acc {shown} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
