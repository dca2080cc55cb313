"""Training-time augmentation of the visual views (numpy + OpenCV, uint8 in and out).

One random similarity transform (shift, scale, small rotation, horizontal flip) and one
brightness/contrast change per clip, applied identically to the peak frame and to every frame
of the temporal view, so the two views stay consistent. Expressions are left-right symmetric,
so a flip keeps the label.
"""

from __future__ import annotations

import cv2
import numpy as np


def _warp(img: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Apply `m`, whose translation is in units of the side (pixel centres span 0 .. s-1)."""
    s = img.shape[0]
    return cv2.warpAffine(img, m * np.array([[1, 1, s - 1], [1, 1, s - 1]], np.float32), (s, s),
                          flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def augment_views(
    frames: np.ndarray, image: np.ndarray, rng: np.random.Generator,
    shift: float = 0.08, scale: float = 0.1, degrees: float = 4.0, jitter: float = 0.2,
) -> tuple[np.ndarray, np.ndarray]:
    """frames (B, T, s, s, 3) and image (B, S, S, 3), uint8 -> augmented copies of both."""
    frames_out, image_out = np.empty_like(frames), np.empty_like(image)
    for i in range(len(image)):
        zoom = rng.uniform(1 - scale, 1 + scale)
        m = cv2.getRotationMatrix2D((0.5, 0.5), rng.uniform(-degrees, degrees), zoom).astype(np.float32)
        m[:, 2] += rng.uniform(-shift, shift, 2)  # translation as a fraction of the side
        if rng.random() < 0.5:  # mirror about the vertical centre line
            m[:, 0] *= -1
            m[:, 2] += m[:, 0] * -1.0
        gain, bias = rng.uniform(1 - jitter, 1 + jitter), rng.uniform(-jitter, jitter) * 64
        lut = np.clip(np.arange(256) * gain + bias, 0, 255).astype(np.uint8)
        image_out[i] = cv2.LUT(_warp(image[i], m), lut)
        for t in range(frames.shape[1]):
            frames_out[i, t] = cv2.LUT(_warp(frames[i, t], m), lut)
    return frames_out, image_out


def shift_audio(mel: np.ndarray, rng: np.random.Generator, max_frames: int = 25) -> np.ndarray:
    """mel (B, n_mels, F): shift each clip in time by up to +-max_frames, filling with its own floor.

    The live runtime's voice-activity onset moves by a few frames from run to run; this keeps the
    model from depending on where exactly speech starts in its window.
    """
    out = np.empty_like(mel)
    for i in range(len(mel)):
        k = int(rng.integers(-max_frames, max_frames + 1))
        out[i] = mel[i].min()
        if k >= 0:
            out[i, :, k:] = mel[i, :, : mel.shape[2] - k]
        else:
            out[i, :, :k] = mel[i, :, -k:]
    return out
