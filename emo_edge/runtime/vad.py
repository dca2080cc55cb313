"""Voice-activity detection and utterance tracking for the live runtime (numpy only; webrtcvad optional).

`WebRtcVad` wraps the WebRTC VAD (PyPI `webrtcvad-wheels`: a small C extension, no model file, no
torch, builds on aarch64): a GMM over sub-band energies, robust to stationary noise. silero-vad was
the other candidate; its PyPI package imports torch (and pins torchaudio), which the torch-free
runtime must not load. `EnergyVad` is the dependency-free fallback: frame level against an
adaptive noise floor, weaker in noise but with no install at all.

`UtteranceTracker` turns per-frame speech flags into utterances: one starts after `start_s` of
continuous speech and ends after `hangover_s` of silence (or at `max_s`); its span runs from the
first to the last speech frame. With `early_s` (< hangover_s) it also ends one provisionally after
that shorter pause, so an answer can go out at once: if speech resumes before the hangover the
provisional end is withdrawn (same id) and the utterance goes on; otherwise the hangover makes it
final. People take turns within about 200 ms of the other's last word; the hangover alone makes a
listener half a second late.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from emo_edge.audio import SAMPLE_RATE

try:  # optional: the energy VAD needs nothing
    import webrtcvad as _webrtcvad
except ImportError:  # pragma: no cover - depends on the environment
    _webrtcvad = None

FRAME_MS = 30  # ms per VAD decision (webrtcvad accepts 10, 20 or 30)
VAD_KINDS = ("webrtc", "energy", "none")


class WebRtcVad:
    """WebRTC VAD over FRAME_MS frames; aggressiveness 0 (most speech kept) .. 3 (most non-speech cut)."""

    def __init__(self, rate: int = SAMPLE_RATE, aggressiveness: int = 1):
        if _webrtcvad is None:
            raise ImportError("webrtcvad is not installed: pip install webrtcvad-wheels (or use vad='energy')")
        if rate not in (8000, 16000, 32000, 48000):
            raise ValueError(f"webrtcvad needs 8, 16, 32 or 48 kHz, got {rate} Hz")
        if aggressiveness not in (0, 1, 2, 3):
            raise ValueError(f"vad aggressiveness must be 0, 1, 2 or 3, got {aggressiveness}")
        self.rate = rate
        self._vad = _webrtcvad.Vad(aggressiveness)

    def is_speech(self, frame: np.ndarray) -> bool:
        pcm = (np.clip(frame, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
        return bool(self._vad.is_speech(pcm, self.rate))


class EnergyVad:
    """Speech when a frame's level exceeds the tracked noise floor by `margin_db` (and `min_db` dBFS absolute)."""

    def __init__(self, margin_db: float = 12.0, min_db: float = -50.0, floor_rise_db: float = 0.05):
        self.margin_db, self.min_db, self.rise = margin_db, min_db, floor_rise_db
        self.floor_db: float | None = None

    def is_speech(self, frame: np.ndarray) -> bool:
        db = 10.0 * np.log10(float(np.mean(np.square(frame, dtype=np.float64))) + 1e-12)
        # the floor follows quiet frames at once and rises slowly through loud ones
        self.floor_db = db if self.floor_db is None else min(db, self.floor_db + self.rise)
        return db > max(self.floor_db + self.margin_db, self.min_db)


class NoVad:
    """Every frame is speech (utterances then end only at `max_s`); for inputs without a microphone."""

    def is_speech(self, frame: np.ndarray) -> bool:
        return True


def make_vad(kind: str, rate: int = SAMPLE_RATE, aggressiveness: int = 1) -> WebRtcVad | EnergyVad | NoVad:
    if kind == "webrtc":
        return WebRtcVad(rate, aggressiveness)
    if kind == "energy":
        return EnergyVad()
    if kind == "none":
        return NoVad()
    raise ValueError(f"unknown vad {kind!r}; choose one of {', '.join(VAD_KINDS)}")


