"""The reason fluency parser: SynthEmo's own reasons and free English ones pass; word salad, truncated reasons,
reasons missing a view's cue, repeated phrases and non-words fail, each for the stated reason."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from emo_edge.data import synth as s1
from emo_edge.data import synth_text as t1
from emo_edge.data import synth_v2 as v2
from emo_edge.eval.fluency import cue_vocabularies, fluency_problems, is_fluent, reason_fluency
from emo_edge.labels import LABELS


def v2_reasons(n: int = 60, seed: int = 7) -> list[str]:
    """The reason targets of n SynthEmo v2 clips of an unseen seed, written without rendering the clips."""
    out = []
    for i in range(n):
        label = s1.label_for(seed, "test", i)
        r_attr, r_text, _, _, r_targets = v2.clip_streams(seed, "test", i)
        attrs = v2.sample_attributes(r_attr, label)
        sub = v2.choose_subtitle(r_text, label, False)
        vmeta = {"mouth_style": ("pressed", "teeth")[i % 2], "intensity": 0.8}
        out.append(v2.write_targets(label, attrs, vmeta, sub, r_targets)["targets"]["reason"])
    return out


def v1_reasons() -> list[str]:
    """v1's three reason templates for every label, with each subtitle note."""
    rng = np.random.default_rng(0)
    out = []
    for label in LABELS:
        vfam, afam = s1.VISUAL_FAMILY[label], s1.AUDIO_FAMILY[label]
        vcues, acues = list(t1.VISUAL_CUES[vfam]), list(t1.AUDIO_CUES[afam])
        vl, al = t1.family_labels(vfam, s1.VISUAL_FAMILY), t1.family_labels(afam, s1.AUDIO_FAMILY)
        for kind in t1.SUBTITLE_KINDS:
            for _ in range(3):
                out.append(t1.reason_target(rng, label, vcues, vl, acues, al, kind, "happy"))
    return out


FREE_ENGLISH = [
    "I see a broad smile and hear a loud voice, so the answer is happy.",
    "Her face shows furrowed brows and narrowed eyes. Her voice is loud, with fast speech. She seems angry.",
    "There is a tilted head and averted gaze; the speaker uses slow speech. It points to sad.",
    "An even mouth and a long pause suggest that the person is calm.",
    "The person has wide-open eyes and an upright head, while the voice rises with very high pitch. This looks "
    "like surprise.",
]


def test_synthemo_reasons_and_free_english_are_fluent():
    gold = v2_reasons() + v1_reasons()
    assert len({r.split(",")[0] for r in gold}) > 3  # several templates and cue sets
    for text in gold + FREE_ENGLISH:
        assert fluency_problems(text) == [], text
    assert reason_fluency(gold) == 1.0


def test_word_salad_fails():
    rng = random.Random(0)
    for text in v2_reasons(30) + v1_reasons()[::3]:
        words = text.replace(".", "").replace(",", "").split()
        rng.shuffle(words)
        salad = " ".join(words).capitalize() + "."  # every cue word still there, a capital and a full stop
        assert not is_fluent(salad), salad
    # cue phrases strung together without a sentence: every cue is named, there is no verb
    assert "no finite verb" in " ".join(fluency_problems("A broad smile, raised cheeks, raised pitch, a loud voice."))


@pytest.mark.parametrize("cut", [0.3, 0.55, 0.8, 0.97])
def test_truncated_reasons_fail(cut: float):
    for text in v2_reasons(12):
        words = text.split()
        head = " ".join(words[: int(len(words) * cut)]).rstrip(".")
        problems = fluency_problems(head)
        assert any(p.startswith("truncated") for p in problems), head
    # cut, then closed with a full stop where the sentence is not finished
    for cut_text in ("The face shows a broad smile and raised pitch. The voice has a.",
                     "The face shows a broad smile and raised pitch. The answer is.",
                     "The face shows a broad smile and raised pitch with."):
        assert any(p.startswith(("ends in", "'a' before")) for p in fluency_problems(cut_text)), cut_text


def test_a_missing_view_fails():
    for text in v2_reasons(12):
        face = text[: text.index(" The voice has")]  # the face sentence alone
        assert fluency_problems(face) == ["names no vocal cue"], face
        voice = text[text.index("The voice has"):]
        no_face = voice[: voice.index(". ") + 1] if "points to" in voice else voice
        assert fluency_problems(no_face) == ["names no visual cue"], no_face


def test_repeated_phrases_fail():
    text = v2_reasons(1)[0]
    loop = text.replace("a voice", "a voice, a voice")
    assert any("twice in a row" in p for p in fluency_problems(loop))
    first = text.split(". ")[0] + "."
    assert "a sentence occurs twice" in fluency_problems(text + " " + first)
    long_loop = "The face shows a broad smile and the voice has raised pitch and the voice has raised pitch too."
    assert any("twice" in p for p in fluency_problems(long_loop))
    far = ("The face shows a broad smile with raised cheeks. The voice is loud and it has raised pitch. "
           "Again the face shows a broad smile with raised cheeks.")
    assert any("occurs twice" in p for p in fluency_problems(far))


@pytest.mark.parametrize("broken, problem", [
    ("", "empty"),
    ("the face shows a broad smile and the voice has raised pitch.", "lower case"),
    ("The face shows a <unk> broad smile and the voice has raised pitch.", "non-word"),
    ("The face shows a broad smile and the voice has an raised pitch.", "'an' before 'raised'"),
    ("The face shows the a broad smile and the voice has raised pitch.", "'the' before 'a'"),
    ("The face shows a broad smile,, and the voice has raised pitch.", "punctuation"),
    ("Broad smile. The voice has raised pitch.", "under 3 words"),
])
def test_broken_sentences_fail(broken: str, problem: str):
    assert any(problem in p for p in fluency_problems(broken)), fluency_problems(broken)


def test_share_and_vocabularies():
    good, bad = v2_reasons(2), ["The face shows a broad smile.", "raised pitch smile the"]
    assert reason_fluency(good + bad) == 0.5
    assert math.isnan(reason_fluency([]))
    vocab = cue_vocabularies()
    assert {"broad smile", "tilted head", "sudden onset", "bared teeth"} <= set(vocab["visual"])
    assert {"loud voice", "rising pitch", "voice trailing off", "tense voice"} <= set(vocab["vocal"])
    assert not set(vocab["visual"]) & set(vocab["vocal"])


def test_eval_report_has_reason_fluency():
    from types import SimpleNamespace

    from emo_edge.data.schema import Record
    from emo_edge.eval.evaluate import Predictions, build_report

    reasons = v2_reasons(3)
    records = [Record(id=f"c{i}", dataset="d", video="v.mp4", audio=None, subtitle="", label="sad", cues=[])
               for i in range(4)]
    fs = SimpleNamespace(records=records, bad=[])
    preds = Predictions(["sad"] * 4, ["sad"] * 4, [*reasons, reasons[0][:40]])
    assert build_report(fs, preds, "llm", ("video",))["reason_fluency"] == 0.75
    assert build_report(fs, Predictions(["sad"] * 4, ["sad"] * 4), "llm", ("video",))["reason_fluency"] is None
