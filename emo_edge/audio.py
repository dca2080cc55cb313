"""Audio frontend: 16 kHz mono waveform -> log-mel spectrogram. numpy only (the runtime uses it).

Sizes follow the frontend config (defaults: 25 ms FFT window, 10 ms hop, 64 mel bands); the
scaling of the log-mel follows Whisper's: log10, floor at (max - 8), then (x + 4) / 4.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000  # Hz, the only rate the model accepts
LOG_FLOOR = 1e-10  # power floor before log10
DYNAMIC_RANGE = 8.0  # log10 units kept below the loudest bin


class AudioError(ValueError):
    """Audio that cannot be used: wrong rate, wrong shape, empty, unreadable."""


def load_wav(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Read a mono wav at `sample_rate` as float32 in [-1, 1]; AudioError naming what is wrong."""
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: audio file not found")
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, sf.LibsndfileError) as e:
        raise AudioError(f"{path}: unreadable audio ({e})") from e
    if rate != sample_rate:
        raise AudioError(f"{path}: sample rate is {rate} Hz, expected {sample_rate} Hz (resample it first)")
    if data.shape[1] != 1:
        data = data.mean(axis=1, keepdims=True)  # downmix: a stereo mic is still usable
    return check_waveform(data[:, 0], where=str(path))


def check_waveform(wave: np.ndarray, where: str = "audio") -> np.ndarray:
    wave = np.asarray(wave)
    if wave.ndim != 1:
        raise AudioError(f"{where}: expected a mono waveform (1-D), got shape {wave.shape}")
    if wave.size == 0:
        raise AudioError(f"{where}: the audio is empty")
    if not np.issubdtype(wave.dtype, np.floating):
        raise AudioError(f"{where}: expected float samples in [-1, 1], got dtype {wave.dtype}")
    if not np.all(np.isfinite(wave)):
        raise AudioError(f"{where}: the audio contains NaN or infinite samples")
    return wave.astype(np.float32, copy=False)


def fit_length(wave: np.ndarray, n_samples: int) -> np.ndarray:
    """Crop (keep the start) or zero-pad to exactly n_samples."""
    if wave.shape[-1] >= n_samples:
        return wave[..., :n_samples]
    pad = [(0, 0)] * (wave.ndim - 1) + [(0, n_samples - wave.shape[-1])]
    return np.pad(wave, pad)


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + np.asarray(hz, dtype=np.float64) / 700.0)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


@lru_cache(maxsize=8)
def mel_filters(n_mels: int, n_fft: int, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """(n_mels, n_fft // 2 + 1) triangular filters on the HTK mel scale, area-normalised."""
    n_bins = n_fft // 2 + 1
    fft_hz = np.linspace(0.0, sample_rate / 2, n_bins)
    edges_hz = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sample_rate / 2), n_mels + 2))
    lower, center, upper = edges_hz[:-2, None], edges_hz[1:-1, None], edges_hz[2:, None]
    rising = (fft_hz[None] - lower) / (center - lower)
    falling = (upper - fft_hz[None]) / (upper - center)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (upper - lower))  # equal area per band
    return weights.astype(np.float32)


def log_mel(wave: np.ndarray, n_mels: int, n_fft: int, hop_length: int, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """(n_mels, 1 + len(wave) // hop_length) scaled log-mel of a float waveform (Hann window, centred)."""
    wave = check_waveform(wave)
    padded = np.pad(wave, (n_fft // 2, n_fft // 2), mode="reflect" if wave.size > n_fft // 2 else "constant")
    n_frames = 1 + wave.size // hop_length
    idx = np.arange(n_fft)[None, :] + hop_length * np.arange(n_frames)[:, None]
    frames = padded[np.minimum(idx, padded.size - 1)] * np.hanning(n_fft + 1)[:-1].astype(np.float32)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2  # (n_frames, n_fft // 2 + 1)
    mel = mel_filters(n_mels, n_fft, sample_rate) @ power.T.astype(np.float32)  # (n_mels, n_frames)
    logspec = np.log10(np.maximum(mel, LOG_FLOOR))
    logspec = np.maximum(logspec, logspec.max() - DYNAMIC_RANGE)
    return ((logspec + 4.0) / 4.0).astype(np.float32)
