"""Body and egocentric sets: BOLD (multi-label body language) and E3 (egocentric video).

BOLD's test annotations are not public: its splits are train and val. E3 ships no split, so clips
are split by their source video (one in five source videos to test, by a stable hash of its id).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from pathlib import Path

from emo_edge.data.adapters.base import Adapter, ClipSpec, column, labelmap, read_csv, read_xlsx
from emo_edge.data.adapters.mer import find_video

BOLD_THRESHOLD = 0.5  # a category counts as present when its annotator score reaches this (scores are 0..1)
BOLD_FIRST_CATEGORY = 4  # columns: video, person id, first frame, last frame, 26 categories, V, A, D, ...
E3_TEST_EVERY = 5


def scan_bold(root: Path) -> Iterator[ClipSpec]:
    """annotations/{train,val}.csv (no header) + videos/<path in column 0>."""
    lm = labelmap("bold")
    ncat = len(lm.labels)
    for split in ("train", "val"):
        for row in read_csv(root / "annotations" / f"{split}.csv", header=False):
            path, person = row[0].strip(), row[1].strip()
            scores = [float(x) for x in row[BOLD_FIRST_CATEGORY:BOLD_FIRST_CATEGORY + ncat]]
            labels = [c for c, s in zip(lm.labels, scores, strict=True) if s >= BOLD_THRESHOLD]
            if not labels:  # no category reached the threshold: keep the strongest one
                labels = [lm.labels[max(range(ncat), key=scores.__getitem__)]]
            v, a, d = (float(x) for x in row[BOLD_FIRST_CATEGORY + ncat:BOLD_FIRST_CATEGORY + ncat + 3])
            clip_id = f"{path.replace('/', '_').replace('.mp4', '')}_p{person}"
            yield ClipSpec(
                id=clip_id, split=split, label=", ".join(labels), video=root / "videos" / path,
                valence=(v - 5.5) / 4.5, arousal=(a - 5.5) / 4.5,  # 1..10 scale to -1..1
                meta={"labels": labels, "person_id": person, "frames": [int(row[2]), int(row[3])], "dominance": d},
            )


def scan_e3(root: Path) -> Iterator[ClipSpec]:
    """annotation/data1.xlsx (Vid, sub_id, emotion) + E3/<Vid>/<sub_id>.mp4 (+ subtex/<Vid>/<sub_id>.txt)."""
    lm = labelmap("e3")
    for r in read_xlsx(root / "annotation" / "data1.xlsx"):
        vid, sub = r["Vid"].strip(), r["sub_id"].strip().removesuffix(".0")
        split = "test" if zlib.crc32(vid.encode()) % E3_TEST_EVERY == 0 else "train"
        subtitle = root / "subtex" / vid / f"{sub}.txt"
        yield ClipSpec(
            id=f"{vid}_{sub}", split=split, label=lm.own(column(r, "emotion", "Emotion", "label"), f"{vid}/{sub}: "),
            video=find_video(root / "E3" / vid, sub),
            subtitle=subtitle.read_text(encoding="utf-8").strip() if subtitle.is_file() else "",
        )


ADAPTERS = (
    Adapter("bold", "bold", scan_bold, "BOLD: body-language clips, 26 categories (multi-label) + VAD"),
    Adapter("e3", "e3", scan_e3, "E3: egocentric clips, eight emotions; split by source video"),
)
