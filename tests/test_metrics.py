"""Metrics on small hand-computed examples; the arithmetic is in the comments."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from emo_edge.eval.metrics import (
    agreement,
    classification_report,
    confusion_matrix,
    cue_recall,
    hit_rate,
    mean_average_precision,
    mean_cue_recall,
    multilabel_scores,
    parse_label,
    plot_confusion,
    sentiment_scores,
)

THREE = ("happy", "sad", "angry")
# 4 happy, 2 sad, 1 angry; one sad answer unparsed (None), the angry clip read as sad.
Y_TRUE = ["happy"] * 4 + ["sad"] * 2 + ["angry"]
Y_PRED = ["happy", "happy", "happy", "sad", "sad", None, "sad"]


# --- parse_label -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("The person looks happy.", "happy"),
        ("HAPPY!", "happy"),
        ("She seems unhappy and tired", "sad"),  # "unhappy" is a synonym of sad
        ("He sadly nods", None),  # whole words only: "sadly" names nothing
        ("I think it's Surprise, or maybe anger", "surprise"),  # first label word wins
        ("anger, then surprise", "angry"),
        ("<think>the voice sounds angry</think><answer>worried</answer>", "worried"),
        ("<answer>nothing fits</answer> but she is happy", None),  # the tag's content alone counts
        ("<answer>happy</answer> wait <answer>Sad</answer>", "sad"),  # the last tag
        ("reasoning... <answer> Sad.", "sad"),  # unclosed tag of a truncated generation
        ("", None),
        ("no emotion word here", None),
    ],
)
def test_parse_label(answer: str, expected: str | None) -> None:
    assert parse_label(answer) == expected


def test_parse_label_restricted_labels_and_phrases() -> None:
    # "calm" maps to neutral, which is not among the labels, so the next word counts.
    assert parse_label("calm and happy", labels=("happy", "sad")) == "happy"
    # Multi-word synonyms match with a hyphen or spaces, and win over their own first word.
    synonyms = {"on edge": "worried", "edge": "angry"}
    assert parse_label("feeling On-Edge today", labels=("worried", "angry"), synonyms=synonyms) == "worried"


# --- confusion matrix and report ---------------------------------------------------------------


def test_confusion_matrix_counts_unparsed_in_last_column() -> None:
    cm = confusion_matrix(Y_TRUE, Y_PRED, THREE)
    # columns: happy, sad, angry, none
    expected = [
        [3, 1, 0, 0],  # happy: 3 right, 1 read as sad
        [0, 1, 0, 1],  # sad: 1 right, 1 unparsed
        [0, 1, 0, 0],  # angry: read as sad
    ]
    np.testing.assert_array_equal(cm, expected)
    assert confusion_matrix(["happy"], ["bored"], THREE).tolist() == [[0, 0, 0, 1], [0] * 4, [0] * 4]


def test_report_three_classes_acc_waf_uar_differ() -> None:
    r = classification_report(Y_TRUE, Y_PRED, THREE)
    # precision = diagonal / column sum: happy 3/3 = 1, sad 1/3, angry never predicted -> 0
    # recall = diagonal / support:      happy 3/4, sad 1/2, angry 0/1
    # f1: happy 2*1*(3/4)/(7/4) = 6/7; sad 2*(1/3)(1/2)/(5/6) = 2/5; angry 0
    assert r["per_class"]["happy"] == pytest.approx({"precision": 1.0, "recall": 0.75, "f1": 6 / 7, "support": 4})
    assert r["per_class"]["sad"] == pytest.approx({"precision": 1 / 3, "recall": 0.5, "f1": 0.4, "support": 2})
    assert r["per_class"]["angry"] == pytest.approx({"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1})
    assert r["n"] == 7
    assert r["acc"] == pytest.approx(4 / 7)  # (3 + 1 + 0) / 7 = 0.571
    assert r["waf"] == pytest.approx(148 / 245)  # (4 * 6/7 + 2 * 2/5 + 1 * 0) / 7 = (148/35) / 7 = 0.604
    assert r["uar"] == pytest.approx(5 / 12)  # (3/4 + 1/2 + 0) / 3 = 0.417
    assert r["war"] == pytest.approx(r["acc"])  # (4 * 3/4 + 2 * 1/2 + 1 * 0) / 7 = 4/7
    assert r["n_unparsed"] == 1
    assert r["confusion"][1] == [0, 1, 0, 1]
    assert r["labels"] == list(THREE)
    assert set(r) == {"n", "acc", "waf", "uar", "war", "per_class", "n_unparsed", "confusion", "labels"}


def test_report_zero_support_class() -> None:
    # "worried" has no true clip but is predicted once.
    r = classification_report(["happy", "sad"], ["happy", "worried"], ("happy", "sad", "worried"))
    # recall happy 1, sad 0; worried has no support, so UAR averages over happy and sad: (1 + 0) / 2
    assert r["uar"] == pytest.approx(0.5)
    # f1 happy 1, sad 0 (never predicted), worried 0 (precision 0/1) with weight 0: (1*1 + 1*0 + 0*0) / 2
    assert r["waf"] == pytest.approx(0.5)
    assert r["per_class"]["worried"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert r["n_unparsed"] == 0


def test_report_input_errors() -> None:
    with pytest.raises(ValueError, match="empty"):
        classification_report([], [], THREE)
    with pytest.raises(ValueError, match="3 and 2"):
        classification_report(["happy"] * 3, ["happy"] * 2, THREE)
    with pytest.raises(ValueError, match="'bored'.*happy, sad, angry"):
        confusion_matrix(["bored"], ["happy"], THREE)


@pytest.mark.filterwarnings("ignore::UserWarning")  # sklearn notes that "none" is not a true class
def test_report_agrees_with_sklearn() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    pred = [p if p is not None else "none" for p in Y_PRED]
    r = classification_report(Y_TRUE, Y_PRED, THREE)
    assert r["waf"] == pytest.approx(metrics.f1_score(Y_TRUE, pred, labels=list(THREE), average="weighted"))
    assert r["uar"] == pytest.approx(metrics.balanced_accuracy_score(Y_TRUE, pred))
    assert r["acc"] == pytest.approx(metrics.accuracy_score(Y_TRUE, pred))


# --- cue recall --------------------------------------------------------------------------------


def test_cue_recall_normalises() -> None:
    answer = "Her brows are FURROWED; she speaks in a trembling   voice, and wipes-a tear. She smiles."
    # found: "furrowed" (case), "trembling voice" (whitespace), "wipes a tear" (hyphen vs space);
    # missing: "raised eyebrows"; "smile" is not a whole word of "smiles" -> 3 / 5
    cues = ["furrowed", "Trembling voice", "wipes a-tear", "raised eyebrows", "smile"]
    assert cue_recall(answer, cues) == pytest.approx(3 / 5)
    assert cue_recall("He doesn't blink.", ["doesnt blink"]) == 1.0  # apostrophes dropped
    assert math.isnan(cue_recall("anything", []))
    assert math.isnan(cue_recall("anything", ["", "--"]))  # cues that normalise to nothing are ignored


def test_mean_cue_recall_skips_clips_without_cues() -> None:
    # clip 1: 1/2, clip 2: no cues (nan, skipped), clip 3: 1/1 -> (0.5 + 1) / 2
    value = mean_cue_recall(["a frown", "whatever", "a smile"], [["frown", "tears"], [], ["smile"]])
    assert value == pytest.approx(0.75)
    assert math.isnan(mean_cue_recall(["x"], [[]]))


# --- benchmark families ------------------------------------------------------------------------


def test_sentiment_scores_drop_neutral_truths() -> None:
    y_true = ["positive", "positive", "negative", "neutral"]
    y_pred = ["positive", "neutral", "negative", "positive"]
    # kept: true [pos, pos, neg], pred [pos, neutral, neg]; acc 2/3
    # positive: precision 1/1, recall 1/2, f1 2/3; negative: precision 1, recall 1, f1 1
    # waf = (2 * 2/3 + 1 * 1) / 3 = 7/9
    s = sentiment_scores(y_true, y_pred)
    assert s == pytest.approx({"n": 3, "acc": 2 / 3, "waf": 7 / 9})
    with pytest.raises(ValueError, match="neutral"):
        sentiment_scores(["neutral"], ["positive"])


def test_multilabel_scores() -> None:
    y_true = [{"happy", "sad"}, {"angry"}, {"sad"}]
    y_pred = [{"happy"}, {"angry", "sad"}, set()]
    # TP = 2 (happy in 1, angry in 2), FP = 1 (sad in 2), FN = 2 (sad in 1 and 3)
    # micro F1 = 2*2 / (2*2 + 1 + 2) = 4/7
    # samples F1: 2*1/(2+1) = 2/3, 2*1/(1+2) = 2/3, 0 -> 4/9
    # Jaccard: 1/2, 1/2, 0/1 -> 1/3
    s = multilabel_scores(y_true, y_pred, THREE)
    assert s == pytest.approx({"n": 3, "micro_f1": 4 / 7, "samples_f1": 4 / 9, "jaccard": 1 / 3})


def _as_sets(indicator: np.ndarray) -> list[set[str]]:
    """(N, 3) bool indicator rows -> label sets over THREE."""
    return [{name for name, on in zip(THREE, row, strict=True) if on} for row in indicator]


@pytest.mark.filterwarnings("ignore::UserWarning")  # sklearn's ill-defined-F warning for empty rows
def test_multilabel_scores_agree_with_sklearn() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    truth, pred = rng.random((30, 3)) < 0.4, rng.random((30, 3)) < 0.4
    s = multilabel_scores(_as_sets(truth), _as_sets(pred), THREE)
    assert s["micro_f1"] == pytest.approx(metrics.f1_score(truth, pred, average="micro"))
    assert s["samples_f1"] == pytest.approx(metrics.f1_score(truth, pred, average="samples"))
    assert s["jaccard"] == pytest.approx(metrics.jaccard_score(truth, pred, average="samples"))


def test_mean_average_precision_with_ties_and_empty_label() -> None:
    labels = ("happy", "sad", "angry")  # angry has no positive clip: left out of the mean
    y_true = [{"happy"}, {"sad"}, {"happy", "sad"}, set()]
    scores = np.array([[0.9, 0.7, 0.1], [0.8, 0.7, 0.2], [0.3, 0.5, 0.3], [0.1, 0.4, 0.4]])
    # happy ranked: 0.9 (+), 0.8 (-), 0.3 (+), 0.1 (-): AP = (1/1 + 2/3) / 2 = 5/6
    # sad: tie at 0.7 (one +, one -) then 0.5 (+): thresholds give (P, R) = (1/2, 1/2), (2/3, 1)
    #      AP = 1/2 * 1/2 + 1/2 * 2/3 = 7/12
    # mAP = (5/6 + 7/12) / 2 = 17/24
    assert mean_average_precision(y_true, scores, labels) == pytest.approx(17 / 24)
    with pytest.raises(ValueError, match="shape"):
        mean_average_precision(y_true, scores[:, :2], labels)


def test_mean_average_precision_agrees_with_sklearn() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    truth = rng.random((40, 3)) < 0.4
    scores = np.round(rng.random((40, 3)), 1)  # rounded so that ties occur
    assert mean_average_precision(_as_sets(truth), scores, THREE) == pytest.approx(
        metrics.average_precision_score(truth, scores, average="macro")
    )


def test_hit_rate_with_synonyms_and_function() -> None:
    answers = ["She seems joyful and relaxed.", "He looks anxious, maybe afraid", "a calm face", "unclear"]
    truths = ["happy", "worried", "sad", "neutral"]
    # joyful -> happy (hit), anxious -> worried (hit), calm -> neutral != sad, nothing named -> 2/4
    assert hit_rate(answers, truths) == pytest.approx(0.5)
    # A truth outside the vocabulary is looked for verbatim.
    assert hit_rate(["quite Bored, really"], ["bored"], {"joy": "happy"}) == 1.0
    # A function from text to the labels it names.
    assert hit_rate(["POSITIVE", "meh"], ["positive", "negative"], lambda text: {text.lower()}) == 0.5


def test_agreement() -> None:
    assert agreement(["a", "b", "c", "d"], ["a", "x", "c", "d"]) == pytest.approx(0.75)
    with pytest.raises(ValueError, match="4 and 1"):
        agreement(["a"] * 4, ["a"])


# --- plot and import hygiene -------------------------------------------------------------------


def test_plot_confusion_writes_png(tmp_path) -> None:
    cm = confusion_matrix(Y_TRUE, Y_PRED, THREE)
    path = plot_confusion(cm, THREE, tmp_path / "plots" / "cm.png", title="tiny")
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 1000
    with pytest.raises(ValueError, match="does not fit"):
        plot_confusion(cm, THREE[:2], tmp_path / "bad.png")


def test_metrics_import_without_torch_or_matplotlib() -> None:
    code = "import sys, emo_edge.eval.metrics; assert not {'torch', 'matplotlib'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------------------------
# grounded reasons: cue precision, the reason's conclusion, answer/reason consistency
# ---------------------------------------------------------------------------------------------

OPTIONS = ["rising pitch", "falling pitch", "long pause", "fluent speech", "tilted head", "upright head"]


def test_cue_precision_counts_hallucinated_options() -> None:
    from emo_edge.eval.metrics import cue_precision, mean_cue_precision

    own = ["rising pitch", "upright head", "fluent speech"]
    assert cue_precision("The voice has rising pitch, the head is upright head.", own, OPTIONS) == 1.0
    # names one own cue and one it does not have: half of what it names is hallucinated
    assert cue_precision("Rising pitch and a tilted head.", own, OPTIONS) == 0.5
    assert cue_precision("Falling pitch, a long pause and a tilted head.", own, OPTIONS) == 0.0
    assert math.isnan(cue_precision("Nothing to see.", own, OPTIONS))  # names no option: no precision
    # a phrase outside the options (e.g. a label-derived cue) neither helps nor hurts
    assert cue_precision("Raised eyebrows and rising pitch.", own, OPTIONS) == 1.0
    assert mean_cue_precision(["rising pitch", "Nothing.", "tilted head"], [own] * 3, [OPTIONS] * 3) == 0.5


@pytest.mark.parametrize(("reason", "expected"), [
    ("The face fits worried or surprise. The voice fits worried or surprise. The answer is worried.", "worried"),
    ("Visual cues fit neutral or sad. The contradicting words sound happy. Both point to neutral.", "neutral"),
    ("<think>Face: fits happy or angry.</think><answer>angry</answer>", "angry"),
    ("The face fits neutral or sad.", "sad"),  # the last label named in the last label-naming sentence
    ("No verdict here.", None),
])
def test_reason_conclusion(reason: str, expected: str | None) -> None:
    from emo_edge.eval.metrics import reason_conclusion

    assert reason_conclusion(reason) == expected


def test_answer_reason_consistency_counts_disagreements_and_missing_answers() -> None:
    from emo_edge.eval.metrics import answer_reason_consistency

    reasons = ["... The answer is sad.", "... The answer is neutral.", "... Both point to happy.", "no verdict"]
    assert answer_reason_consistency(["sad", "sad", None, "happy"], reasons) == 0.25
    assert answer_reason_consistency(["sad", "neutral"], reasons[:2]) == 1.0
    assert answer_reason_consistency([None], ["no verdict"]) == 0.0  # nothing read on either side is no agreement
    with pytest.raises(ValueError, match="length mismatch"):
        answer_reason_consistency(["sad"], reasons)


# ---------------------------------------------------------------------------------------------
# views: --modalities and the model-side masks
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "views"), [
    ("video,audio,text", ("image", "video", "audio", "text")),  # the old default keeps meaning every view
    ("audio,video,text", ("image", "video", "audio", "text")),
    ("image", ("image",)),
    ("video", ("video",)),
    ("text", ("text",)),
    ("audio,text", ("audio", "text")),
    ("image,audio,text", ("image", "audio", "text")),
])
def test_parse_modalities_views(text: str, views: tuple[str, ...]) -> None:
    from emo_edge.eval.evaluate import parse_modalities

    assert parse_modalities(text) == views


def test_parse_modalities_errors_and_head_needs_perception() -> None:
    from emo_edge.eval.evaluate import check_views, parse_modalities

    with pytest.raises(ValueError, match="unknown \\['smell'\\]; choose a comma list of image, video, audio, text"):
        parse_modalities("video,smell")
    with pytest.raises(ValueError, match="empty list"):
        parse_modalities(" , ")
    with pytest.raises(ValueError, match="the head needs image, video or audio"):
        check_views(("text",), "head")
    check_views(("text",), "llm")


def test_eval_batches_switch_views_apart() -> None:
    from types import SimpleNamespace

    from emo_edge.eval.evaluate import EvalSet

    records = [SimpleNamespace(subtitle=f"s{i}") for i in range(3)]
    fs = type("FeatureSetLike", (), {"records": records, "__len__": lambda self: 3})()
    for mods, present, subs in ((("image", "audio"), [1, 0, 1], None), (("video", "text"), [0, 1, 0], "s0"),
                                (("video", "audio", "text"), [1, 1, 1], "s0")):
        (idx, on, subtitles), = EvalSet(fs, mods).batches(8, progress=False)
        assert on.tolist() == [present] * 3 and subtitles[0] == subs, mods


def test_to_batch_masks_the_peak_frame_apart_from_the_frames() -> None:
    torch = pytest.importorskip("torch")
    from emo_edge.model.inputs import to_batch

    rng = np.random.default_rng(0)
    frames = rng.integers(1, 255, (2, 3, 8, 8, 3), dtype=np.uint8)
    image = rng.integers(1, 255, (2, 16, 16, 3), dtype=np.uint8)
    mel = rng.random((2, 4, 10)).astype(np.float32)
    on, off = np.ones(2), np.zeros(2)
    b = to_batch(frames, image, mel, on, on, ["emotion"] * 2, [None, None], image_on=off)
    assert b.present.tolist() == [[0, 1, 1]] * 2 and not b.image.any() and b.frames.all()
    b = to_batch(frames, image, mel, off, on, ["emotion"] * 2, [None, None], image_on=on)
    assert b.present.tolist() == [[1, 0, 1]] * 2 and b.image.all() and not b.frames.any()
    b = to_batch(frames, image, mel, off, on, ["emotion"] * 2, [None, None])  # training: one visual switch
    assert b.present.tolist() == [[0, 0, 1]] * 2 and not b.image.any()
    assert isinstance(b.image, torch.Tensor)


def test_report_reads_the_label_from_the_reason_so_they_cannot_disagree() -> None:
    from types import SimpleNamespace

    from emo_edge.data.schema import Record
    from emo_edge.eval.evaluate import Predictions, build_report

    opts = ["rising pitch", "falling pitch", "tilted head", "upright head"]
    records = [Record(id=f"c{i}", dataset="d", video="v.mp4", audio=None, subtitle="", label=lab,
                      cues=["rising pitch", "upright head"], meta={"cue_options": opts, "label_cues": ["low pitch"]})
               for i, lab in enumerate(["sad", "neutral"])]
    fs = SimpleNamespace(records=records, bad=[])
    reasons = ["Low pitch and rising pitch fit neutral or sad. The answer is sad.",
               "A tilted head fits neutral or sad. The answer is neutral."]
    # the quickstart's clip: a separate emotion answer "sad" while the reason concludes "neutral"
    separate = build_report(fs, Predictions(["sad", "sad"], ["sad", "sad"], reasons), "llm", ("video",))
    assert separate["answer_reason_consistency"] == 0.5 and separate["acc"] == 0.5
    one = build_report(fs, Predictions(["sad", "sad"], reasons, reasons, from_reason=True), "reason", ("video",))
    assert one["answer_reason_consistency"] == 1.0 and one["acc"] == 1.0
    assert one["cue_recall"] == 0.25 and one["cue_precision"] == 0.5 and one["label_cue_recall"] == 0.5


def test_cue_recall_by_attribute_splits_the_recall_by_attribute() -> None:
    """Per attribute, the share of clips whose reason names their own value; the onset of worried / surprise is
    label-derived and not counted (a copy of `own_cues_by_attribute` that kept it gave onset 0.5 and failed)."""
    from types import SimpleNamespace

    from emo_edge.data import synth_v2 as v2
    from emo_edge.data.schema import Record
    from emo_edge.eval.evaluate import Predictions, build_report
    from emo_edge.eval.metrics import cue_recall_by_group

    assert cue_recall_by_group(["a b", "b"], [{"x": "a", "y": "b"}, {"y": "c"}]) == {"x": 1.0, "y": 0.5}
    values = {**{a.name: sorted(a.phrases)[0] for a in v2.ATTRIBUTES}, "contour": "rising", "onset": "slow"}
    records = [Record(id=f"c{i}", dataset="d", video="v.mp4", audio=None, subtitle="", label=lab, cues=[],
                      meta={"attributes": values}) for i, lab in enumerate(["sad", "worried"])]
    reasons = ["The voice has rising pitch and a slow build-up. The answer is sad.",
               "The voice has falling pitch. The answer is worried."]
    report = build_report(SimpleNamespace(records=records, bad=[]),
                          Predictions(["sad", "worried"], reasons, reasons, from_reason=True), "reason", ("video",))
    by = report["cue_recall_by_attribute"]
    assert by["contour"] == 0.5 and by["onset"] == 1.0 and by["gaze"] == 0.0
    assert set(by) == {a.name for a in v2.ATTRIBUTES}
    assert v2.own_cues_by_attribute("worried", values).keys() == set(by) - {"onset"}
