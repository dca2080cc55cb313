"""Shared fixtures: a small real SynthEmo set and a tiny checkpoint trained on it (once per session)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


SYNTH_SPLITS = (("train", 36), ("val", 12), ("test", 12))  # clips per split of the session's SynthEmo set
SYNTH_SEED = 7
# v1, though v2 is the data default: the suite's cost and assertions stay as they were. With the tiny preset's
# 320-piece vocabulary, v2's reasons take 1.7x the tokens of v1's (median 131 vs 76 over 36 train clips), and
# tests/test_synth_v2.py covers v2, and the tests that score the shipped default take its own version
# (default_synth_version).
SYNTH_VERSION = 1


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's SynthEmo set; EMO_EDGE_SYNTH_DIR names one made beforehand with the same recipe
    (scripts/gpu_check.sh --prepare, for a machine without espeak-ng)."""
    from emo_edge.data.synth import generate

    given = os.environ.get("EMO_EDGE_SYNTH_DIR")
    if given:
        missing = [s for s, _ in SYNTH_SPLITS if not (Path(given) / f"{s}.jsonl").is_file()]
        assert not missing, f"EMO_EDGE_SYNTH_DIR={given} lacks {missing}"
        return Path(given)
    out = tmp_path_factory.mktemp("synthemo")
    for split, n in SYNTH_SPLITS:
        generate(out, n, seed=SYNTH_SEED, split=split, workers=2, progress=False, version=SYNTH_VERSION)
    return out


@pytest.fixture(scope="session")
def default_synth_version() -> int:
    """The SynthEmo version the shipped default was trained on, read from the data directory its meta.json names
    (`data/synthemo`: v1, `data/synthemo-v2`: v2, as scripts/train_default.sh writes it). Tests that score the
    default's answers generate clips of that version, so they hold on either side of the default's move to v2."""
    from emo_edge.checkpoint import read_meta

    return 2 if "synthemo-v2" in str(read_meta("default").get("data", "")) else 1


@pytest.fixture(scope="session")
def tiny_ckpt(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from emo_edge.train.loop import train

    out = tmp_path_factory.mktemp("ckpt") / "tiny"
    return train("tiny", synth_dir, out, progress=False)


@pytest.fixture(scope="session")
def default_bundle(synth_dir: Path) -> Path:
    """The shipped default exported for cpu-x86, cached under export/build/ and rebuilt when the checkpoint, the
    bundle format or the graphs' io spec (what this emo-edge exports for that checkpoint) changes.

    INT8 is calibrated on the session's small SynthEmo val split (a fresh clone has no data/synthemo)."""
    import json

    from emo_edge.checkpoint import DEFAULT_CHECKPOINT, content_digest
    from emo_edge.config import load_model_config
    from emo_edge.export.bundle import build_bundle
    from emo_edge.runtime.io_spec import build_io_spec
    from emo_edge.runtime.manifest import FORMAT_VERSION

    out = ROOT / "export" / "build" / "test-default-cpu-x86"
    manifest = out / "manifest.json"
    old = json.loads(manifest.read_text()) if manifest.is_file() else {}
    built_from = (old.get("checkpoint") or {}).get("sha256"), old.get("format_version"), old.get("io_spec")
    width = (old.get("model") or {}).get("n_embd")
    spec = build_io_spec(load_model_config(DEFAULT_CHECKPOINT / "config.yaml"), width).to_dict() if width else None
    if built_from != (content_digest("default"), FORMAT_VERSION, json.loads(json.dumps(spec))):
        build_bundle("default", "cpu-x86", out, data=synth_dir, calibration=synth_dir / "val.jsonl", parity_clips=4,
                     force=True)
    return out


@pytest.fixture(scope="session")
def nano_bundle(tiny_ckpt: Path, synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny checkpoint exported for the jetson-orin-nano target (int8 encoders, fp16 fusion, q4_k_m LLM), with
    llm.n_ctx cut to the tiny LLM's 256 positions (the shipped profile's 512 is for the real model)."""
    import yaml

    from emo_edge import resources
    from emo_edge.export.bundle import build_bundle

    work = tmp_path_factory.mktemp("nano")
    profile = yaml.safe_load(resources.find(resources.PROFILES, "jetson-orin-nano").read_text())
    profile["llm"]["n_ctx"] = 256
    (work / "jetson-orin-nano.yaml").write_text(yaml.safe_dump(profile))
    out = work / "b"
    build_bundle(tiny_ckpt, work / "jetson-orin-nano.yaml", out, data=synth_dir, calibration=synth_dir / "val.jsonl",
                 parity_clips=2, threads=1)
    return out
