"""Benchmark metrics against values worked out by hand in the comments, and the benchmark registry."""

from __future__ import annotations

import pytest

from emo_edge.data.adapters import SOURCES
from emo_edge.data.adapters.base import labelmap
from emo_edge.eval import vocabulary as vocab
from emo_edge.eval.benchmarks import (
    BENCHMARKS,
    get_benchmark,
    head_answer,
    open_vocabulary_scores,
    score,
    vocab_families,
)


def _score(name: str, truths: list, answers: list[str]) -> dict:
    b = get_benchmark(name)
    return score(b, labelmap(b.labelmap).labels, truths, answers)


def test_registry_holds_the_18_benchmarks() -> None:
    assert list(BENCHMARKS) == [
        "mer2023", "mer2024", "meld-e", "iemocap", "caer", "e3", "dfew", "mafw", "mc-eiu",
        "cmu-mosi", "cmu-mosei", "ch-sims", "ch-sims-v2", "meld-s", "mafw-m", "bold", "ov-merd+", "mc-eiu-i"]
    for b in BENCHMARKS.values():
        assert b.source in SOURCES
        labelmap(b.labelmap)  # exists
    with pytest.raises(ValueError, match="unknown benchmark 'x'; choose one of mer2023"):
        get_benchmark("x")


def test_single_label_accuracy_waf_and_hit_rate() -> None:
    # answers read as happy, happy ("joyful" is a synonym), sad ("sadness"), neutral ("calm")
    r = _score("mer2023", ["happy", "happy", "sad", "angry"], ["I think happy", "joyful", "sadness", "calm"])
    assert r["predictions"] == ["happy", "happy", "sad", "neutral"]
    assert r["acc"] == pytest.approx(3 / 4)
    # F1: happy 1 (support 2), sad 1 (support 1), angry 0 (support 1) -> (2 + 1 + 0) / 4
    assert r["waf"] == pytest.approx(3 / 4)
    assert r["uar"] == pytest.approx(2 / 3)  # recalls 1, 1, 0 over the three classes present
    # families: joy=joy, joy=joy, sadness=sadness, neutral!=anger
    assert r["hit_rate"] == pytest.approx(3 / 4)


def test_dataset_native_label_space() -> None:
    # MELD names happiness "joy": "happy" in an answer reads as joy; "scared" reads as fear
    r = _score("meld-e", ["joy", "fear"], ["happy", "scared"])
    assert r["predictions"] == ["joy", "fear"] and r["acc"] == 1.0


def test_sentiment_drops_neutral_truths() -> None:
    # read as positive, negative (sad -> sadness family -> negative), neutral, positive (happy)
    r = _score("meld-s", ["positive", "negative", "neutral", "negative"],
               ["positive", "the person seems sad", "neutral", "happy"])
    assert r["predictions"] == ["positive", "negative", "neutral", "positive"]
    assert (r["n"], r["n_neutral_dropped"]) == (3, 1)
    assert r["acc"] == pytest.approx(2 / 3)  # kept: (pos, pos) (neg, neg) (neg, pos)
    # negative: P 1/1, R 1/2 -> F1 2/3 (support 2); positive: P 1/2, R 1 -> F1 2/3 (support 1)
    assert r["waf"] == pytest.approx(2 / 3)


def test_multilabel_micro_samples_jaccard_map() -> None:
    truths = [{"anger", "disgust"}, {"sadness"}, {"anger"}]
    r = _score("mafw-m", truths, ["anger and disgust", "sadness, helplessness", "disgust"])
    assert r["predictions"] == [["anger", "disgust"], ["helplessness", "sadness"], ["disgust"]]
    # tp 2+1+0 = 3, fp 0+1+1 = 2, fn 0+0+1 = 1 -> 2*3 / (2*3 + 2 + 1)
    assert r["micro_f1"] == pytest.approx(6 / 9)
    assert r["samples_f1"] == pytest.approx((1 + 2 / 3 + 0) / 3)  # 2|T∩P| / (|T|+|P|) per clip
    assert r["jaccard"] == pytest.approx((1 + 1 / 2 + 0) / 3)
    # AP with 0/1 scores: anger truth [1,0,1] scores [1,0,0]: 1/2 * 1 + 1/2 * 2/3 = 5/6;
    # disgust truth [1,0,0] scores [1,0,1]: 1 * 1/2; sadness: 1; helplessness has no positive (left out)
    assert r["map"] == pytest.approx((5 / 6 + 1 / 2 + 1) / 3)


def test_open_vocabulary_fscore_and_hit_rate() -> None:
    truths = [vocab_families(["happy", "excited"]), vocab_families(["worried", "nervous", "sad"]),
              vocab_families(["irritated"])]
    assert truths == [{"joy"}, {"fear", "sadness"}, {"anger"}]
    r = _score("ov-merd+", truths, ["She is joyful and relieved", "he looks angry", "I cannot tell"])
    assert r["predictions"] == [["joy"], ["anger"], []]
    # precision per clip 1, 0, 0 (empty answer); recall 1, 0, 0 -> P = R = 1/3, F = 1/3
    assert (r["ov_precision"], r["ov_recall"], r["ov_fscore"]) == pytest.approx((1 / 3, 1 / 3, 1 / 3))
    assert r["hit_rate"] == pytest.approx(1 / 3)


def test_open_vocabulary_scores_skip_empty_truths() -> None:
    # clip 1: P 1/2, R 1/1; clip 2: P 1/1, R 1/2; clip 3 has no truth and is skipped
    r = open_vocabulary_scores([{"joy"}, {"anger", "fear"}, set()], [{"joy", "fear"}, {"anger"}, {"joy"}])
    assert r["n"] == 2
    assert (r["ov_precision"], r["ov_recall"]) == pytest.approx((3 / 4, 3 / 4))
    assert r["ov_fscore"] == pytest.approx(3 / 4)
    with pytest.raises(ValueError, match="non-empty"):
        open_vocabulary_scores([set()], [{"joy"}])


def test_intent_reads_word_stems() -> None:
    r = _score("mc-eiu-i", ["questioning", "consoling", "agreeing"],
               ["The speaker asks a question", "consoling", "suggest something"])
    assert r["predictions"] == ["questioning", "consoling", "suggesting"]
    assert r["acc"] == pytest.approx(2 / 3)
    assert r["waf"] == pytest.approx(2 / 3)  # F1 1, 1, 0, each with support 1


def test_head_labels_map_into_the_dataset_label_set() -> None:
    assert head_answer(get_benchmark("meld-e"), "happy", labelmap("meld").to_shared) == "joy"
    assert head_answer(get_benchmark("dfew"), "worried", labelmap("dfew").to_shared) == "fear"
    assert head_answer(get_benchmark("cmu-mosi"), "sad", {}) == "sad"  # read as negative
    assert vocab.sentiment_of("sad") == "negative"


def test_vocabulary_families_and_synonyms() -> None:
    assert vocab.families("irritated, a bit anxious; astonished") == {"anger", "fear", "surprise"}
    assert vocab.canonical_term("doubt/confusion") == "confused"
    assert vocab.canonical_term("xyzzy") is None
    assert vocab.label_vocabulary(["anger", "happiness"])["joyful"] == "happiness"
