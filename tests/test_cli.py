import re

import pytest
from typer.testing import CliRunner

from emo_edge.cli import app

runner = CliRunner()
COMMANDS = [["data", "synth"], ["data", "prepare"], ["train"], ["eval"], ["info"], ["engines", "build"], ["run"],
            ["bench"], ["init"]]


@pytest.mark.parametrize("cmd", COMMANDS, ids=" ".join)
def test_help_of_every_subcommand(cmd):
    res = runner.invoke(app, [*cmd, "--help"])
    assert res.exit_code == 0, res.output
    assert "Usage" in res.output


def _plain(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def test_info_paper_counts_without_download():
    res = runner.invoke(app, ["info", "--preset", "paper"], env={"HF_HUB_OFFLINE": "1", "COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    out = _plain(res.output)
    assert "6,738,415,616" in out  # LLaMA-2-7B
    assert 'tokens: {"fusion": 64, "image": 256, "video": 64, "audio": 64, "attributes": 0}' in out  # 448, as the paper


def test_bad_arguments_give_clear_errors(tmp_path):
    res = runner.invoke(app, ["eval", "--data", str(tmp_path), "--modalities", "smell"], env={"COLUMNS": "200"})
    assert res.exit_code == 2 and "smell" in _plain(res.output)
    res = runner.invoke(app, ["eval", "--data", str(tmp_path), "--checkpoint", str(tmp_path / "nope")],
                        env={"COLUMNS": "200"})
    assert res.exit_code == 2 and "no such directory" in _plain(res.output)
    res = runner.invoke(app, ["data", "synth", "--out", str(tmp_path), "--split", "dev"], env={"COLUMNS": "200"})
    assert res.exit_code == 2 and "dev" in _plain(res.output)
    res = runner.invoke(app, ["eval", "--data", str(tmp_path), "--modalities", "text", "--answer-from", "head"],
                        env={"COLUMNS": "200"})
    assert res.exit_code == 2 and "the head needs image, video or audio" in _plain(res.output)
    res = runner.invoke(app, ["data", "synth", "--out", str(tmp_path), "--split", "test", "--version", "3"],
                        env={"COLUMNS": "200"})
    assert res.exit_code == 2 and "version must be one of 1, 2, got 3" in _plain(res.output)
    res = runner.invoke(app, ["data", "synth", "--out", str(tmp_path), "--split", "test", "--version", "1",
                              "--neutral-text"], env={"COLUMNS": "200"})
    assert res.exit_code == 2 and "needs version 2" in _plain(res.output)
