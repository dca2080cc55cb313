"""Video frontend: decoded frames -> the temporal view (T small frames) and the spatial view (the
peak frame at higher resolution). numpy + OpenCV only (the runtime uses it).

The peak frame is chosen without a face detector: in coarse grey-level thumbnails, the frame that
departs most from the straight line between the window's first and last frames. Slow global
change (camera drift, lighting, a head turning steadily) follows that line and scores low; an
expression that rises and falls again inside the window does not, and peaks at its apex.

A blink is such a departure too, and a short one: with `peak="max_change"` (the first selector) the peak frame of
SynthEmo v2 clips with frequent blinking had the eyes shut in 65 of 120, hiding the gaze and the eyes' part of the
expression. `peak="sustained"` scores each frame by the median change over the PEAK_SPAN frames around it, so a
change lasting fewer frames than half the span (a blink: 2-3 frames) can neither raise nor lower it, and returns,
inside the best span, the frame whose change is nearest that median: the eyes were shut in 4 of the same 120.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from emo_edge.config import PEAK_METHODS

THUMB = 32  # px, side of the grey thumbnail used to score frame change
PEAK_SPAN = 5  # frames: the "sustained" score's window, longer than a blink (2-3 frames at 15 fps)


class VideoError(ValueError):
    """Video that cannot be used: missing, unreadable, empty or wrongly shaped."""


def read_video(path: str | Path, max_frames: int = 10_000) -> tuple[np.ndarray, float]:
    """All frames of a video file as (N, H, W, 3) uint8 RGB, and its frame rate."""
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path}: video file not found")
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise VideoError(f"{path}: cannot open video (not a video file, or an unsupported codec)")
        fps = float(cap.get(cv2.CAP_PROP_FPS)) or 0.0
        frames = []
        while len(frames) < max_frames:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    finally:
        cap.release()
    if not frames:
        raise VideoError(f"{path}: no decodable frames (empty or corrupt video)")
    return np.stack(frames), fps


def check_frames(frames: np.ndarray, where: str = "video") -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise VideoError(f"{where}: expected frames shaped (N, H, W, 3), got {frames.shape}")
    if frames.shape[0] == 0:
        raise VideoError(f"{where}: no frames")
    if frames.dtype != np.uint8:
        raise VideoError(f"{where}: expected uint8 RGB frames, got dtype {frames.dtype}")
    return frames


def sample_indices(n_total: int, n_frames: int) -> np.ndarray:
    """n_frames indices spread uniformly over n_total frames (centres of equal segments)."""
    if n_total < 1:
        raise VideoError("cannot sample from an empty frame sequence")
    return np.minimum(((np.arange(n_frames) + 0.5) * n_total / n_frames).astype(np.int64), n_total - 1)


def change_scores(frames: np.ndarray) -> np.ndarray:
    """(N,) mean absolute grey-level departure of each thumbnail from the first-to-last linear trend."""
    thumbs = np.stack(
        [cv2.resize(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), (THUMB, THUMB), interpolation=cv2.INTER_AREA) for f in frames]
    ).astype(np.float32)  # (N, THUMB, THUMB)
    a = np.linspace(0.0, 1.0, len(thumbs), dtype=np.float32)[:, None, None]
    trend = (1.0 - a) * thumbs[:1] + a * thumbs[-1:]
    return np.abs(thumbs - trend).mean(axis=(1, 2))


def peak_index(frames: np.ndarray, method: str = "max_change") -> int:
    """The peak frame's index: the largest departure from the trend, or with "sustained" the frame nearest the
    median departure of the PEAK_SPAN-frame span whose median departure is largest (see the module's docstring)."""
    if method not in PEAK_METHODS:
        raise ValueError(f"unknown peak frame method {method!r}; expected one of {', '.join(PEAK_METHODS)}")
    scores = change_scores(frames)
    if method == "max_change":
        return int(np.argmax(scores))
    half = PEAK_SPAN // 2
    spans = [scores[max(0, i - half) : i + half + 1] for i in range(len(scores))]
    medians = np.array([np.median(span) for span in spans])
    best = int(np.argmax(medians))
    return max(0, best - half) + int(np.argmin(np.abs(spans[best] - medians[best])))


def resize_square(frame: np.ndarray, size: int) -> np.ndarray:
    interp = cv2.INTER_AREA if min(frame.shape[:2]) > size else cv2.INTER_LINEAR
    return cv2.resize(frame, (size, size), interpolation=interp)


def video_views(frames: np.ndarray, n_frames: int, frame_size: int, image_size: int,
                peak: str = "max_change") -> tuple[np.ndarray, np.ndarray]:
    """(T, frame_size, frame_size, 3) uint8 temporal view and (image_size, image_size, 3) uint8 peak frame (chosen
    by `peak_index` with method `peak`)."""
    frames = check_frames(frames)
    temporal = np.stack([resize_square(frames[i], frame_size) for i in sample_indices(len(frames), n_frames)])
    image = resize_square(frames[peak_index(frames, peak)], image_size)
    return temporal, image
