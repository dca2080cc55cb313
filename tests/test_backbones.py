"""Pretrained backbones from local directories (tiny random SigLIP / Whisper configs saved here; nothing downloaded)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from emo_edge.config import Preset, load_preset, to_dict

W = 32  # width of the tiny preset's encoders


@pytest.fixture(scope="module")
def towers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from transformers import SiglipVisionConfig, SiglipVisionModel, WhisperConfig, WhisperModel

    root = tmp_path_factory.mktemp("backbones")
    torch.manual_seed(0)
    siglip = SiglipVisionConfig(hidden_size=W, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                                image_size=64, patch_size=16)
    SiglipVisionModel(siglip).save_pretrained(root / "siglip")
    whisper = WhisperConfig(num_mel_bins=32, d_model=W, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=64,
                            decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=64, vocab_size=64,
                            max_source_positions=100, max_target_positions=16, pad_token_id=0, bos_token_id=1,
                            eos_token_id=2, decoder_start_token_id=1, suppress_tokens=[], begin_suppress_tokens=[])
    # max_source_positions 100 -> 200 mel frames: the tiny preset's 2 s window
    WhisperModel(whisper).save_pretrained(root / "whisper")
    return {"siglip": root / "siglip", "whisper": root / "whisper"}


def pretrained_preset(towers: dict[str, Path]) -> Preset:
    p = load_preset("tiny")
    m = p.model
    m.image_encoder = dataclasses.replace(m.image_encoder, path=str(towers["siglip"]))
    m.video_encoder.frame = dataclasses.replace(m.video_encoder.frame, path=str(towers["siglip"]))  # 32 px frames
    m.audio_encoder = dataclasses.replace(m.audio_encoder, path=str(towers["whisper"]), downsample=2)
    return p


def real_batch(synth_dir: Path, n: int = 3):
    from emo_edge.data.features import load_features
    from emo_edge.model.inputs import to_batch

    fs = load_features(synth_dir / "val.jsonl", load_preset("tiny").model.frontend, limit=n, progress=False)
    on = np.ones(n, bool)
    return to_batch(fs.frames, fs.image, fs.mel, on, on, ["emotion"] * n, [r.subtitle for r in fs.records])


def test_pretrained_encoders_give_the_builtin_token_interface(towers, synth_dir):
    from transformers import SiglipVisionModel, WhisperModel

    from emo_edge.model.backbones import SiglipTower, WhisperAudioEncoder
    from emo_edge.model.perception import Perception

    cfg = pretrained_preset(towers).model
    perc = Perception(cfg, llm_width=64).eval()
    assert isinstance(perc.image_encoder.vit, SiglipTower) and isinstance(perc.video_encoder.frame, SiglipTower)
    assert isinstance(perc.audio_encoder, WhisperAudioEncoder)
    b = real_batch(synth_dir)
    with torch.no_grad():
        img, vid, aud = perc.encode_image(b.image), perc.encode_video(b.frames), perc.encode_audio(b.mel)
        out = perc(b.image, b.frames, b.mel, b.present)
    assert img.shape == (3, 16, W) and vid.shape == (3, cfg.frontend.n_frames, W) and aud.shape == (3, 100, W)
    assert out["tokens"].shape == (3, cfg.tokens.total, 64) and torch.isfinite(out["tokens"]).all()
    # the wrappers run the saved weights, with SigLIP's pixel normalisation and Whisper's 3000-style frame count
    with torch.no_grad():
        ref_img = SiglipVisionModel.from_pretrained(towers["siglip"])(pixel_values=(b.image - 0.5) / 0.5)
        ref_aud = WhisperModel.from_pretrained(towers["whisper"]).get_encoder()(input_features=b.mel[..., :200])
    torch.testing.assert_close(img, ref_img.last_hidden_state)
    torch.testing.assert_close(aud, ref_aud.last_hidden_state)


def test_pretrained_encoders_are_frozen_and_stay_in_eval_mode(towers):
    from emo_edge.model.perception import Perception

    perc = Perception(pretrained_preset(towers).model, llm_width=64).train()
    for tower in (perc.image_encoder.vit, perc.video_encoder.frame, perc.audio_encoder):
        assert not any(p.requires_grad for p in tower.parameters())
        assert not any(m.training for m in tower.modules() if m is not tower)
    assert any(p.requires_grad for p in perc.fusion.parameters())


def test_shape_disagreements_name_the_field(towers):
    from emo_edge.model.perception import Perception

    cfg = pretrained_preset(towers).model
    wide = dataclasses.replace(cfg, image_encoder=dataclasses.replace(cfg.image_encoder, width=64, heads=2))
    with pytest.raises(ValueError, match="width"):
        Perception(wide, 64)
    mels = dataclasses.replace(cfg, frontend=dataclasses.replace(cfg.frontend, n_mels=64))
    with pytest.raises(ValueError, match="mel bins"):
        Perception(mels, 64)
    longer = dataclasses.replace(cfg, frontend=dataclasses.replace(cfg.frontend, window_seconds=3.0))
    with pytest.raises(ValueError, match="window_seconds to 2"):
        Perception(longer, 64)
    with pytest.raises(FileNotFoundError, match="no config.json"):
        Perception(dataclasses.replace(cfg, audio_encoder=dataclasses.replace(cfg.audio_encoder, path="/nowhere")), 64)


def test_train_and_reload_with_pretrained_encoders_and_a_local_llm(towers, tiny_ckpt, synth_dir, tmp_path):
    """Stage 1 on the SigLIP/Whisper towers and the LLaMA directory of a trained checkpoint given as llm.path."""
    from emo_edge import checkpoint as ck
    from emo_edge.checkpoint import load_checkpoint
    from emo_edge.train.loop import train

    p = pretrained_preset(towers)
    p.model.llm = dataclasses.replace(p.model.llm, path=str(tiny_ckpt / ck.LLM_DIR))
    yaml_path = tmp_path / "tiny-pretrained.yaml"
    yaml_path.write_text(yaml.safe_dump(to_dict(p)))
    out = tmp_path / "ckpt"
    train(yaml_path, synth_dir, out, stages=(1,), progress=False,
          overrides={"encoder_steps": 1, "perception_steps": 2, "eval_every": 10})
    assert not (out / ck.LLM_DIR).exists()  # the backbone stays where llm.path points
    model = load_checkpoint(out)
    assert model.cfg.audio_encoder.path == str(towers["whisper"])
    with torch.no_grad():
        answers = model.generate(real_batch(synth_dir, 2), max_new_tokens=3)
    assert len(answers) == 2
