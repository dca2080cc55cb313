"""Sentiment sets in the MMSA release layout: CH-SIMS, CH-SIMS v2, CMU-MOSI, CMU-MOSEI.

Each holds Raw/<video_id>/<clip_id>.mp4 and one label CSV (video_id, clip_id, text, label,
annotation, mode). `label` is the sentiment score (CH-SIMS: -1..1, CMU-MOSI/MOSEI: -3..3); the
record's label is its polarity (negative / neutral / positive, the `annotation` column when present,
else the score's sign) and `valence` the score scaled to -1..1.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path

from emo_edge.data.adapters.base import Adapter, ClipSpec, column, labelmap, read_csv

MODES = {"train": "train", "valid": "val", "val": "val", "test": "test"}


def polarity(score: float) -> str:
    return "positive" if score > 0 else "negative" if score < 0 else "neutral"


def _label_file(root: Path, names: tuple[str, ...]) -> Path:
    for name in names:
        if (root / name).is_file():
            return root / name
    return root / names[0]  # read_csv raises naming it


def scan_mmsa(root: Path, scale: float, label_files: tuple[str, ...] = ("label.csv",)) -> Iterator[ClipSpec]:
    lm = labelmap("sentiment")
    for r in read_csv(_label_file(root, label_files)):
        vid, clip = r["video_id"].strip(), r["clip_id"].strip()
        score = float(column(r, "label", "label_M"))
        raw = r.get("annotation", "").strip() or polarity(score)
        yield ClipSpec(
            id=f"{vid}_{clip}", split=MODES[r["mode"].strip().lower()], label=lm.own(raw, f"{vid}/{clip}: "),
            video=root / "Raw" / vid / f"{clip}.mp4", subtitle=r.get("text", "").strip(),
            valence=max(-1.0, min(1.0, score / scale)), meta={"sentiment_score": score},
        )


ADAPTERS = (
    Adapter("ch-sims", "sentiment", partial(scan_mmsa, scale=1.0), "CH-SIMS: Mandarin clips, score -1..1"),
    Adapter("ch-sims-v2", "sentiment", partial(scan_mmsa, scale=1.0, label_files=("meta.csv", "label.csv")),
            "CH-SIMS v2.0 (supervised part): Mandarin clips, score -1..1"),
    Adapter("cmu-mosi", "sentiment", partial(scan_mmsa, scale=3.0), "CMU-MOSI: English opinion clips, score -3..3"),
    Adapter("cmu-mosei", "sentiment", partial(scan_mmsa, scale=3.0), "CMU-MOSEI: English clips, score -3..3"),
)
