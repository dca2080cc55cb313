"""Where the benchmark's input windows come from: recorded clips in a unified-format split, as `Window`s (what
the runtime sees at one update). A ROS 2 bag (MCAP) is not cut into windows: `emo_edge.bench.replay` plays it
through the node at real rate instead."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from emo_edge.config import FrontendConfig


@dataclass
class Window:
    """One update's input: `window_seconds` of camera frames at `fps` and the microphone's samples."""

    id: str
    frames: np.ndarray  # (N, H, W, 3) uint8 RGB, N = fps * window_seconds
    wave: np.ndarray  # (n_samples,) float32 at the frontend's sample rate
    subtitle: str | None
    label: str
    fps: float


class WindowSource(Protocol):
    def windows(self, n: int) -> list[Window]: ...


def resample_frames(frames: np.ndarray, src_fps: float, fps: float, seconds: float) -> np.ndarray:
    """`seconds` of frames at `fps` from a clip at `src_fps` (nearest earlier frame; the last one held)."""
    n = int(round(fps * seconds))
    idx = np.minimum((np.arange(n) / fps * src_fps).astype(np.int64), len(frames) - 1)
    return frames[idx]


class DataDirSource:
    """Clips of a unified-format split (e.g. SynthEmo's test split), in file order, as camera-rate windows."""

    def __init__(self, data: str | Path, fe: FrontendConfig, fps: float = 30.0, split: str = "test"):
        from emo_edge.data.schema import find_split

        self.jsonl, self.fe, self.fps = find_split(data, split), fe, fps

    def windows(self, n: int) -> list[Window]:
        from emo_edge.audio import fit_length, load_wav
        from emo_edge.data.schema import read_jsonl
        from emo_edge.vision import read_video

        out = []
        for r in read_jsonl(self.jsonl)[:n]:
            video, audio = r.media_path(self.jsonl.parent, "video"), r.media_path(self.jsonl.parent, "audio")
            if video is None or audio is None:
                raise ValueError(f"clip {r.id}: the benchmark needs both a video and an audio file")
            frames, src_fps = read_video(video)
            wave = fit_length(load_wav(audio, self.fe.sample_rate), self.fe.n_samples)
            frames = resample_frames(frames, src_fps or self.fps, self.fps, self.fe.window_seconds)
            out.append(Window(r.id, frames, wave.astype(np.float32), r.subtitle, r.label, self.fps))
        if not out:
            raise ValueError(f"{self.jsonl}: no clips")
        return out
