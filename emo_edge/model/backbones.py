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


def _freeze(module: nn.Module) -> nn.Module:
    for q in module.parameters():
        q.requires_grad_(False)
    return module.eval()


class SiglipTower(nn.Module):
    """SigLIP vision tower from a local directory -> (B, G*G, W) patch tokens (SigLIP has no class token)."""

    def __init__(self, path: str | Path, image_size: int, patch: int, width: int):
        super().__init__()
        from transformers import SiglipVisionConfig, SiglipVisionModel

        p = _model_dir(path, "vision encoder path")
        config = SiglipVisionConfig.from_pretrained(str(p))
        _check_shape(p, {"patch": (patch, config.patch_size), "width": (width, config.hidden_size)})
        self.model = _freeze(SiglipVisionModel.from_pretrained(str(p), local_files_only=True))
        self.width, self.grid = config.hidden_size, image_size // config.patch_size
        self.native = image_size == config.image_size  # else the position embeddings are interpolated
        mean, std = _pixel_stats(p)
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
    """Whisper's encoder from a local directory; takes our scaled log-mel (B, n_mels, F) -> (B, Na, W).

    Whisper wants exactly 2 * max_source_positions mel frames (3000 = 30 s for the released models);
    our frontend gives one more (a centred STFT), which is dropped.
    """

    def __init__(self, path: str | Path, width: int, n_mels: int, n_mel_frames: int):
        super().__init__()
        from transformers import WhisperConfig, WhisperModel

        p = _model_dir(path, "audio_encoder.path")
        config = WhisperConfig.from_pretrained(str(p))
        _check_shape(p, {"width": (width, config.d_model)})
        self.n_frames = WHISPER_MEL_STRIDE * config.max_source_positions
        if config.num_mel_bins != n_mels:
            raise ValueError(f"audio_encoder.path {p}: the model takes {config.num_mel_bins} mel bins, "
                             f"frontend.n_mels is {n_mels}")
        if n_mel_frames not in (self.n_frames, self.n_frames + 1):
            raise ValueError(f"audio_encoder.path {p}: the model takes {self.n_frames} mel frames, the frontend "
                             f"gives {n_mel_frames}; set frontend.window_seconds to "
                             f"{self.n_frames * 0.01:g} (at a 10 ms hop)")
        self.encoder = _freeze(WhisperModel.from_pretrained(str(p), local_files_only=True).get_encoder())
        self.width, self.n_tokens = config.d_model, config.max_source_positions

    def train(self, mode: bool = True) -> WhisperAudioEncoder:
        super().train(mode)
        self.encoder.eval()
        return self

    def forward(self, mel: torch.Tensor) -> torch.Tensor:  # (B, n_mels, F)
        return self.encoder(input_features=mel[..., : self.n_frames]).last_hidden_state  # (B, Na, W)
