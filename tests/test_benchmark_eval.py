"""`emo-edge eval --benchmark` end to end: a MER2023 fixture tree is prepared and scored with the
shipped default model (LLM answers), and `data prepare` runs from the command line."""

from __future__ import annotations

import json
import re
from pathlib import Path

from fixtures.datasets import build
from typer.testing import CliRunner

from emo_edge.cli import app

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
    assert "test 1, train 2" in out and "bad clip 00004" in out
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
    for key in ("acc", "waf", "uar", "war", "hit_rate"):
        assert 0.0 <= report[key] <= 1.0
    assert [p["id"] for p in report["predictions"]] == [f"sample_0000010{i}" for i in range(1, 5)]
    assert all(p["answer"] for p in report["predictions"])  # the LLM answered every clip
    assert (tmp_path / "work" / "prepare_report.json").is_file()


def test_eval_needs_data_or_benchmark() -> None:
    res = runner.invoke(app, ["eval"], env=ENV)
    assert res.exit_code == 2 and "exactly one of --data or --benchmark" in _plain(res.output)
