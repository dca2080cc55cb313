"""Shared fixtures: a small real SynthEmo set and a tiny checkpoint trained on it (once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from emo_edge.data.synth import generate

    out = tmp_path_factory.mktemp("synthemo")
    for split, n in (("train", 36), ("val", 12), ("test", 12)):
        generate(out, n, seed=7, split=split, workers=2, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_ckpt(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from emo_edge.train.loop import train

    out = tmp_path_factory.mktemp("ckpt") / "tiny"
    return train("tiny", synth_dir, out, progress=False)
