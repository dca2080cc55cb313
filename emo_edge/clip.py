"""A clip's media -> the model's arrays: the one frontend of training, evaluation and the runtime (numpy only).

    frames (N, H, W, 3) uint8 RGB -> temporal view (T, s, s, 3) uint8 and peak frame (S, S, 3) uint8
    wave (n,) float32 at fe.sample_rate -> padded/cut to fe.n_samples -> log-mel (n_mels, F) float32

The runtime's windows and the data loader's decoded files both go through `clip_from_media`, so a
model sees the same preprocessing live as in training. No torch here: the runtime imports it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from emo_edge.audio import fit_length, log_mel
from emo_edge.config import FrontendConfig
from emo_edge.vision import video_views


@dataclass
class Clip:
    frames: np.ndarray  # (T, s, s, 3) uint8 RGB: the temporal view
    image: np.ndarray  # (S, S, 3) uint8 RGB: the peak frame
    mel: np.ndarray  # (n_mels, F) float32 scaled log-mel


def clip_from_media(frames: np.ndarray, wave: np.ndarray, fe: FrontendConfig) -> Clip:
    temporal, peak = video_views(frames, fe.n_frames, fe.frame_size, fe.image_size, fe.peak_frame)
    mel = log_mel(fit_length(wave, fe.n_samples), fe.n_mels, fe.n_fft, fe.hop_length, fe.sample_rate)
    return Clip(temporal, peak, mel)