def webrtc_available() -> bool:
    return _webrtcvad is not None


UTTERANCE_STATUSES = ("final", "provisional", "withdrawn")


@dataclass
class Utterance:
    """An utterance event. status: "final" (ended by the hangover or max_s), "provisional" (ended by a short
    pause; may still be withdrawn) or "withdrawn" (speech resumed after a provisional end: that end is void)."""

    id: int
    start: float  # s on the stream clock: start of the first speech frame
    end: float  # s: end of the last speech frame
    status: str = "final"


class UtteranceTracker:
    """Per-frame speech flags -> utterances (see the module docstring). Times in seconds on the stream clock."""

    def __init__(self, frame_s: float = FRAME_MS / 1000, start_s: float = 0.12, hangover_s: float = 0.5,
                 max_s: float = 10.0, min_s: float = 0.3, early_s: float = 0.0):
        if not 0 < start_s <= min_s <= max_s or hangover_s <= 0:
            raise ValueError(f"utterance timing needs 0 < start_s <= min_s <= max_s and hangover_s > 0, got "
                             f"start_s={start_s}, min_s={min_s}, max_s={max_s}, hangover_s={hangover_s}")
        if not 0 <= early_s < hangover_s:
            raise ValueError(f"utterance early_s must be in [0, hangover_s={hangover_s}) (0: off), got {early_s}")
        self.frame_s, self.start_s, self.hangover_s, self.max_s, self.min_s = frame_s, start_s, hangover_s, max_s, min_s
        self.early_s = early_s
        self._run_start: float | None = None  # start of the current run of speech frames
        self._current: Utterance | None = None
        self._provisional = False  # the current utterance has a provisional end out
        self._silence = 0.0
        self._next_id = 1
        self.too_short = 0  # utterances dropped for being shorter than min_s

    @property
    def active(self) -> bool:
        return self._current is not None

    def take_id(self) -> int:
        """A fresh id from the utterance sequence (for LLM requests that no utterance started)."""
        self._next_id += 1
        return self._next_id - 1

    def update(self, t: float, speech: bool) -> Utterance | None:
        """One frame starting at t; returns the utterance event this frame causes, if any (a copy: final,
        provisional or withdrawn; see `Utterance`)."""
        end = t + self.frame_s
        if self._current is None:
            self._run_start = (self._run_start if self._run_start is not None else t) if speech else None
            if speech and end - self._run_start >= self.start_s - 1e-9:
                self._current, self._silence = Utterance(0, self._run_start, end), 0.0
            return None
        if end - self._current.start >= self.max_s:
            if speech:
                self._current.end = end
            return self._close()
        if speech:
            self._current.end, self._silence = end, 0.0
            if self._provisional:  # speech resumed before the hangover: the provisional end is void
                self._provisional = False
                return self._event("withdrawn")
            return None
        self._silence += self.frame_s
        if self._silence >= self.hangover_s - 1e-9:
            return self._close()
        if self.early_s > 0 and not self._provisional and self._silence >= self.early_s - 1e-9:
            if self._current.end - self._current.start >= self.min_s:
                self._provisional = True
                if not self._current.id:
                    self._current.id = self.take_id()
                return self._event("provisional")
        return None

    def _event(self, status: str) -> Utterance:
        assert self._current is not None
        return Utterance(self._current.id, self._current.start, self._current.end, status)

    def _close(self) -> Utterance | None:
        """End the current utterance (final); None if it is shorter than min_s."""
        u, self._current, self._run_start, self._provisional = self._current, None, None, False
        assert u is not None
        if u.end - u.start < self.min_s:
            self.too_short += 1
            return None
        u.id = u.id or self.take_id()
        return u

    def flush(self) -> Utterance | None:
        """End the current utterance now (the input stopped): its final event, or None."""
        return self._close() if self._current is not None else None
