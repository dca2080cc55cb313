"""The shipped default checkpoint: loads from the package and recognises clips of an unseen seed."""

from pathlib import Path

import pytest

from emo_edge.checkpoint import DEFAULT_CHECKPOINT, read_meta
from emo_edge.eval.evaluate import evaluate_checkpoint

pytestmark = pytest.mark.skipif(not (DEFAULT_CHECKPOINT / "config.yaml").is_file(), reason="no shipped default")


@pytest.fixture(scope="module")
def unseen(tmp_path_factory) -> Path:
    from emo_edge.data.synth import generate

    out = tmp_path_factory.mktemp("unseen")
    generate(out, 36, seed=424242, split="test", workers=2, progress=False)
    return out


def test_default_is_small_and_documented():
    size = sum(p.stat().st_size for p in DEFAULT_CHECKPOINT.rglob("*") if p.is_file())
    assert size <= 50 * 2**20
    meta = read_meta("default")
    assert meta["preset"] == "edge-small" and meta["seed"] == 0


# The shipped default reaches WAF ~0.56 on the 600-clip test split (README, Results): its visual path
# has not learned yet. These bounds guard against regressions (chance is 1/6), not the targets.
def test_default_llm_and_head_on_an_unseen_seed(unseen):
    llm = evaluate_checkpoint("default", unseen, "llm", ("video", "audio", "text"), None, progress=False)
    assert llm["n"] == 36 and llm["n_unparsed"] == 0
    assert llm["acc"] >= 0.4, llm["per_class"]
    assert llm["head_acc"] >= 0.4
    assert llm["cue_recall"] >= 0.5


def test_default_single_modality_cannot_resolve_the_pairs(unseen):
    for mods in (("video",), ("audio",)):
        r = evaluate_checkpoint("default", unseen, "head", mods, None, progress=False)
        assert r["waf"] <= 0.85, (mods, r["waf"])
