"""`emo-edge run`: a bundle on live input (camera + microphone) or a recorded file played at its real rate,
states and the reasoning stream printed and optionally written as JSON lines."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

from emo_edge.runtime.buffers import StreamInputError
from emo_edge.runtime.capture import CameraSource, FilePlayer, MicSource
from emo_edge.runtime.stream import EmotionUpdate, ReasoningUpdate, StreamConfig, StreamRuntime

FLUSH_S = 1.5  # s to keep running after a file ends, so its last utterance is closed by the VAD


def audio_track(path: Path, rate: int) -> np.ndarray | None:
    """The audio of a media file as mono float32 at `rate` via ffmpeg; None without ffmpeg or an audio track."""
    if shutil.which("ffmpeg") is None:
        return None
    res = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-vn", "-ac", "1", "-ar", str(rate), "-f", "f32le",
                          "-"], capture_output=True, timeout=120)
    if res.returncode != 0 or not res.stdout:
        return None
    return np.frombuffer(res.stdout, np.float32).copy()


class JsonlSink:
    """Writes each update as one JSON line ({"type": "state"|"reasoning", ...}); thread-safe."""

    def __init__(self, out: IO[str] | None):
        self.out, self._lock = out, threading.Lock()

    def write(self, kind: str, payload: dict[str, Any]) -> None:
        if self.out is not None:
            with self._lock:
                self.out.write(json.dumps({"type": kind, **payload}) + "\n")
                self.out.flush()


def _guard(push: Callable[[float, np.ndarray], None], say: Callable[[str], None]) -> Callable[[float, np.ndarray],
                                                                                                 None]:
    """A source callback that reports refused input (at most once a second) instead of raising."""
    last = [0.0]

    def call(t: float, x: np.ndarray) -> None:
        try:
            push(t, x)
        except StreamInputError as e:
            if time.monotonic() - last[0] > 1.0:
                last[0] = time.monotonic()
                say(f"input refused ({e.kind}): {e}")
    return call


def read_transcript(path: Path) -> list[tuple[float, str]]:
    """A timed transcript: one 'SECONDS TEXT' line per recognised phrase, seconds from the start of the input
    (blank lines and '#' comments skipped); ValueError naming the line otherwise."""
    out = []
    for i, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        t, _, text = line.strip().partition(" ")
        try:
            out.append((float(t), text.strip()))
        except ValueError:
            raise ValueError(f"{path}:{i}: expected 'SECONDS TEXT', got {line!r}") from None
    return sorted(out)


class TranscriptFeeder(threading.Thread):
    """Pushes each (seconds, text) into the stream when its time (from `start`, on the stream clock) comes."""

    def __init__(self, stream: StreamRuntime, lines: list[tuple[float, str]], start: float):
        super().__init__(name="emo-edge-transcript", daemon=True)
        self.stream, self.lines, self.start_t = stream, lines, start
        self._stop_event = threading.Event()

    def run(self) -> None:
        for s, text in self.lines:
            if self._stop_event.wait(max(0.0, self.start_t + s - self.stream.clock())):
                return
            self.stream.push_transcript(self.start_t + s, text)

    def stop(self) -> None:
        self._stop_event.set()


def run_live(runtime: Any, frontend: Any, config: StreamConfig, video: Path | None = None, audio: Path | None = None,
             camera: str | None = None, mic: str | None = None, seconds: float | None = None,
             on_state: Callable[[EmotionUpdate], None] | None = None,
             on_reasoning: Callable[[ReasoningUpdate], None] | None = None,
             say: Callable[[str], None] = print, transcript: list[tuple[float, str]] | None = None) -> dict[str, Any]:
    """Feed a StreamRuntime from a file (played once at real rate) or from a camera and/or microphone until
    `seconds` pass (live) or the file ends, with an optional timed transcript for the text modality; returns
    the runtime's final statistics."""
    stream = StreamRuntime(runtime, frontend, config, on_state=on_state, on_reasoning=on_reasoning,
                           on_error=lambda kind, e: say(f"{kind} failed: {type(e).__name__}: {e}"))
    push_frame = _guard(stream.push_frame, say)
    push_audio = _guard(lambda t, x: stream.push_audio(t, x, stream.fe.sample_rate), say)
    sources = _sources(video, audio, camera, mic, stream.fe.sample_rate, push_frame, push_audio, say)
    stream.start()
    feeder = TranscriptFeeder(stream, transcript or [], stream.clock())
    for s in [*sources, feeder]:
        s.start()
    t0 = time.monotonic()
    try:
        while seconds is None or time.monotonic() - t0 < seconds:
            if video is not None and all(s.finished.is_set() for s in sources):
                time.sleep(FLUSH_S)
                break
            time.sleep(0.05)
    except KeyboardInterrupt:
        say("interrupted")
    finally:
        for s in [*sources, feeder]:
            s.stop()
        if stream.slow is not None:
            stream.slow.wait_idle(60.0)
        stats = stream.stats()
        stats["sources"] = {s.name: {**dict(s.counts), "last_error": s.last_error} for s in sources}
        stream.stop()
    return stats


def _sources(video: Path | None, audio: Path | None, camera: str | None, mic: str | None, rate: int,
             push_frame: Callable, push_audio: Callable, say: Callable[[str], None]) -> list[Any]:
    if (video is None) == (camera is None and mic is None):
        raise ValueError("give either --video FILE, or --camera SRC and/or --mic DEVICE")
    if video is not None:
        from emo_edge.audio import load_wav
        from emo_edge.vision import read_video

        frames, fps = read_video(video)
        wave = load_wav(audio, rate) if audio is not None else audio_track(video, rate)
        if wave is None:
            say(f"{video}: no audio track found (give --audio WAV); running on video only")
        return [FilePlayer(frames, fps or 30.0, wave, rate, push_frame, push_audio if wave is not None else None)]
    out: list[Any] = []
    if camera is not None:
        out.append(CameraSource(camera, push_frame))
    if mic is not None:
        out.append(MicSource(None if mic == "default" else mic, push_audio, rate))
    return out
