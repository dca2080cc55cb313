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


@pytest.fixture(scope="session")
def default_bundle() -> Path:
    """The shipped default exported for cpu-x86, cached under export/build/ and rebuilt when the checkpoint changes."""
    import hashlib

    from emo_edge.export.bundle import build_bundle

    src = ROOT / "emo_edge" / "default"
    digest = hashlib.sha256()
    for p in sorted(src.rglob("*")):
        if p.is_file() and p.name != "log.jsonl":
            digest.update(p.relative_to(src).as_posix().encode() + p.read_bytes())
    out, stamp = ROOT / "export" / "build" / "test-default-cpu-x86", digest.hexdigest()
    stamp_file = out.parent / f"{out.name}.source-sha256"
    if not (out / "manifest.json").is_file() or not stamp_file.is_file() or stamp_file.read_text() != stamp:
        build_bundle("default", "cpu-x86", out, parity_clips=4, force=True)
        stamp_file.write_text(stamp)
    return out
