"""scripts/summarize_results.py: the targets table reads the right runs and says met / not met / missing."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _module():
    spec = importlib.util.spec_from_file_location("summarize_results", ROOT / "scripts" / "summarize_results.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclass looks its module up there
    spec.loader.exec_module(mod)
    return mod


def _runs(**waf: float) -> dict:
    return {name.replace("_", "-").replace("-plus-", "+"): {"n": 600, "waf": v} for name, v in waf.items()}


def _row(lines: list[str], what: str) -> list[str]:
    hits = [line for line in lines if line.startswith(f"| {what} |")]
    assert len(hits) == 1, (what, lines)
    return [c.strip() for c in hits[0].strip("|").split("|")]


def test_the_temporal_view_targets_are_differences_and_can_fail():
    m = _module()
    lost = "head WAF lost without the temporal view (all - image+audio+text)"
    chance = "head WAF, temporal (video) only, above chance (1/6)"
    ok = m.target_table(_runs(default_head=0.97, default_head_image_plus_audio_plus_text=0.93, default_head_video=0.35))
    assert _row(ok, lost) == [lost, "0.0400", ">= 0.03", "yes"]
    assert _row(ok, chance)[1:] == [f"{0.35 - 1 / 6:.4f}", ">= 0.15", "yes"]
    bad = m.target_table(_runs(default_head=0.97, default_head_image_plus_audio_plus_text=0.95,
                               default_head_video=0.30))
    assert _row(bad, lost)[1:] == ["0.0200", ">= 0.03", "**no**"]  # 2 points: the temporal view barely matters
    assert _row(bad, chance)[-1] == "**no**"  # 0.30 is 0.13 above chance
    assert _row(m.target_table({}), lost)[1:] == ["-", ">= 0.03", "-"]  # a missing run is neither met nor failed


@pytest.mark.parametrize(("what", "run", "key", "good", "bad"), [
    ("LLM WAF, label from the reason (as the runtime), test", "default-reason", "waf", 0.96, 0.94),
    ("head WAF, unseen seed 12345", "seed12345-head", "waf", 0.95, 0.949),
    ("cue precision (label-independent attributes), test", "default-llm", "cue_precision", 0.85, 0.84),
    ("answer/reason consistency (short answer vs reason), test", "default-llm", "answer_reason_consistency",
     0.995, 0.98),
    ("llm WAF, audio only", "default-llm-audio", "waf", 0.80, 0.81),
    ("llm WAF, text only, neutral-text variant", "neutral-llm-text", "waf", 0.40, 0.45),
])
def test_each_goal_reads_its_run_and_bound(what, run, key, good, bad):
    m = _module()
    for value, met in ((good, "yes"), (bad, "**no**")):
        row = _row(m.target_table({run: {"n": 600, "waf": 0.5, key: value}}), what)
        assert row[1] == f"{value:.4f}" and row[3] == met, row


def test_load_runs_keeps_evaluation_reports_only(tmp_path, capsys):
    (tmp_path / "default-llm.json").write_text(json.dumps({"n": 8, "waf": 0.5, "acc": 0.5, "cue_recall": 0.9}))
    (tmp_path / "other.json").write_text(json.dumps({"not": "a report"}))
    m = _module()
    assert list(m.load_runs(tmp_path)) == ["default-llm"]
    m.main(tmp_path)
    out = capsys.readouterr().out
    assert "| default-llm | 8 | 0.5000 | 0.5000 | - | 0.9000 |" in out and "a smoke run" in out


def test_attribute_table_lists_each_runs_recall_by_attribute():
    m = _module()
    runs = {"default-llm": {"n": 600, "waf": 0.9, "cue_recall_by_attribute": {"gaze": 0.5, "onset": 0.75}},
            "seed12345-llm": {"n": 600, "waf": 0.9, "cue_recall_by_attribute": {"gaze": 0.25}},
            "default-head": {"n": 600, "waf": 0.9, "cue_recall_by_attribute": None}}
    lines = m.attribute_table(runs)
    assert lines[0] == "| run | gaze | onset |"
    assert lines[2:] == ["| default-llm | 0.5000 | 0.7500 |", "| seed12345-llm | 0.2500 | - |"]
    assert m.attribute_table({"default-head": runs["default-head"]}) == []


def test_attribute_head_table_lists_the_head_runs_only():
    m = _module()
    runs = {"default-llm": {"answer_from": "llm", "head_attribute_accuracy": {"gaze": 0.5}},
            "default-head": {"answer_from": "head", "head_attribute_accuracy": {"gaze": 0.75, "onset": 0.5}},
            "default-head-audio": {"answer_from": "head", "head_attribute_accuracy": {"gaze": 0.25, "onset": 1.0}}}
    lines = m.attribute_table(runs, "head_attribute_accuracy", answer_from="head")
    assert lines[0] == "| run | gaze | onset |"
    assert lines[2:] == ["| default-head | 0.7500 | 0.5000 |", "| default-head-audio | 0.2500 | 1.0000 |"]
