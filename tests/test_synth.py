"""SynthEmo v1 generator (`version=1`; v2 is tests/test_synth_v2.py): files, media formats, determinism, grounded
targets and the family design."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile as sf

from emo_edge.data import synth
from emo_edge.data import synth_text as txt
from emo_edge.data.schema import TASKS, read_jsonl
from emo_edge.labels import LABELS

N = 12


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synthemo")
    synth.generate(out, N, seed=3, split="test", workers=1, progress=False, version=1)
    return out


@pytest.fixture(scope="module")
def records(data):
    return read_jsonl(data / "test.jsonl")


def _first_frame(path: Path) -> np.ndarray:
    cap = cv2.VideoCapture(str(path))
    ok, frame = cap.read()
    cap.release()
    assert ok, path
    return frame


def test_records_and_files(data, records):
    assert [r.id for r in records] == [f"synthemo-test-{i:06d}" for i in range(N)]
    for r in records:
        assert r.dataset == "SynthEmo" and r.split == "test" and r.label in LABELS
        assert r.video == f"test/{r.id}.mp4" and r.audio == f"test/{r.id}.wav"
        assert r.media_path(data, "video").is_file() and r.media_path(data, "audio").is_file()
        assert set(r.targets) == set(TASKS) and r.targets["emotion"] == r.label
        assert -1 <= r.valence <= 1 and -1 <= r.arousal <= 1
        assert r.meta["n_frames"] <= synth.MAX_FRAMES and 0 <= r.meta["apex_frame"] < r.meta["n_frames"]
        assert 0.6 <= r.meta["intensity"] <= 1.0
    assert not list((data / "test").glob("*.part.*")), "temporary files left behind"


def test_media_formats(data, records):
    for r in records[:4]:
        audio, sr = sf.read(data / r.audio)
        info = sf.info(data / r.audio)
        assert sr == synth.SAMPLE_RATE and audio.ndim == 1 and info.subtype == "PCM_16"
        assert audio.size <= synth.MAX_SECONDS * sr
        cap = cv2.VideoCapture(str(data / r.video))
        assert cap.isOpened()
        assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(synth.FPS)
        frames = []
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(frame)
        cap.release()
        assert frames[0].shape == (synth.SIZE, synth.SIZE, 3)
        assert len(frames) == r.meta["n_frames"] == math.ceil(audio.size / sr * synth.FPS)


def test_labels_stratified():
    labels = [synth.label_for(0, "train", i) for i in range(18)]
    for block in range(3):  # any six consecutive clips from a block start hold every label once
        assert sorted(labels[6 * block : 6 * block + 6]) == sorted(LABELS)
    assert labels[:6] != labels[6:12]
    assert [synth.label_for(0, "train", i) for i in range(6)] != [synth.label_for(0, "test", i) for i in range(6)]


def test_deterministic_and_seed_dependent(tmp_path, data, records):
    # two workers must give the same clips as one: each clip depends on (seed, split, index) only
    again = synth.generate(tmp_path / "a", 4, seed=3, split="test", workers=2, progress=False, version=1)
    first = (data / "test.jsonl").read_text().splitlines()[:4]
    assert again.read_text().splitlines() == first
    for r in records[:4]:
        np.testing.assert_array_equal(_first_frame(data / r.video), _first_frame(tmp_path / "a" / r.video))
        np.testing.assert_array_equal(sf.read(data / r.audio)[0], sf.read(tmp_path / "a" / r.audio)[0])
    other = read_jsonl(synth.generate(tmp_path / "b", 4, seed=4, split="test", workers=1, progress=False, version=1))
    assert [r.subtitle for r in other] != [r.subtitle for r in records[:4]]
    assert not np.array_equal(_first_frame(data / records[0].video), _first_frame(tmp_path / "b" / other[0].video))


def test_cues_grounded_in_reason(records):
    for r in records:
        reason = r.targets["reason"].lower()
        assert r.cues and all(c == c.lower() and c in reason for c in r.cues), (r.cues, reason)
        assert 20 <= len(reason.split()) <= 50
        assert reason.rstrip(".").endswith(r.label)
        assert r.targets["think"].endswith(f"<answer>{r.label}</answer>") and r.targets["think"].startswith("<think>")
        family = [
            txt.phrase(c) for c in txt.VISUAL_CUES[r.meta["visual_family"]] + txt.AUDIO_CUES[r.meta["audio_family"]]
        ]
        assert sum(c in family for c in r.cues) >= 0.8 * len(r.cues)


def test_family_design():
    # every label has a unique (face, voice) family pair, and each modality alone is ambiguous somewhere
    pairs = {(synth.VISUAL_FAMILY[lab], synth.AUDIO_FAMILY[lab]) for lab in LABELS}
    assert len(pairs) == len(LABELS)
    assert synth.VISUAL_FAMILY["neutral"] == synth.VISUAL_FAMILY["sad"]
    assert synth.VISUAL_FAMILY["worried"] == synth.VISUAL_FAMILY["surprise"]
    assert synth.AUDIO_FAMILY["happy"] == synth.AUDIO_FAMILY["angry"]
    assert synth.AUDIO_FAMILY["sad"] == synth.AUDIO_FAMILY["worried"]


def _target_words(label: str, task: str, seed: int) -> set[str]:
    rng = np.random.default_rng(seed)
    vmeta = {
        "visual_family": synth.VISUAL_FAMILY[label],
        "mouth_style": "pressed",
        "intensity": 0.9,
        "distractor": False,
    }
    ameta = {"audio_family": synth.AUDIO_FAMILY[label]}
    targets, _ = synth.write_targets(rng, label, vmeta, ameta, ("x", "neutral", None))
    return set(targets[task].lower().strip(".").replace(",", "").replace(";", "").split())


@pytest.mark.parametrize(
    ("a", "b", "task"),
    [
        ("neutral", "sad", "image"),
        ("worried", "surprise", "image"),
        ("happy", "angry", "audio"),
        ("sad", "worried", "audio"),
    ],
)
def test_same_family_same_description(a, b, task):
    # the same template draw gives word-for-word the same description for two labels of one family
    for seed in range(3):
        assert _target_words(a, task, seed) == _target_words(b, task, seed)


def _frames_of_label(tmp_path: Path, monkeypatch, label: str) -> np.ndarray:
    """Decoded frames of clip 0 (seed 0) rendered as `label`, with speech of a fixed length for every label
    (the clip's frame count follows its speech, which differs per voice family)."""
    monkeypatch.setattr(synth, "label_for", lambda *args: label)
    tone = (0.3 * np.sin(np.arange(24_000) / 5.0)).astype(np.float32)  # 1.5 s
    monkeypatch.setattr(synth, "render_audio", lambda rng, family, text: (tone, {}))
    out = tmp_path / label
    (out / "test").mkdir(parents=True)
    record = synth.render_clip(out, 0, "test", 0)
    cap, frames = cv2.VideoCapture(str(out / record.video)), []
    while (got := cap.read())[0]:
        frames.append(got[1])
    cap.release()
    return np.stack(frames)


@pytest.mark.parametrize(("same", "other"), [(("neutral", "sad"), "happy"), (("worried", "surprise"), "angry")])
def test_face_is_label_blind_within_its_family(tmp_path, monkeypatch, same, other):
    """Two labels of one face family render the very same frames; a label of another family does not
    (the negative control shows the comparison can fail)."""
    a, b, c = (_frames_of_label(tmp_path, monkeypatch, label) for label in (*same, other))
    assert a.shape == b.shape == c.shape and np.array_equal(a, b)
    assert np.abs(a.astype(int) - c.astype(int)).mean() > 0.5


def test_audio_prosody_families_ordered():
    lo, flat, hi, ex = (synth.PROSODY[f] for f in ("low", "flat", "aroused", "exclaim"))
    assert lo.pitch[1] < flat.pitch[0] and flat.pitch[1] < hi.pitch[0] and hi.pitch[1] < ex.pitch[0]
    assert lo.wpm[1] < flat.wpm[0] and flat.wpm[1] < hi.wpm[0] and ex.wpm[1] < hi.wpm[0]


def test_failed_clip_is_reported_and_skipped(tmp_path, monkeypatch, capsys):
    real = synth.speak

    def flaky(text, voice, *args):
        if flaky.calls == 0:  # the first clip's speech fails
            flaky.calls += 1
            raise RuntimeError("espeak-ng failed: simulated")
        return real(text, voice, *args)

    flaky.calls = 0
    monkeypatch.setattr(synth, "speak", flaky)
    recs = read_jsonl(synth.generate(tmp_path, 3, seed=5, split="val", workers=1, progress=False, version=1))
    assert [r.id for r in recs] == ["synthemo-val-000001", "synthemo-val-000002"]
    assert "synthemo-val-000000" in capsys.readouterr().err
    assert not (tmp_path / "val" / "synthemo-val-000000.mp4").exists()

    def broken(*args):
        raise RuntimeError("espeak-ng failed: simulated")

    monkeypatch.setattr(synth, "speak", broken)
    with pytest.raises(RuntimeError, match="all 2 clips"):
        synth.generate(tmp_path / "x", 2, seed=5, split="val", workers=1, progress=False, version=1)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="n must be"):
        synth.generate(tmp_path, 0, seed=0)
    with pytest.raises(ValueError, match="split"):
        synth.generate(tmp_path, 1, seed=0, split="../x")


def test_sentence_banks():
    assert len(set(txt.NEUTRAL_SENTENCES)) >= 60
    assert set(txt.EMOTION_SENTENCES) == set(LABELS)
    assert all(len(s.split()) <= 7 for s in txt.NEUTRAL_SENTENCES)
