"""Conversation sets: MELD (emotion and sentiment), MC-EIU (emotion and intent), IEMOCAP.

The record's label is the emotion; MELD's sentiment and MC-EIU's intent go into
meta["sentiment"] and meta["intent"], so one prepared set serves both of each pair's benchmarks.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from emo_edge.data.adapters.base import Adapter, ClipSpec, column, first_existing, labelmap, read_csv, require
from emo_edge.data.adapters.mer import find_video

MELD_SPLITS = {"train": "train_splits", "dev": "dev_splits_complete", "test": "output_repeated_splits_test"}
MCEIU_LANGUAGES = ("English", "Mandarin")
MCEIU_SPLITS = {"train": "train", "valid": "val", "test": "test"}
IEMOCAP_TEST_SESSION = 5  # sessions 1-4 train, 5 test (the usual leave-one-session-out fold)
# "[6.2901 - 8.2357]\tSes01F_impro01_F000\tneu\t[2.5000, 2.5000, 2.5000]" (valence, activation, dominance, 1..5)
_IEMOCAP_LINE = re.compile(r"^\[(\S+) - (\S+)\]\t(\S+)\t(\S+)\t\[(\S+), (\S+), (\S+)\]")


def scan_meld(root: Path) -> Iterator[ClipSpec]:
    """{train,dev,test}_sent_emo.csv + train_splits/, dev_splits_complete/, output_repeated_splits_test/.

    MELD.Raw unpacks each split's archive into a folder of its own (train/train_splits, ...) or
    flat; the CSVs sit at the top or in the split's folder. Videos are named dia<D>_utt<U>.mp4.
    """
    emo, sent = labelmap("meld"), labelmap("sentiment")
    for split, folder in MELD_SPLITS.items():
        table = first_existing([root / f"{split}_sent_emo.csv", root / split / f"{split}_sent_emo.csv"],
                               f"MELD {split} annotation file")
        videos = first_existing([root / folder, root / split / folder], f"MELD {split} video folder")
        for r in read_csv(table):
            name = f"dia{r['Dialogue_ID'].strip()}_utt{r['Utterance_ID'].strip()}"
            yield ClipSpec(
                id=f"{split}_{name}", split="val" if split == "dev" else split,
                label=emo.own(r["Emotion"], f"{name}: "),
                video=videos / f"{name}.mp4", subtitle=r["Utterance"].strip(),
                meta={"sentiment": sent.own(r["Sentiment"], f"{name}: "), "speaker": r.get("Speaker", "")},
            )


def scan_mceiu(root: Path) -> Iterator[ClipSpec]:
    """<Language>/{train,valid,test}.csv + <Language>/video/<name>.mp4 for English and Mandarin.

    Columns are read by the names of the public release where known and by common alternatives
    otherwise: the clip name (Video / video_id / name), Emotion, Intent and the utterance text.
    """
    emo, intent = labelmap("mc-eiu"), labelmap("mc-eiu-intent")
    langs = [lang for lang in MCEIU_LANGUAGES if (root / lang).is_dir()]
    if not langs:
        require(root / MCEIU_LANGUAGES[0])
    for lang in langs:
        for split_file, split in MCEIU_SPLITS.items():
            for r in read_csv(root / lang / f"{split_file}.csv"):
                name = Path(column(r, "Video", "video", "video_id", "Video_ID", "name")).stem
                yield ClipSpec(
                    id=f"{lang.lower()}_{name}", split=split,
                    label=emo.own(column(r, "Emotion", "emotion"), f"{name}: "),
                    video=find_video(root / lang / "video", name),
                    subtitle=column(r, "Utterance", "Text", "text", "utterance").strip(),
                    meta={"intent": intent.own(column(r, "Intent", "intent"), f"{name}: "), "language": lang},
                )


def scan_iemocap(root: Path) -> Iterator[ClipSpec]:
    """SessionN/dialog/{EmoEvaluation,transcriptions}/<dialog>.txt, dialog/avi/DivX/<dialog>.avi and
    SessionN/sentences/wav/<dialog>/<utterance>.wav.

    Each utterance keeps its own wav; its video is cut from the dialog's avi at the annotated times.
    Utterances labelled "xxx" (no agreement) or "oth" are not part of the label set and are skipped.
    """
    lm = labelmap("iemocap")
    for n in range(1, 6):
        session = require(root / f"Session{n}")
        split = "test" if n == IEMOCAP_TEST_SESSION else "train"
        for evaluation in sorted((session / "dialog" / "EmoEvaluation").glob("*.txt")):
            dialog = evaluation.stem
            text = _iemocap_transcripts(session / "dialog" / "transcriptions" / f"{dialog}.txt")
            for line in evaluation.read_text(encoding="utf-8", errors="replace").splitlines():
                m = _IEMOCAP_LINE.match(line)
                if not m or m.group(4) in ("xxx", "oth"):
                    continue
                start, end, utt, code, v, a, _d = m.groups()
                yield ClipSpec(
                    id=utt, split=split, label=lm.own(code, f"{utt}: "),
                    video=session / "dialog" / "avi" / "DivX" / f"{dialog}.avi",
                    audio=session / "sentences" / "wav" / dialog / f"{utt}.wav", subtitle=text.get(utt, ""),
                    segment=(float(start), float(end)), valence=(float(v) - 3) / 2, arousal=(float(a) - 3) / 2,
                    meta={"session": n},
                )


def _iemocap_transcripts(path: Path) -> dict[str, str]:
    """utterance id -> text from lines 'Ses01F_impro01_F000 [006.2901-008.2357]: Excuse me.'."""
    if not path.is_file():
        return {}
    out = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        head, sep, text = line.partition(":")
        if sep:
            out[head.split(" ")[0]] = text.strip()
    return out


ADAPTERS = (
    Adapter("meld", "meld", scan_meld, "MELD: Friends utterances, seven emotions + sentiment"),
    Adapter("mc-eiu", "mc-eiu", scan_mceiu, "MC-EIU: English + Mandarin TV dialogue, seven emotions + nine intents"),
    Adapter("iemocap", "iemocap", scan_iemocap, "IEMOCAP: acted dyadic sessions; sessions 1-4 train, 5 test"),
)
