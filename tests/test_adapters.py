"""Every dataset adapter on a fixture tree that reproduces the dataset's real layout: the records
pass the schema check, the counts per split are the expected ones, the media they name exist, and
the deliberately broken clips are reported (with id and reason) without stopping the run."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from fixtures import datasets
from fixtures.datasets import BUILDERS, build, write_xlsx

from emo_edge.data.adapters import SOURCES, prepare
from emo_edge.data.adapters.base import labelmap, read_xlsx, split_words
from emo_edge.data.schema import FROM_VIDEO, read_jsonl


def test_every_source_has_a_fixture() -> None:
    assert set(SOURCES) == set(BUILDERS)


@pytest.mark.parametrize("source", sorted(BUILDERS))
def test_adapter_on_fixture_tree(source: str, tmp_path: Path) -> None:
    expected = build(source, tmp_path / "root")
    out = tmp_path / "out"
    report = prepare(source, tmp_path / "root", out)

    assert report["counts"] == expected.counts
    assert {b["id"] for b in report["bad"]} == expected.bad
    assert all(b["reason"] for b in report["bad"])
    assert json.loads((out / "prepare_report.json").read_text())["n_bad"] == len(expected.bad)
    lm = labelmap(SOURCES[source].labelmap)
    for split, n in expected.counts.items():
        records = read_jsonl(out / f"{split}.jsonl")  # validates every line against the schema
        assert len(records) == n and {r.split for r in records} == {split}
        assert len({r.id for r in records}) == n
        for r in records:
            assert r.dataset == source and r.id not in expected.bad
            assert r.video is not None and r.media_path(out, "video").is_file()
            assert r.audio != FROM_VIDEO  # audio is extracted at prepare time
            if r.audio is not None:
                assert r.media_path(out, "audio").is_file()
            for label in r.meta.get("labels") or [r.label]:
                assert not lm.labels or label in lm.labels, label
            assert r.meta["shared_label"] in (None, "neutral", "happy", "sad", "angry", "worried", "surprise")


def test_audio_taken_from_video_when_no_wav_ships(tmp_path: Path) -> None:
    build("ov-merd+", tmp_path / "root")
    prepare("ov-merd+", tmp_path / "root", tmp_path / "out")
    recs = {r.id: r for r in read_jsonl(tmp_path / "out" / "test.jsonl")}
    assert recs["sample_00002000"].audio == "../root/audio/sample_00002000.wav"  # shipped wav kept
    extracted = recs["sample_00002002"].media_path(tmp_path / "out", "audio")
    assert extracted == tmp_path / "out" / "media" / "ov-merd+" / "sample_00002002.wav"
    import wave

    with wave.open(str(extracted)) as w:
        assert (w.getframerate(), w.getnchannels()) == (16000, 1) and w.getnframes() > 8000


def test_iemocap_segments_sessions_and_vad(tmp_path: Path) -> None:
    build("iemocap", tmp_path / "root")
    prepare("iemocap", tmp_path / "root", tmp_path / "out")
    test = {r.id: r for r in read_jsonl(tmp_path / "out" / "test.jsonl")}
    assert set(test) == {"Ses05F_impro01_F000", "Ses05F_impro01_M000"}  # session 5 only
    r = test["Ses05F_impro01_M000"]
    assert (r.label, r.meta["shared_label"], r.subtitle) == ("excited", "happy", "Yeah.")
    assert (r.valence, r.arousal) == (-0.75, 0.5)  # [1.5, 4.0, ...] on 1..5 scales
    assert r.video == "media/iemocap/Ses05F_impro01_M000.mp4" and r.meta["segment_s"] == [1.2, 2.0]
    train_ids = {r.id for r in read_jsonl(tmp_path / "out" / "train.jsonl")}
    assert "Ses01F_impro01_F001" not in train_ids  # "xxx" (no agreement) is not a label


def test_multi_label_intent_and_sentiment_fields(tmp_path: Path) -> None:
    for source in ("mafw-m", "bold", "mc-eiu", "meld", "cmu-mosi"):
        build(source, tmp_path / source)
        prepare(source, tmp_path / source, tmp_path / f"{source}-out")
    first = {s: read_jsonl(tmp_path / f"{s}-out" / "train.jsonl")[0] for s in ("mafw-m", "bold", "mc-eiu", "meld")}
    assert first["mafw-m"].meta["labels"] == ["anger", "disgust"] and first["mafw-m"].label == "anger, disgust"
    assert first["bold"].meta["labels"] == ["happiness", "excitement"] and first["bold"].audio is None
    assert (first["mc-eiu"].label, first["mc-eiu"].meta["intent"]) == ("happy", "agreeing")
    assert (first["meld"].label, first["meld"].meta["sentiment"]) == ("joy", "positive")
    val = read_jsonl(tmp_path / "bold-out" / "val.jsonl")[0]
    assert val.meta["labels"] == ["peace"]  # no category reached the threshold: the strongest is kept
    mosi = read_jsonl(tmp_path / "cmu-mosi-out" / "test.jsonl")
    assert [r.label for r in mosi] == ["neutral", "negative", "positive"]
    assert [r.valence for r in mosi] == pytest.approx([0.0, -1.0, 0.2])  # score / 3


def test_missing_annotation_file_is_fatal_and_named(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    with pytest.raises(FileNotFoundError, match="train-label.csv"):
        prepare("mer2023", tmp_path / "root", tmp_path / "out")
    with pytest.raises(ValueError, match="unknown source 'nope'; choose one of mer2023"):
        prepare("nope", tmp_path / "root", tmp_path / "out")


@pytest.mark.parametrize(("source", "remove", "named"), [
    ("mer2023", "test-labels/test3-label.csv", "MER2023 test3 label file"),
    ("mer2024", "semi-label.csv", "MER2024 test (MER-SEMI) label file"),
    ("dfew", "EmoLabel_DataSplit/test(single-labeled)/set_1.csv", "DFEW test split file"),
    ("meld", "dev_sent_emo.csv", "MELD dev annotation file"),
    ("meld", "test/output_repeated_splits_test", "MELD test video folder"),
])
def test_missing_split_or_label_file_stops_naming_it(source: str, remove: str, named: str, tmp_path: Path) -> None:
    """A release with one split's label file (or video folder) missing must not prepare the others silently."""
    root = tmp_path / "root"
    datasets.build(source, root)
    target = root / remove
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(named) + ".*" + re.escape(remove.split("/")[-1])):
        prepare(source, root, tmp_path / "out")


def test_dfew_clip_names_in_every_documented_layout(tmp_path: Path) -> None:
    from emo_edge.data.adapters.facial import dfew_video

    for rel, n in (("Clip/original/7.mp4", 7), ("Clip/original/00008.mp4", 8), ("Clip/clip_224x224_avi/00009.avi", 9)):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
        assert dfew_video(tmp_path, n) == tmp_path / rel


def test_unknown_label_names_the_label_set() -> None:
    with pytest.raises(ValueError, match="unknown label 'joyous'; expected one of neutral, happy"):
        labelmap("mer2023").own("joyous")
    assert labelmap("iemocap").own("FRU") == "frustration"


def test_xlsx_reader_and_word_lists(tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "a.xlsx", [["Vid", "sub_id", "emotion"], ["v1", "2", "shy"], ["v2", "", "sad"]])
    assert read_xlsx(path) == [{"Vid": "v1", "sub_id": "2", "emotion": "shy"},
                               {"Vid": "v2", "sub_id": "", "emotion": "sad"}]
    assert split_words("['worried', 'nervous']") == split_words("[worried, nervous]") == ["worried", "nervous"]
