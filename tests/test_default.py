"""The shipped default checkpoint: loads from the package and recognises clips of an unseen seed."""

from pathlib import Path

import pytest

from emo_edge.checkpoint import DEFAULT_CHECKPOINT, read_meta
from emo_edge.eval.evaluate import evaluate_checkpoint

pytestmark = pytest.mark.skipif(not (DEFAULT_CHECKPOINT / "config.yaml").is_file(), reason="no shipped default")


@pytest.fixture(scope="module")
def unseen(tmp_path_factory, default_synth_version) -> Path:
    from emo_edge.data.synth import generate

    out = tmp_path_factory.mktemp("unseen")
    generate(out, 36, seed=424242, split="test", workers=2, progress=False, version=default_synth_version)
    return out


def test_default_is_small_and_documented():
    size = sum(p.stat().st_size for p in DEFAULT_CHECKPOINT.rglob("*") if p.is_file())
    assert size <= 50 * 2**20
    meta = read_meta("default")
    assert meta["preset"] == "edge-small" and meta["seed"] == 0


# On the 600-clip SynthEmo v2 test split the shipped default has LLM WAF 0.972, head WAF 0.972, agreement 0.987,
# cue recall 0.899 on the clip's own attributes, and reasons naming what its attribute head read on 0.993 of
# attributes (README, Results); on these 36 clips LLM WAF 1.00, head 1.00, agreement 1.0, cue recall 0.91, reasons
# following the head 1.00. 36 clips of an unseen seed are a small sample (one miss = 2.8 pt, the WAF's standard
# error ~5 pt, recall's ~3 pt), so the bounds sit about three standard errors under those values: a model that lost
# a view (the pairs unresolved, WAF ~0.6) or its attributes (recall ~0.5, a coin per binary attribute) fails, and
# so does one whose reasons do not take the head's readings (run 8a's: 0.82; with the words saying the opposite of
# the head's reading, a mutated `EmotionLLM.with_evidence`, these clips give cue recall 0.29 and 0.20).
# The attribute head: the head tilt and the four vocal attributes read at 0.99-1.00 on 600 clips (1.00 on these
# 36), blinking at 0.918 (0.86 here); a head that reads nothing is a coin (0.5).
def test_default_llm_and_head_on_an_unseen_seed(unseen):
    llm = evaluate_checkpoint("default", unseen, "llm", ("video", "audio", "text"), None, progress=False)
    assert llm["n"] == 36 and llm["n_unparsed"] == 0
    assert llm["waf"] >= 0.75, llm["per_class"]
    assert llm["head_acc"] >= 0.75
    assert llm["llm_head_agreement"] >= 0.85
    assert llm["cue_recall"] >= 0.78
    assert llm["reason_follows_head"] >= 0.90
    read = llm["head_attribute_accuracy"]
    assert sum(read[k] for k in ("head", "contour", "pause", "rate", "loudness")) / 5 >= 0.9, read
    assert read["blinking"] >= 0.65, read


# README, Results (600 clips of the v2 test split): head WAF 0.652 on the peak frame alone, 0.674 on the temporal
# view alone, 0.629 on audio alone, 0.972 on all (on these 36 clips 0.610, 0.715, 0.582). The bound for a
# single view is 0.80; a view that is ignored (chance, 1/6) or a mask that leaks the other views (~0.9) fails.
# 36 clips: a standard error of ~8 pt.
def test_default_single_view_cannot_resolve_the_pairs(unseen):
    for view in ("image", "video", "audio"):
        r = evaluate_checkpoint("default", unseen, "head", (view,), None, progress=False)
        assert 0.40 <= r["waf"] <= 0.80, (view, r["waf"])
