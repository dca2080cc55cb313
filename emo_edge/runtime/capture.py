"""Live capture onto one clock: OpenCV `VideoCapture` (device index, file or stream URL) and sounddevice
(PortAudio) microphones, each in its own thread, reconnecting when the device or stream is lost; and a
file player that feeds a recorded clip at its real rate.

Every source stamps what it hands out with `clock()` (default time.monotonic): a frame at the moment
it was read, an audio block at the capture time of its first sample (arrival minus the block length
and the input latency PortAudio reports).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from emo_edge.audio import SAMPLE_RATE

try:  # optional: only the microphone source needs it
    import sounddevice as _sd
except (ImportError, OSError) as e:  # OSError: the wheel is there but PortAudio is not
    _sd, _SD_ERROR = None, e

FrameSink = Callable[[float, np.ndarray], None]  # (capture time s, (H, W, 3) uint8 RGB)
AudioSink = Callable[[float, np.ndarray], None]  # (time of the first sample s, (n,) float32 at the stream rate)
BLOCK_S = 0.02  # s per microphone block


def video_source(src: str | int) -> str | int:
    """A camera index given as text ("0") becomes an int, as VideoCapture wants; paths and URLs stay text."""
    return int(src) if isinstance(src, str) and src.strip().isdigit() else src


class _Worker:
    """A daemon thread with a stop flag, reconnect counting and the last error."""

    name = "source"

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.counts: Counter[str] = Counter()
        self.last_error: str | None = None
        self.finished = threading.Event()  # set when a finite source (a file) has ended

    def start(self) -> _Worker:
        self._thread = threading.Thread(target=self._guarded, name=f"emo-edge-{self.name}", daemon=True)
        self._thread.start()
        return self

    def _guarded(self) -> None:
        try:
            self._run()
        finally:
            self.finished.set()

    def _run(self) -> None:
        raise NotImplementedError

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)


class CameraSource(_Worker):
    """Frames from OpenCV's VideoCapture. A device or stream that fails to open or stops delivering is
    reopened every `reconnect_s` (counted); a file plays once at its own frame rate, then `finished` is set."""

    name = "camera"

    def __init__(self, src: str | int, on_frame: FrameSink, clock: Callable[[], float] = time.monotonic,
                 reconnect_s: float = 1.0, read_timeout_s: float = 2.0):
        super().__init__()
        self.src, self.on_frame, self.clock = video_source(src), on_frame, clock
        self.reconnect_s, self.read_timeout_s = reconnect_s, read_timeout_s
        self.is_file = isinstance(self.src, str) and Path(self.src).is_file()

    def _open(self) -> cv2.VideoCapture | None:
        if isinstance(self.src, str) and not self.is_file:  # a stream URL: bounded waits, or a lost stream hangs
            ms = int(self.read_timeout_s * 1000)
            cap = cv2.VideoCapture(self.src, cv2.CAP_FFMPEG, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 2 * ms,
                                                              cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms])
        else:
            cap = cv2.VideoCapture(self.src)
        if cap.isOpened():
            self.counts["opened"] += 1
            return cap
        cap.release()
        self.counts["open_failed"] += 1
        self.last_error = f"cannot open video source {self.src!r}"
        return None

    def _run(self) -> None:
        while not self._stop.is_set():
            cap = self._open()
            if cap is None:
                self._stop.wait(self.reconnect_s)
                continue
            try:
                self._read(cap)
            finally:
                cap.release()
            if self.is_file:
                return
            self.counts["reconnects"] += 1
            self._stop.wait(self.reconnect_s)

    def _read(self, cap: cv2.VideoCapture) -> None:
        period = 1.0 / (cap.get(cv2.CAP_PROP_FPS) or 30.0) if self.is_file else 0.0
        next_t, last_ok = self.clock(), self.clock()
        while not self._stop.is_set():
            ok, frame = cap.read()
            now = self.clock()
            if not ok:
                if self.is_file or now - last_ok > self.read_timeout_s:
                    self.last_error = None if self.is_file else f"video source {self.src!r} stopped delivering"
                    return
                self._stop.wait(0.01)
                continue
            last_ok = now
            self.counts["frames"] += 1
            self.on_frame(now, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
            if period:  # a file: at its own rate, as a camera would deliver it
                next_t += period
                self._stop.wait(max(0.0, next_t - self.clock()))


def require_sounddevice() -> object:
    if _sd is None:
        raise ImportError("sounddevice (and the PortAudio library) is needed for a microphone: "
                          "pip install sounddevice; apt-get install libportaudio2") from _SD_ERROR
    return _sd


class MicSource(_Worker):
    """Mono float32 blocks from a PortAudio input device (name, index or None for the default) at `rate` Hz.
    A stream that fails or reports an error is closed and reopened every `reconnect_s` (counted)."""

    name = "mic"

    def __init__(self, device: str | int | None, on_audio: AudioSink, rate: int = SAMPLE_RATE,
                 clock: Callable[[], float] = time.monotonic, reconnect_s: float = 1.0):
        super().__init__()
        self.sd = require_sounddevice()
        self.device = int(device) if isinstance(device, str) and device.isdigit() else device
        self.on_audio, self.rate, self.clock, self.reconnect_s = on_audio, rate, clock, reconnect_s
        self._broken = threading.Event()

    def _callback(self, indata: np.ndarray, frames: int, time_info: object, status: object) -> None:
        if status:
            self.counts[f"status_{status}"] += 1
        t = self.clock() - frames / self.rate - self._latency
        self.counts["blocks"] += 1
        try:
            self.on_audio(t, indata[:, 0].copy())
        except Exception as e:  # the sink refused the block (counted there); PortAudio's thread must live on
            self.last_error = f"{type(e).__name__}: {e}"

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with self.sd.InputStream(device=self.device, channels=1, samplerate=self.rate, dtype="float32",
                                         blocksize=int(self.rate * BLOCK_S), callback=self._callback,
                                         finished_callback=self._broken.set) as stream:
                    self._latency = float(stream.latency)
                    self.counts["opened"] += 1
                    while not self._stop.is_set() and stream.active and not self._broken.is_set():
                        self._stop.wait(0.1)
            except Exception as e:  # PortAudioError and friends: device gone or busy
                self.counts["open_failed"] += 1
                self.last_error = f"microphone {self.device!r}: {e}"
            if self._stop.is_set():
                return
            self._broken.clear()
            self.counts["reconnects"] += 1
            self._stop.wait(self.reconnect_s)

    _latency = 0.0


class FilePlayer(_Worker):
    """A recorded clip at its real rate: frames (N, H, W, 3) at `fps` and a mono wave at `rate`, both stamped
    on `clock` from one start time; `lead_s` / `tail_s` of silence with the first / last frame held either side
    (a person in view before and after speaking)."""

    name = "player"

    def __init__(self, frames: np.ndarray, fps: float, wave: np.ndarray | None, rate: int, on_frame: FrameSink,
                 on_audio: AudioSink | None, clock: Callable[[], float] = time.monotonic, lead_s: float = 0.5,
                 tail_s: float = 1.0, out_fps: float | None = None):
        super().__init__()
        self.frames, self.fps, self.wave, self.rate = frames, fps, wave, rate
        self.on_frame, self.on_audio, self.clock = on_frame, on_audio, clock
        self.lead_s, self.tail_s, self.out_fps = lead_s, tail_s, out_fps or fps

    def _run(self) -> None:
        clip_s = len(self.frames) / self.fps
        total = self.lead_s + clip_s + self.tail_s
        t0 = self.clock()
        block = int(self.rate * BLOCK_S)
        n_frames, n_blocks = int(total * self.out_fps), int(np.ceil(total / BLOCK_S))
        events = sorted([(i / self.out_fps, 0) for i in range(n_frames)] + [(k * BLOCK_S, 1) for k in range(n_blocks)])
        for rel, kind in events:
            if self._stop.wait(max(0.0, t0 + rel - self.clock())):
                return
            if kind == 0:
                j = min(max(int((rel - self.lead_s) * self.fps), 0), len(self.frames) - 1)
                self.on_frame(t0 + rel, self.frames[j])
                self.counts["frames"] += 1
            elif self.on_audio is not None:
                self.on_audio(t0 + rel, self._audio_block(rel, block))
                self.counts["blocks"] += 1

    def _audio_block(self, rel: float, n: int) -> np.ndarray:
        out = np.zeros(n, np.float32)
        if self.wave is None:
            return out
        start = int(round((rel - self.lead_s) * self.rate))
        lo, hi = max(start, 0), min(start + n, len(self.wave))
        if hi > lo:
            out[lo - start:hi - start] = self.wave[lo:hi]
        return out
