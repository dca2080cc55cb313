"""Video frontend: decoded frames -> the temporal view (T small frames) and the spatial view (the
peak frame at higher resolution). numpy + OpenCV only (the runtime uses it).

The peak frame is chosen without a face detector: in coarse grey-level thumbnails, the frame that
departs most from the straight line between the window's first and last frames. Slow global
change (camera drift, lighting, a head turning steadily) follows that line and scores low; an
expression that rises and falls again inside the window does not, and peaks at its apex.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

THUMB = 32  # px, side of the grey thumbnail used to score frame change


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


def peak_index(frames: np.ndarray) -> int:
    return int(np.argmax(change_scores(frames)))


def resize_square(frame: np.ndarray, size: int) -> np.ndarray:
    interp = cv2.INTER_AREA if min(frame.shape[:2]) > size else cv2.INTER_LINEAR
    return cv2.resize(frame, (size, size), interpolation=interp)


def video_views(frames: np.ndarray, n_frames: int, frame_size: int, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(T, frame_size, frame_size, 3) uint8 temporal view and (image_size, image_size, 3) uint8 peak frame."""
    frames = check_frames(frames)
    temporal = np.stack([resize_square(frames[i], frame_size) for i in sample_indices(len(frames), n_frames)])
    peak = resize_square(frames[peak_index(frames)], image_size)
    return temporal, peak
