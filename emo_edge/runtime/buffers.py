"""Timestamped ring buffers for live frames and audio on one clock (seconds, float). numpy + OpenCV only.

Both buffers are bounded: by a number of frames and by a span of seconds for video, by a fixed
number of samples for audio. Memory therefore stays flat however fast or long input arrives.
A stamp earlier than the previous one is refused with `StreamInputError("time_backwards")`.
"""

from __future__ import annotations

from collections import deque

import cv2
import numpy as np

AUDIO_GAP_S = 0.1  # s; a later chunk starting further than this after the buffered audio leaves a gap of silence
TIME_TOLERANCE_S = 1e-3  # s; stamps this much earlier than the last one still count as in order (rounding)


class StreamInputError(ValueError):
    """Live input that cannot be used; `kind` names the fault for counting and diagnostics."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def fit_side(frame: np.ndarray, max_side: int) -> np.ndarray:
    """The frame scaled down (aspect kept) so that its longer side is at most max_side px; small frames pass."""
    h, w = frame.shape[:2]
    if max(h, w) <= max_side:
        return frame
    scale = max_side / max(h, w)
    return cv2.resize(frame, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


class FrameRing:
    """The last `seconds` of frames (at most `max_frames`), each (H, W, 3) uint8 RGB with its capture time."""

    def __init__(self, seconds: float, max_frames: int):
        if seconds <= 0 or max_frames < 1:
            raise ValueError(f"FrameRing needs seconds > 0 and max_frames >= 1, got {seconds} and {max_frames}")
        self.seconds = seconds
        self._items: deque[tuple[float, np.ndarray]] = deque(maxlen=max_frames)

    def __len__(self) -> int:
        return len(self._items)

    @property
    def latest(self) -> float | None:
        return self._items[-1][0] if self._items else None

    def push(self, t: float, frame: np.ndarray) -> None:
        if self._items and t < self._items[-1][0] - TIME_TOLERANCE_S:
            raise StreamInputError("time_backwards", f"frame stamp {t:.3f} s is before the previous one "
                                                     f"({self._items[-1][0]:.3f} s); frame dropped")
        self._items.append((t, frame))
        while self._items and self._items[0][0] < t - self.seconds:
            self._items.popleft()

    def window(self, t0: float, t1: float) -> tuple[np.ndarray, list[np.ndarray]]:
        """Times (n,) and frames with t0 <= t <= t1, oldest first."""
        picked = [(t, f) for t, f in self._items if t0 <= t <= t1]
        return np.array([t for t, _ in picked], dtype=np.float64), [f for _, f in picked]

    def clear(self) -> None:
        self._items.clear()


def resample_frames(times: np.ndarray, frames: list[np.ndarray], t0: float, t1: float, fps: float) -> np.ndarray:
    """Frames on a uniform grid of `fps` over [t0, t1] (sample and hold: the latest frame at or before each
    grid time, the first frame before it arrives), stacked as (N, H, W, 3) uint8.

    The model was trained on clips at a constant frame rate; a burst, a drop or jitter in live input
    would otherwise skew the uniform-by-index sampling of the temporal view and the peak-frame choice.
    Frames of differing size (a camera that changed mode) are scaled to the last frame's size.
    """
    if not frames:
        raise ValueError("resample_frames needs at least one frame")
    n = max(1, int(round((t1 - t0) * fps)))
    grid = t0 + (np.arange(n) + 0.5) * (t1 - t0) / n
    idx = np.clip(np.searchsorted(times, grid, side="right") - 1, 0, len(frames) - 1)
    h, w = frames[-1].shape[:2]
    same = [f if f.shape[:2] == (h, w) else cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in frames]
    return np.stack([same[i] for i in idx])


class AudioRing:
    """The last `seconds` of mono float32 audio at `rate` Hz, placed on the clock by each chunk's start stamp.

    Chunks are appended back to back (small stamp jitter is absorbed); a chunk that starts more than
    AUDIO_GAP_S after the buffered audio ends (a microphone or publisher that paused) is preceded by
    silence for the gap, capped at the buffer size. `written` counts every sample ever appended, so
    readers (the VAD) can follow the stream by absolute sample index.
    """

    def __init__(self, rate: int, seconds: float):
        if rate <= 0 or seconds <= 0:
            raise ValueError(f"AudioRing needs rate > 0 and seconds > 0, got {rate} and {seconds}")
        self.rate = rate
        self.capacity = int(round(rate * seconds))
        self._buf = np.zeros(self.capacity, np.float32)
        self.written = 0  # samples appended since the start (absolute index of the next sample)
        self.t_end: float | None = None  # clock time just after the last sample
        self._last_stamp: float | None = None
        self.gaps = 0  # gaps filled with silence (chunks that never arrived, or a paused source)
        self.gap_samples = 0  # samples missing across those gaps (each fill itself is capped at the buffer)

    def push(self, t: float, samples: np.ndarray) -> None:
        """Append a chunk whose first sample was captured at clock time t."""
        if self._last_stamp is not None and t < self._last_stamp - TIME_TOLERANCE_S:
            raise StreamInputError("time_backwards", f"audio stamp {t:.3f} s is before the previous one "
                                                     f"({self._last_stamp:.3f} s); chunk dropped")
        if self.t_end is not None and t - self.t_end > AUDIO_GAP_S:
            fill = int(round((t - self.t_end) * self.rate))
            self.gaps += 1
            self.gap_samples += fill
            self._append(np.zeros(min(fill, self.capacity), np.float32))
        self._append(np.asarray(samples, dtype=np.float32))
        self._last_stamp, self.t_end = t, t + len(samples) / self.rate

    def _append(self, x: np.ndarray) -> None:
        x = x[-self.capacity:]
        start = self.written % self.capacity
        first = min(len(x), self.capacity - start)
        self._buf[start:start + first] = x[:first]
        self._buf[:len(x) - first] = x[first:]
        self.written += len(x)

    def index_at(self, t: float) -> int:
        """Absolute sample index captured at clock time t (may lie outside what is buffered)."""
        assert self.t_end is not None, "index_at on an empty AudioRing"
        return self.written - int(round((self.t_end - t) * self.rate))

    def read(self, start: int, stop: int) -> np.ndarray:
        """Samples [start, stop) by absolute index; zeros where they are not (or no longer) buffered."""
        out = np.zeros(max(0, stop - start), np.float32)
        lo, hi = max(start, self.written - self.capacity, 0), min(stop, self.written)
        if hi > lo:
            idx = np.arange(lo, hi) % self.capacity
            out[lo - start:hi - start] = self._buf[idx]
        return out

    def window(self, t0: float, n_samples: int) -> np.ndarray:
        """n_samples from clock time t0 on (zeros outside the buffered span)."""
        start = self.index_at(t0)
        return self.read(start, start + n_samples)
