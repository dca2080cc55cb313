"""Pretrained encoders from local Hugging Face directories, behind the built-in encoders' interface.

- `SiglipTower`: a SigLIP vision tower (`SiglipVisionModel`), for the peak frame and/or the frames of
  the temporal view: pixels (B, 3, S, S) in [0, 1] -> patch tokens (B, G*G, W), like `ViT`.
- `WhisperAudioEncoder`: the encoder of a Whisper model (`WhisperModel`, e.g. large-v3): our log-mel
  (already Whisper-scaled, see `emo_edge.audio`) -> (B, Na, W), like `AudioEncoder`.

Both load with `local_files_only=True` (nothing is downloaded) and are frozen: the modal adapters,
fusion and LoRA learn on top of them, as in the paper. Their weights are saved with the perception
weights, so a checkpoint stays self-contained.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from emo_edge.config import AudioEncoderConfig, ViTConfig

WHISPER_MEL_STRIDE = 2  # mel frames per encoder token (conv1 stride 1, conv2 stride 2)


def _model_dir(path: str | Path, what: str) -> Path:
    p = Path(path)
    if not (p / "config.json").is_file():
        raise FileNotFoundError(f"{what}: {p} is not a local Hugging Face model directory (no config.json)")
    return p


def _check_shape(p: Path, fields: dict[str, tuple[int, int]]) -> None:
    """The config describes the architecture: its fields must match the pretrained model's."""
    bad = {k: v for k, v in fields.items() if v[0] != v[1]}
    if bad:
        raise ValueError(f"{p}: config field(s) disagree with the model (config vs model): {bad}")


def _mlp_width(cfg: ViTConfig | AudioEncoderConfig) -> int:
    """The MLP's hidden width, as the built-in encoders round it."""
    return int(round(cfg.width * cfg.mlp_ratio))


def _freeze(module: nn.Module) -> nn.Module:
    for q in module.parameters():
        q.requires_grad_(False)
    return module.eval()


class SiglipTower(nn.Module):
    """SigLIP vision tower -> (B, G*G, W) patch tokens (SigLIP has no class token).

    From `cfg.path` (a local directory, frozen), or, with `cfg.path` unset, built from the config's shapes with
    random weights (`random_tower_config`): the cost of the graph without pretrained weights (`emo-edge init
    --random-weights`), or the skeleton a checkpoint's saved weights are loaded into.
    """

    def __init__(self, cfg: ViTConfig, image_size: int):
        super().__init__()
        from transformers import SiglipVisionConfig, SiglipVisionModel

        if cfg.path is None:
            config = SiglipVisionConfig(hidden_size=cfg.width, num_hidden_layers=cfg.depth,
                                        num_attention_heads=cfg.heads, intermediate_size=_mlp_width(cfg),
                                        image_size=image_size, patch_size=cfg.patch,
                                        vision_use_head=False)  # the pooling head: we take the patch tokens
            model, (mean, std) = SiglipVisionModel(config), ([0.5] * 3, [0.5] * 3)
        else:
            p = _model_dir(cfg.path, "vision encoder path")
            config = SiglipVisionConfig.from_pretrained(str(p))
            _check_shape(p, {"patch": (cfg.patch, config.patch_size), "width": (cfg.width, config.hidden_size)})
            model, (mean, std) = SiglipVisionModel.from_pretrained(str(p), local_files_only=True), _pixel_stats(p)
        self.model = _freeze(model)
        self.width, self.grid = config.hidden_size, image_size // config.patch_size
        self.native = image_size == config.image_size  # else the position embeddings are interpolated
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> SiglipTower:
        super().train(mode)
        self.model.eval()  # frozen: no dropout whatever the surrounding mode
        return self

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:  # (B, 3, S, S) in [0, 1]
        x = (pixels - self.mean) / self.std
        return self.model(pixel_values=x, interpolate_pos_encoding=not self.native).last_hidden_state  # (B, G*G, W)


