"""`emo-edge eval --benchmark` end to end: a MER2023 fixture tree is prepared and scored with the
shipped default model (LLM answers), and `data prepare` runs from the command line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from fixtures.datasets import build
from typer.testing import CliRunner

from emo_edge.cli import app
from emo_edge.data.adapters.base import labelmap
from emo_edge.eval import vocabulary as vocab
from emo_edge.eval.benchmarks import get_benchmark, read_answer
from emo_edge.eval.metrics import classification_report, hit_rate

runner = CliRunner()
ENV = {"COLUMNS": "200", "HF_HUB_OFFLINE": "1"}


def _plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def test_data_prepare_cli_reports_bad_clips(tmp_path: Path) -> None:
    build("dfew", tmp_path / "root")
    res = runner.invoke(app, ["data", "prepare", "--source", "dfew", "--root", str(tmp_path / "root"),
                              "--out", str(tmp_path / "out")], env=ENV)
    out = _plain(res.output)
    assert res.exit_code == 0, out
    assert "test 2, train 2" in out and "bad clip 00004" in out
    res = runner.invoke(app, ["data", "prepare", "--source", "dfew", "--root", str(tmp_path / "none"),
                              "--out", str(tmp_path / "out")], env=ENV)
    assert res.exit_code == 2 and "is not a directory" in _plain(res.output)


def test_eval_benchmark_end_to_end_with_default_model(tmp_path: Path) -> None:
    build("mer2023", tmp_path / "root")
    report_path = tmp_path / "mer2023.json"
    res = runner.invoke(app, ["eval", "--benchmark", "mer2023", "--root", str(tmp_path / "root"),
                              "--work", str(tmp_path / "work"), "--json", str(report_path)], env=ENV)
    assert res.exit_code == 0, _plain(res.output)
    assert "mer2023 (emotion, mer2023/test1)" in _plain(res.output)
    report = json.loads(report_path.read_text())
    assert report["n"] == 4 and report["n_bad"] == 0  # the broken clip is in train, not in test1
    preds = report["predictions"]
    assert [p["id"] for p in preds] == [f"sample_0000010{i}" for i in range(1, 5)]
    assert [p["truth"] for p in preds] == ["happy", "angry", "neutral", "worried"]  # the fixture's test1 labels
    # the scores are those of the answers as read, recomputed here from the per-clip record
    b = get_benchmark("mer2023")
    labels = labelmap(b.labelmap).labels
    assert [p["read"] for p in preds] == [read_answer(b, labels, p["answer"]) for p in preds]
    expected = classification_report([p["truth"] for p in preds], [p["read"] for p in preds], labels)
    for key in ("acc", "waf", "uar", "war"):
        assert report[key] == pytest.approx(expected[key]), key
    assert report["hit_rate"] == pytest.approx(
        hit_rate([p["answer"] for p in preds], [p["truth"] for p in preds], vocab.family_normaliser()))
    assert all(p["answer"] for p in report["predictions"])  # the LLM answered every clip
    assert (tmp_path / "work" / "prepare_report.json").is_file()


def test_eval_needs_data_or_benchmark() -> None:
    res = runner.invoke(app, ["eval"], env=ENV)
    assert res.exit_code == 2 and "exactly one of --data or --benchmark" in _plain(res.output)
