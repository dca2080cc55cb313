"""Feature arrays (numpy, from `emo_edge.data.features`) -> a model `Batch` (torch)."""

from __future__ import annotations

import numpy as np
import torch

from emo_edge.model.mllm import Batch
from emo_edge.prompts import suffix


def to_batch(
    frames: np.ndarray, image: np.ndarray, mel: np.ndarray, video_on: np.ndarray, audio_on: np.ndarray,
    tasks: list[str], subtitles: list[str | None], answers: list[str] | None = None,
    image_on: np.ndarray | None = None,
) -> Batch:
    """Arrays for B clips -> Batch. A switched-off modality is zeroed and flagged absent.

    `video_on` switches the temporal frames and, unless `image_on` is given, the peak frame with
    them (training drops the visual input as a whole); `image_on` switches the peak frame apart.
    """
    v = torch.from_numpy(np.asarray(video_on, dtype=np.float32))  # (B,)
    a = torch.from_numpy(np.asarray(audio_on, dtype=np.float32))
    i = v if image_on is None else torch.from_numpy(np.asarray(image_on, dtype=np.float32))
    img = torch.from_numpy(np.ascontiguousarray(image)).permute(0, 3, 1, 2).float() / 255.0  # (B, 3, S, S)
    frm = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 1, 4, 2, 3).float() / 255.0  # (B, T, 3, s, s)
    mel_t = torch.from_numpy(np.asarray(mel, dtype=np.float32))  # (B, n_mels, F)
    return Batch(
        image=img * i[:, None, None, None],
        frames=frm * v[:, None, None, None, None],
        mel=mel_t * a[:, None, None],
        present=torch.stack([i, v, a], dim=1),
        suffixes=[suffix(t, s) for t, s in zip(tasks, subtitles, strict=True)],
        answers=answers,
    )