def _pixel_stats(p: Path) -> tuple[list[float], list[float]]:
    """The processor's normalisation (preprocessor_config.json), SigLIP's 0.5/0.5 when there is none."""
    cfg = p / "preprocessor_config.json"
    if cfg.is_file():
        d = json.loads(cfg.read_text())
        if "image_mean" in d and "image_std" in d:
            return [float(v) for v in d["image_mean"]], [float(v) for v in d["image_std"]]
    return [0.5] * 3, [0.5] * 3


class WhisperAudioEncoder(nn.Module):
    """Whisper's encoder; takes our scaled log-mel (B, n_mels, F) -> (B, Na, W).

    From `cfg.path` (a local directory, frozen), or, with `cfg.path` unset, built from the config's shapes with
    random weights (see `SiglipTower`). Whisper wants exactly 2 * max_source_positions mel frames (3000 = 30 s
    for the released models); our frontend gives one more (a centred STFT), which is dropped. With
    `cfg.cut_to_window` the positional table is cut to the window's positions (its first rows: the positions
    of the window's mel frames are the same as those of a 30 s input's start), so the encoder costs the window.
    """

    def __init__(self, cfg: AudioEncoderConfig, n_mels: int, n_mel_frames: int):
        super().__init__()
        from transformers import WhisperConfig, WhisperModel
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        window = n_mel_frames // WHISPER_MEL_STRIDE  # positions the window fills
        if cfg.path is None:
            where = "audio_encoder (arch whisper, random weights)"
            config = WhisperConfig(num_mel_bins=n_mels, d_model=cfg.width, encoder_layers=cfg.depth,
                                   encoder_attention_heads=cfg.heads, encoder_ffn_dim=_mlp_width(cfg),
                                   max_source_positions=window if cfg.cut_to_window else 1500)
            encoder = WhisperEncoder(config)
        else:
            p = _model_dir(cfg.path, "audio_encoder.path")
            where = f"audio_encoder.path {p}"
            config = WhisperConfig.from_pretrained(str(p))
            _check_shape(p, {"width": (cfg.width, config.d_model)})
            encoder = WhisperModel.from_pretrained(str(p), local_files_only=True).get_encoder()
            if cfg.cut_to_window:
                encoder = _cut_positions(encoder, window, where)
        positions = encoder.config.max_source_positions
        self.n_frames = WHISPER_MEL_STRIDE * positions
        if encoder.config.num_mel_bins != n_mels:
            raise ValueError(f"{where}: the model takes {encoder.config.num_mel_bins} mel bins, frontend.n_mels is "
                             f"{n_mels}")
        if n_mel_frames not in (self.n_frames, self.n_frames + 1):
            raise ValueError(f"{where}: the model takes {self.n_frames} mel frames, the frontend gives "
                             f"{n_mel_frames}; set frontend.window_seconds to {self.n_frames * 0.01:g} (at a 10 ms "
                             "hop), or audio_encoder.cut_to_window: true")
        self.encoder = _freeze(encoder)
        self.width, self.n_tokens = config.d_model, positions

    def train(self, mode: bool = True) -> WhisperAudioEncoder:
        super().train(mode)
        self.encoder.eval()
        return self

    def forward(self, mel: torch.Tensor) -> torch.Tensor:  # (B, n_mels, F)
        return self.encoder(input_features=mel[..., : self.n_frames]).last_hidden_state  # (B, Na, W)


def _cut_positions(encoder: nn.Module, n: int, where: str) -> nn.Module:
    """The encoder with its positional table cut to its first `n` rows (and the config's input length with it)."""
    table = encoder.embed_positions.weight
    if n > table.shape[0]:
        raise ValueError(f"{where}: the window needs {n} positions, the model has {table.shape[0]}")
    encoder.config.max_source_positions = encoder.max_source_positions = n
    cut = nn.Embedding(n, table.shape[1])
    cut.weight.data.copy_(table.data[:n])
    encoder.embed_positions = cut
    return encoder
