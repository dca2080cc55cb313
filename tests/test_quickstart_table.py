"""The quickstart's per-clip table shows the answers that stood: a withdrawn early answer is dropped, a confirmed
one counts from when it first went out."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("quickstart_table", ROOT / "scripts" / "quickstart_table.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _state(source: str, label: str, status: str, latency: float, utt: int = 1) -> dict:
    return {"type": "state", "source": source, "label": label, "status": status, "latency_ms": latency,
            "utterance_id": utt}


def test_withdrawn_answers_are_dropped_and_confirmed_ones_keep_their_early_latency():
    events = [
        _state("head", "neutral", "final", 30.0, utt=0),  # a sliding-window state: not an utterance's answer
        _state("head", "neutral", "provisional", 58.0), _state("llm", "neutral", "provisional", 76.0),
        {"type": "reasoning", "utterance_id": 1, "text": "... Both point to neutral.", "done": True,
         "status": "withdrawn"},
        _state("head", "neutral", "withdrawn", 161.0),
        _state("head", "worried", "provisional", 78.0), _state("llm", "worried", "provisional", 95.0),
        {"type": "reasoning", "utterance_id": 1, "text": "... The answer is worried.", "done": True,
         "status": "provisional"},
        _state("head", "worried", "final", 401.0), _state("llm", "worried", "final", 401.0),
        {"type": "reasoning", "utterance_id": 1, "text": "... The answer is worried.", "done": True,
         "status": "final"},
    ]
    head, llm, reason = _module().answers_that_stood(events)
    assert (head["label"], head["latency_ms"]) == ("worried", 78.0)
    assert (llm["label"], llm["latency_ms"]) == ("worried", 95.0)
    assert reason.endswith("worried.")


def test_an_answer_given_only_at_the_hangover_counts_from_then():
    head, llm, reason = _module().answers_that_stood([_state("head", "sad", "final", 420.0)])
    assert (head["label"], head["latency_ms"]) == ("sad", 420.0) and llm is None and reason == ""


def test_the_perceived_column_lists_the_head_states_attribute_values():
    m = _module()
    final = {**_state("head", "sad", "final", 420.0), "attributes": ["gaze", "pause"],
             "attribute_values": ["averted", "fluent"], "attribute_scores": [0.9, 0.7]}
    head, _, _ = m.answers_that_stood([_state("head", "sad", "provisional", 80.0), final])
    assert m.perceived(head) == "averted, fluent"
    assert m.perceived(_state("head", "sad", "final", 1.0)) == "-" and m.perceived(None) == "-"
