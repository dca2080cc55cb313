"""The MER challenge family: MER2023, MER2024 and OV-MERD+ (released with MER2025).

All three name clips by a `name` column and keep one video per name in a flat directory; the
transcripts sit in a CSV with `name, chinese, english` columns. The English line is the subtitle.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from emo_edge.data.adapters.base import Adapter, ClipSpec, first_existing, labelmap, read_csv, split_words

VIDEO_EXTS = (".mp4", ".avi", ".mkv")


def find_video(folder: Path, stem: str) -> Path:
    """The video named `stem` in `folder` with any usual extension (the .mp4 path if none exists)."""
    for ext in VIDEO_EXTS:
        if (folder / f"{stem}{ext}").is_file():
            return folder / f"{stem}{ext}"
    return folder / f"{stem}.mp4"


def transcripts(path: Path) -> dict[str, str]:
    """name -> English (else Chinese) transcript; empty when the dataset ships no transcript file."""
    if not path.is_file():
        return {}
    return {r["name"]: (r.get("english") or r.get("chinese") or "").strip() for r in read_csv(path)}


def _discrete(
    rows: list[dict[str, str]], split: str, videos: Path, subs: dict[str, str], key: str,
) -> Iterator[ClipSpec]:
    lm = labelmap(key)
    for r in rows:
        name = r["name"].strip()
        valence = float(r["valence"]) if r.get("valence", "").strip() else None
        yield ClipSpec(id=name, split=split, label=lm.own(r["discrete"], f"{name}: "), video=find_video(videos, name),
                       subtitle=subs.get(name, ""), valence=valence)


MER2023_TEST_LABEL_DIRS = (".", "test-labels", "test_labels")  # test labels came out after the challenge, apart


def scan_mer2023(root: Path) -> Iterator[ClipSpec]:
    """train/ + train-label.csv, test1..3/ + test{1,2,3}-label.csv (name, discrete, valence).

    The test label files were released separately from the videos; they are looked for at the top
    and in a test-labels/ or test_labels/ folder, and a missing one stops the preparation naming it.
    """
    subs = transcripts(root / "transcription.csv")
    yield from _discrete(read_csv(root / "train-label.csv"), "train", root / "train", subs, "mer2023")
    for k in (1, 2, 3):
        labels = first_existing([root / d / f"test{k}-label.csv" for d in MER2023_TEST_LABEL_DIRS],
                                f"MER2023 test{k} label file")
        yield from _discrete(read_csv(labels), f"test{k}", root / f"test{k}", subs, "mer2023")


MER2024_TEST_VIDEOS = ("video-unlabeled", "video-unlabeled-with-test2noise")  # the MER-SEMI clips sit among these


def scan_mer2024(root: Path) -> Iterator[ClipSpec]:
    """video-labeled/ + label-disdim.csv (train); video-unlabeled/ + semi-label.csv (the MER-SEMI test labels).

    semi-label.csv was released after the challenge; without it there is no test split, and the
    preparation stops naming the file rather than writing a train split alone.
    """
    subs = transcripts(root / "label-transcription.csv")
    yield from _discrete(read_csv(root / "label-disdim.csv"), "train", root / "video-labeled", subs, "mer2024")
    labels = first_existing([root / "semi-label.csv"], "MER2024 test (MER-SEMI) label file")
    videos = first_existing([root / d for d in MER2024_TEST_VIDEOS], "MER2024 test video folder")
    yield from _discrete(read_csv(labels), "test", videos, subs, "mer2024")


def scan_ovmerd(root: Path) -> Iterator[ClipSpec]:
    """video/ + audio/ (wavs shipped) + track2_train_ovmerd.csv (name, openset) + subtitle_chieng.csv.

    The open-vocabulary label set of a clip is kept in meta["labels"]; `label` joins it with ", ".
    OV-MERD+ is an evaluation set in MMEVerse, so every clip lands in the test split.
    """
    subs = transcripts(root / "subtitle_chieng.csv")
    for r in read_csv(root / "track2_train_ovmerd.csv"):
        name = r["name"].strip()
        words = split_words(r["openset"])
        wav = root / "audio" / f"{name}.wav"
        yield ClipSpec(id=name, split="test", label=", ".join(words), video=find_video(root / "video", name),
                       audio=wav if wav.is_file() else None, subtitle=subs.get(name, ""), meta={"labels": words})


ADAPTERS = (
    Adapter("mer2023", "mer2023", scan_mer2023, "MER2023: six discrete labels + valence; test1-3"),
    Adapter("mer2024", "mer2024", scan_mer2024, "MER2024: labelled train set and the MER-SEMI test set"),
    Adapter("ov-merd+", "ov-merd+", scan_ovmerd, "OV-MERD+: open-vocabulary emotion words per clip"),
)
