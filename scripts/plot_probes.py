"""Validation probes of training runs over their steps, one panel per probe: python scripts/plot_probes.py
OUT.png NAME=RUN_DIR_OR_LOG [NAME=...] [--stage 1]

Reads the `val_*` rows a run's log.jsonl holds (`emo-edge train` writes one every `eval_every` steps) and draws,
for each run, the label probes of the three encoders, the fast head and the encoders' attribute probes, with the
chance level of a six-label guess. docs/synthemo-v2-training.md shows the one of the v2 attempts:

    python scripts/plot_probes.py docs/synthemo-v2-probes.png "3 joint=runs/edge-small-v3-joint" \\
        "4 isolated=runs/edge-small-v3a" "5 shipped=runs/edge-small-v3"
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

PANELS = (("val_head_acc", "fast head"), ("val_image_only_acc", "peak-frame probe"),
          ("val_video_only_acc", "temporal-view probe"), ("val_audio_only_acc", "audio probe"),
          ("val_attr_acc", "attribute head (10 binary)"),
          ("val_image_attr_acc", "peak frame: intensity, mouth, head, gaze"),
          ("val_video_attr_acc", "temporal view: blinking, onset"), ("val_audio_attr_acc", "audio: the 4 vocal"))
CHANCE = {k: 0.5 for k in ("val_attr_acc", "val_image_attr_acc", "val_video_attr_acc", "val_audio_attr_acc")}
# binary attributes; the labels' chance is 1/6


def val_rows(path: Path, stage: int) -> list[dict]:
    log = path / "log.jsonl" if path.is_dir() else path
    if not log.is_file():
        raise SystemExit(f"{log}: no training log (expected a run directory with log.jsonl, or the file)")
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    return [r for r in rows if r.get("stage") == stage and "val_head_acc" in r]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("runs", nargs="+", help="NAME=RUN_DIR or NAME=LOG")
    ap.add_argument("--stage", type=int, default=1)
    args = ap.parse_args(argv)
    from matplotlib.figure import Figure

    runs = []
    for spec in args.runs:
        name, sep, path = spec.partition("=")
        if not sep:
            raise SystemExit(f"{spec!r}: expected NAME=RUN_DIR")
        runs.append((name, val_rows(Path(path), args.stage)))
    fig = Figure(figsize=(16, 6.5), layout="constrained")
    axes = fig.subplots(2, 4, sharex=True).ravel()
    for ax, (key, title) in zip(axes, PANELS, strict=True):
        for i, (name, rows) in enumerate(runs):
            pts = [(r["step"] + 1, r[key]) for r in rows if key in r]
            if pts:  # one colour per run in every panel, also where an earlier run has no such probe
                ax.plot(*zip(*pts, strict=True), marker="o", ms=3, color=f"C{i}", label=name)
        ax.axhline(CHANCE.get(key, 1 / 6), color="grey", ls=":", lw=1, label="chance")
        ax.set_title(title)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    for ax in axes[4:]:
        ax.set_xlabel(f"stage {args.stage} step")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"validation accuracy over stage {args.stage} (600 SynthEmo v2 val clips)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
