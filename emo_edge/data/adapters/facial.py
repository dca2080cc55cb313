"""In-the-wild facial-expression video sets: CAER, DFEW and MAFW (single- and multi-label)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from emo_edge.data.adapters.base import Adapter, ClipSpec, first_existing, labelmap, read_csv, require

FOLD = 1  # DFEW and MAFW ship five folds; the benchmarks use the first
CAER_SPLITS = {"train": "train", "validation": "val", "test": "test"}


def scan_caer(root: Path) -> Iterator[ClipSpec]:
    """{train,validation,test}/<Emotion>/<nnnn>.avi; the folder names the label."""
    lm = labelmap("caer")
    for folder, split in CAER_SPLITS.items():
        for label_dir in sorted(p for p in require(root / folder).iterdir() if p.is_dir()):
            label = lm.own(label_dir.name, f"{label_dir}: ")
            for video in sorted(label_dir.glob("*.avi")) + sorted(label_dir.glob("*.mp4")):
                yield ClipSpec(id=f"{split}_{label_dir.name}_{video.stem}", split=split, label=label, video=video)


# The DFEW release README names the label folders "train(single_labeled)"; most code spells them
# "train(single-labeled)". Original clips are named by their number ("1.mp4"); the face-cropped
# video variant uses zero-padded names ("clip_224x224_avi/00001.avi").
DFEW_SPLIT_DIRS = ("{split}(single-labeled)", "{split}(single_labeled)")
DFEW_VIDEOS = ("Clip/original/{n}.mp4", "Clip/original/{n:05d}.mp4", "Clip/clip_224x224_avi/{n:05d}.avi",
               "Clip/clip_224x224_avi/{n}.avi")


def dfew_video(root: Path, n: int) -> Path:
    """The clip file of DFEW clip number n in any documented layout (the first candidate when none exists)."""
    candidates = [root / pattern.format(n=n) for pattern in DFEW_VIDEOS]
    return next((p for p in candidates if p.is_file()), candidates[0])


def scan_dfew(root: Path) -> Iterator[ClipSpec]:
    """EmoLabel_DataSplit/{train,test}(single-labeled)/set_1.csv (video_name, label 1..7) + the clips (DFEW_VIDEOS)."""
    lm = labelmap("dfew")
    for split in ("train", "test"):
        folders = [root / "EmoLabel_DataSplit" / d.format(split=split) / f"set_{FOLD}.csv" for d in DFEW_SPLIT_DIRS]
        for r in read_csv(first_existing(folders, f"DFEW {split} split file")):
            n = int(r["video_name"])
            label = lm.labels[int(r["label"]) - 1]
            yield ClipSpec(id=f"{n:05d}", split=split, label=label, video=dfew_video(root, n))


def _mafw(root: Path, kind: str) -> Iterator[ClipSpec]:
    """`Train & Test Set/<kind>/no_caption/set_1/{train,test}.txt`, lines '<clip>.mp4 <label>[_<label>...]'."""
    lm = labelmap("mafw")
    for split in ("train", "test"):
        listing = require(root / "Train & Test Set" / kind / "no_caption" / f"set_{FOLD}" / f"{split}.txt")
        for line in listing.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            clip, raw = line.split()[:2]
            labels = [lm.own(x, f"{listing}: ") for x in raw.split("_")]
            meta = {"labels": labels} if kind == "compound" else {}
            yield ClipSpec(id=Path(clip).stem, split=split, label=", ".join(labels),
                           video=root / "data" / "clips" / clip, meta=meta)


def scan_mafw(root: Path) -> Iterator[ClipSpec]:
    return _mafw(root, "single")


def scan_mafw_multi(root: Path) -> Iterator[ClipSpec]:
    return _mafw(root, "compound")


ADAPTERS = (
    Adapter("caer", "caer", scan_caer, "CAER: TV-show clips, seven labels, train/validation/test folders"),
    Adapter("dfew", "dfew", scan_dfew, "DFEW: movie clips, seven labels, fold 1"),
    Adapter("mafw", "mafw", scan_mafw, "MAFW single-label: eleven labels, fold 1"),
    Adapter("mafw-m", "mafw", scan_mafw_multi, "MAFW compound (multi-label) split, fold 1"),
)
