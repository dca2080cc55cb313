"""The live runtime: frames and audio in, emotion states and streamed reasoning out (numpy only, never torch).

    push_frame / push_audio ──► FrameRing, AudioRing (one clock, bounded)       (caller's threads; cheap)
    step()  ── VAD over new audio ─► UtteranceTracker ─► utterance windows        (the step thread)
            ── every 1/fast_hz s ─► sliding window
                 window ─► resample frames, cut audio ─► clip_from_media ─► perception + head ─► EmotionUpdate
    utterance end (or timer) ─► SlowPath: one job running, at most one waiting (coalesced or dropped, counted)
                 ─► LLM label (EmotionUpdate, source "llm") ─► reasoning streamed token by token (ReasoningUpdate)

Windows go through `clip_from_media`, the one preprocessing path of training and evaluation. An
utterance window spans the speech (plus `utterance_lead_s` before and `utterance_tail_s` after) with
its audio starting at the window start, which is how the training clips are cut (the model is
sensitive to where speech starts in its window: on SynthEmo, 0.2 s of silence before the onset
changed the head's label on 4 of 6 clips); the sliding window is the last
`window_s` seconds. A modality with no input for `stale_s` is passed to the model as absent.
Every update carries its latency (window end -> update handed out, on the stream clock).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from emo_edge.clip import clip_from_media
from emo_edge.config import FrontendConfig
from emo_edge.labels import parse_label
from emo_edge.process import tune_process
from emo_edge.runtime.buffers import AudioRing, FrameRing, StreamInputError, fit_side, resample_frames
from emo_edge.runtime.vad import FRAME_MS, VAD_KINDS, Utterance, UtteranceTracker, make_vad

SLOW_TRIGGERS = ("utterance", "timer", "both", "off")
LATENCY_KINDS = ("head", "head_utterance", "llm")


def latency_kind(source: str, utterance_id: int) -> str:
    """Which latency statistic an update counts in: head (sliding-window updates), head_utterance (the head's
    update at an utterance's end) or llm. Kept apart because an utterance's window ends where the speech
    ends, and the VAD knows it has ended only after `utterance_hangover_s` of silence: those updates carry
    that wait (about 0.4 s with the defaults), sliding-window ones do not."""
    return "head_utterance" if source == "head" and utterance_id else source
SLOW_POLICIES = ("coalesce", "drop")
LABEL_TOKENS = 8  # LLM tokens allowed for the one-word label answer


@dataclass
class StreamConfig:
    """Live-runtime settings; times in seconds on the stream clock, rates in Hz."""

    fast_hz: float = 2.0  # Hz, sliding-window head updates (0: only at utterance ends)
    window_s: float | None = None  # s, sliding window length; None: the bundle's frontend window
    buffer_s: float = 12.0  # s of frames and audio kept
    max_frames: int = 400  # frames kept at most, whatever their rate (bounds memory under a burst)
    max_side: int = 320  # px, frames are stored scaled down to this longer side
    video_fps: float = 15.0  # Hz, grid the frames of a window are resampled to (SynthEmo is rendered at 15)
    stale_s: float = 1.0  # s without input after which a modality counts as absent
    vad: str = "webrtc"  # webrtc | energy | none
    vad_aggressiveness: int = 2  # webrtc: 0 keeps most speech .. 3 cuts most non-speech
    utterance_start_s: float = 0.12  # s of continuous speech that start an utterance
    utterance_hangover_s: float = 0.5  # s of silence that end it
    utterance_min_s: float = 0.3  # s; shorter utterances are ignored
    utterance_max_s: float = 8.0  # s; longer speech is cut into utterances of this length
    utterance_lead_s: float = 0.0  # s of context kept before the speech onset (training clips start with it)
    utterance_tail_s: float = 0.1  # s of context kept after the speech
    slow: str = "utterance"  # what starts the LLM: utterance | timer | both | off
    slow_period_s: float = 10.0  # s between timer-started LLM runs
    slow_policy: str = "coalesce"  # busy LLM: coalesce (newest waiting job wins) | drop (new job dropped)
    reason: bool = True  # stream a reasoning after the LLM's label
    max_reason_tokens: int = 96
    subtitle: str | None = None  # a fixed transcript for the text modality (None: no text)
    latency_window: int = 512  # updates kept for latency statistics
    numpy_blas_threads: int | None = 1  # numpy's BLAS threads for the whole process (None: left as it is)
    tune_malloc: bool = True  # keep large blocks on glibc's heap (emo_edge/process.py), for the whole process

    def __post_init__(self) -> None:
        for name in ("buffer_s", "video_fps", "stale_s", "slow_period_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"stream.{name} must be > 0, got {getattr(self, name)}")
        if self.fast_hz < 0:
            raise ValueError(f"stream.fast_hz must be >= 0, got {self.fast_hz}")
        if self.window_s is not None and not 0 < self.window_s <= self.buffer_s:
            raise ValueError(f"stream.window_s must be in (0, buffer_s={self.buffer_s}], got {self.window_s}")
        if min(self.utterance_lead_s, self.utterance_tail_s) < 0:
            raise ValueError("stream.utterance_lead_s and utterance_tail_s must be >= 0")
        if self.utterance_max_s + self.utterance_lead_s + self.utterance_tail_s > self.buffer_s:
            raise ValueError(f"stream.buffer_s={self.buffer_s} must hold an utterance_max_s={self.utterance_max_s} "
                             f"window with its padding")
        for name, value, options in (("vad", self.vad, VAD_KINDS), ("slow", self.slow, SLOW_TRIGGERS),
                                     ("slow_policy", self.slow_policy, SLOW_POLICIES)):
            if value not in options:
                raise ValueError(f"stream.{name}={value!r}: choose one of {', '.join(options)}")
        if self.max_frames < 1 or self.max_side < 16 or self.latency_window < 1:
            raise ValueError("stream.max_frames, latency_window must be >= 1 and max_side >= 16")
        if self.numpy_blas_threads is not None and self.numpy_blas_threads < 1:
            raise ValueError(f"stream.numpy_blas_threads must be >= 1 or null, got {self.numpy_blas_threads}")


@dataclass
class EmotionUpdate:
    """One emotion state. `utterance_id` 0: a sliding-window update; source "llm" carries no scores."""

    label: str
    labels: list[str]
    scores: list[float]
    valence: float
    arousal: float
    window_start: float  # s, stream clock
    window_end: float
    latency_ms: float  # window end -> update handed out
    compute_ms: float  # time spent in the model for this update
    source: str  # "head" or "llm"
    utterance_id: int
    voice_active: bool
    present: tuple[bool, bool]  # (video, audio) passed to the model as present

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ReasoningUpdate:
    """The LLM's reasoning for one utterance (or timer request) so far; the last one has done=True."""

    utterance_id: int
    text: str
    done: bool
    window_end: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SlowJob:
    utterance_id: int
    tokens: np.ndarray  # (N, n_embd) float32 multimodal tokens from the fast path
    token_mask: np.ndarray  # (N,)
    window_start: float
    window_end: float
    valence: float
    arousal: float
    present: tuple[bool, bool]


class LatencyStats:
    """The last `n` latencies in ms; median and p95."""

    def __init__(self, n: int = 512):
        self._ms: deque[float] = deque(maxlen=n)

    def add(self, ms: float) -> None:
        self._ms.append(ms)

    def summary(self) -> dict[str, float | int | None]:
        if not self._ms:
            return {"n": 0, "median_ms": None, "p95_ms": None, "max_ms": None}
        x = np.array(self._ms)
        return {"n": len(x), "median_ms": float(np.median(x)), "p95_ms": float(np.percentile(x, 95)),
                "max_ms": float(x.max())}


class RateMeter:
    """Events per second over the last `window_s` seconds (bounded memory)."""

    def __init__(self, window_s: float = 5.0, max_events: int = 4096):
        self.window_s = window_s
        self._t: deque[float] = deque(maxlen=max_events)

    def tick(self, t: float) -> None:
        self._t.append(t)

    def rate(self, now: float) -> float:
        recent = [t for t in self._t if t >= now - self.window_s]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / max(now - recent[0], recent[-1] - recent[0], 1e-6)


class SlowPath:
    """One worker thread for LLM jobs: one job runs, at most one waits.

    A job submitted while the worker is busy either replaces the waiting one (policy "coalesce": the
    newest wins, the replaced job counts as coalesced) or is dropped (policy "drop"). Nothing ever
    queues beyond one job.
    """

    def __init__(self, work: Callable[[SlowJob], None], policy: str = "coalesce"):
        if policy not in SLOW_POLICIES:
            raise ValueError(f"slow_policy={policy!r}: choose one of {', '.join(SLOW_POLICIES)}")
        self.policy, self._work = policy, work
        self._cond = threading.Condition()
        self._pending: SlowJob | None = None
        self._busy = self._stop = False
        self.counts: Counter[str] = Counter()
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._loop, name="emo-edge-slow", daemon=True)
        self._thread.start()

    def submit(self, job: SlowJob) -> str:
        """'started', 'waiting', 'coalesced' (replaced a waiting job) or 'dropped'."""
        with self._cond:
            self.counts["submitted"] += 1
            busy = self._busy or self._pending is not None
            if busy and self.policy == "drop":
                self.counts["dropped"] += 1
                return "dropped"
            outcome = "coalesced" if self._pending is not None else "waiting" if self._busy else "started"
            if self._pending is not None:
                self.counts["coalesced"] += 1
            self._pending = job
            self._cond.notify_all()
            return outcome

    def _loop(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                job, self._pending, self._busy = self._pending, None, True
            try:
                self._work(job)
                self.counts["done"] += 1
            except Exception as e:  # a failed LLM run must not kill the worker; it is counted and reported
                self.counts["failed"] += 1
                self.last_error = f"{type(e).__name__}: {e}"
            with self._cond:
                self._busy = False
                self._cond.notify_all()

    def idle(self) -> bool:
        with self._cond:
            return not self._busy and self._pending is None

    def wait_idle(self, timeout: float) -> bool:
        """Block until no job runs or waits; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._busy or self._pending is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def close(self, timeout: float = 30.0) -> None:
        with self._cond:
            self._stop = True
            self._pending = None
            self._cond.notify_all()
        self._thread.join(timeout)


def frontend_of(fe: FrontendConfig | dict[str, Any]) -> FrontendConfig:
    return fe if isinstance(fe, FrontendConfig) else FrontendConfig(**fe)


def to_mono_float(samples: np.ndarray) -> np.ndarray:
    """(n,) or (n, channels) int16/int32/float audio -> (n,) float32 in [-1, 1]; StreamInputError otherwise."""
    x = np.asarray(samples)
    if x.ndim == 2:
        x = x.mean(axis=1) if x.dtype.kind == "f" else x.astype(np.float64).mean(axis=1).astype(x.dtype)
    if x.ndim != 1 or x.size == 0:
        raise StreamInputError("audio_format", f"audio chunk must be (n,) or (n, channels) and non-empty, "
                                               f"got shape {np.shape(samples)}")
    if x.dtype == np.int16:
        return x.astype(np.float32) / 32768.0
    if x.dtype == np.int32:
        return (x.astype(np.float64) / 2147483648.0).astype(np.float32)
    if x.dtype.kind == "f":
        if not np.all(np.isfinite(x)):
            raise StreamInputError("audio_format", "audio chunk has NaN or infinite samples")
        return np.clip(x, -1.0, 1.0).astype(np.float32)
    raise StreamInputError("audio_format", f"audio samples must be int16, int32 or float, got {x.dtype}")


def check_frame(frame: np.ndarray) -> np.ndarray:
    f = np.asarray(frame)
    if f.ndim != 3 or f.shape[2] != 3 or f.dtype != np.uint8 or min(f.shape[:2]) < 2:
        raise StreamInputError("frame_format", f"frame must be (H, W, 3) uint8 RGB, got {f.shape} {f.dtype}")
    return f


class StreamRuntime:
    """Live emotion perception over an `EmotionRuntime` (or anything with its `perceive`/`answer`/`labels`).

    runtime: the model; frontend: the bundle's frontend config (or dict); config: StreamConfig.
    clock: seconds, the clock every stamp handed to push_* is on (default time.monotonic).
    on_state / on_reasoning: called with each EmotionUpdate / ReasoningUpdate, from the step thread
        (head) or the LLM worker (llm, reasoning).
    """

    def __init__(self, runtime: Any, frontend: FrontendConfig | dict[str, Any], config: StreamConfig | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 on_state: Callable[[EmotionUpdate], None] | None = None,
                 on_reasoning: Callable[[ReasoningUpdate], None] | None = None):
        self.rt, self.fe, self.cfg = runtime, frontend_of(frontend), config or StreamConfig()
        # process-wide (see emo_edge/process.py for why): numpy's BLAS threads, glibc's large-block policy
        self.process_settings = tune_process(self.cfg.numpy_blas_threads, self.cfg.tune_malloc)
        self.clock = clock
        self.on_state, self.on_reasoning = on_state, on_reasoning
        self.labels = list(runtime.labels)
        self.window_s = self.cfg.window_s or self.fe.window_seconds
        if self.window_s > self.cfg.buffer_s:
            raise ValueError(f"stream.buffer_s={self.cfg.buffer_s} is shorter than the {self.window_s} s window")
        self._lock = threading.Lock()
        self.frames = FrameRing(self.cfg.buffer_s, self.cfg.max_frames)
        self.audio = AudioRing(self.fe.sample_rate, self.cfg.buffer_s)
        self.vad = make_vad(self.cfg.vad, self.fe.sample_rate, self.cfg.vad_aggressiveness)
        self.tracker = UtteranceTracker(FRAME_MS / 1000, self.cfg.utterance_start_s, self.cfg.utterance_hangover_s,
                                        self.cfg.utterance_max_s, self.cfg.utterance_min_s)
        self._vad_pos = 0  # absolute audio sample index the VAD has reached
        self._utterances: deque[Utterance] = deque(maxlen=8)  # ended, waiting for their padding to arrive
        self._last_frame_at = self._last_audio_at = -np.inf  # clock times of the last accepted input
        self._next_fast = -np.inf
        self._last_slow = clock()
        self._last_head: EmotionUpdate | None = None
        self._last_tokens: tuple[np.ndarray, np.ndarray] | None = None
        self.latency = {k: LatencyStats(self.cfg.latency_window) for k in LATENCY_KINDS}
        self.rates = {k: RateMeter() for k in ("frames", "audio", "head", "llm")}
        self.faults: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()
        self.slow = SlowPath(self._slow_work, self.cfg.slow_policy) if self.cfg.slow != "off" else None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.last_error: str | None = None  # the last exception of a step, for diagnostics

    # -- input (any thread; validation and a copy only) -------------------------------------------
    def push_frame(self, t: float, frame: np.ndarray) -> None:
        """One (H, W, 3) uint8 RGB frame captured at clock time t; StreamInputError (counted) if unusable."""
        with self._counting_faults():
            small = fit_side(check_frame(frame), self.cfg.max_side).copy()
            with self._lock:
                self.frames.push(t, small)
                self._last_frame_at = self.clock()
        self.rates["frames"].tick(self._last_frame_at)

    def push_audio(self, t: float, samples: np.ndarray, rate: int) -> None:
        """A chunk whose first sample was captured at clock time t; (n,) or (n, ch), int16/int32/float at `rate`."""
        with self._counting_faults():
            if rate != self.fe.sample_rate:
                raise StreamInputError("audio_rate", f"audio at {rate} Hz; the model takes {self.fe.sample_rate} Hz "
                                                     "(resample at the source); chunk dropped")
            x = to_mono_float(samples)
            with self._lock:
                self.audio.push(t, x)
                self._last_audio_at = self.clock()
        self.rates["audio"].tick(self._last_audio_at)

    @contextlib.contextmanager
    def _counting_faults(self) -> Iterator[None]:
        """Count a StreamInputError under its kind, then let it through to the caller."""
        try:
            yield
        except StreamInputError as e:
            self.faults[e.kind] += 1
            raise

    # -- processing (the step thread) -------------------------------------------------------------
    def step(self, now: float | None = None) -> list[EmotionUpdate]:
        """Run the VAD over new audio, finish ready utterances, and the sliding window when due."""
        now = self.clock() if now is None else now
        self._run_vad()
        out = self._finish_utterances(now)
        if self.cfg.fast_hz > 0 and now >= self._next_fast:
            period = 1.0 / self.cfg.fast_hz  # keep the cadence, but never catch up with a burst of updates
            self._next_fast = self._next_fast + period if now - self._next_fast < period else now + period
            update = self._sliding_update(now)
            out += [update] if update is not None else []
        if self.cfg.slow in ("timer", "both") and now - self._last_slow >= self.cfg.slow_period_s:
            self._submit_timer(now)
        return out

    def fresh(self, now: float) -> tuple[bool, bool]:
        """(video, audio): whether each had input within stale_s."""
        return now - self._last_frame_at <= self.cfg.stale_s, now - self._last_audio_at <= self.cfg.stale_s

    def _run_vad(self) -> None:
        n = int(self.fe.sample_rate * FRAME_MS / 1000)
        with self._lock:
            if self.audio.t_end is None:
                return
            self._vad_pos = max(self._vad_pos, self.audio.written - self.audio.capacity)
            count = (self.audio.written - self._vad_pos) // n
            if count == 0:
                return
            seg = self.audio.read(self._vad_pos, self._vad_pos + count * n)
            t0 = self.audio.t_end - (self.audio.written - self._vad_pos) / self.audio.rate
            self._vad_pos += count * n
        for i in range(count):
            u = self.tracker.update(t0 + i * n / self.fe.sample_rate, self.vad.is_speech(seg[i * n:(i + 1) * n]))
            if u is not None:
                self._utterances.append(u)
                self.counts["utterances"] += 1

    def _finish_utterances(self, now: float) -> list[EmotionUpdate]:
        out = []
        while self._utterances:
            u = self._utterances[0]
            t0, t1 = u.start - self.cfg.utterance_lead_s, u.end + self.cfg.utterance_tail_s
            with self._lock:
                video_in = self.frames.latest is not None and self.frames.latest >= t1
                audio_in = self.audio.t_end is not None and self.audio.t_end >= t1
            video, audio = self.fresh(now)
            if ((video and not video_in) or (audio and not audio_in)) and now - t1 < self.cfg.stale_s:
                break  # the padding after the speech has not arrived yet
            self._utterances.popleft()
            update = self._update(t0, t1, now, u.id, cut_audio=True)
            if update is not None:
                out.append(update)
                if self.cfg.slow in ("utterance", "both"):
                    self._submit(u.id, update)
        return out

    def _sliding_update(self, now: float) -> EmotionUpdate | None:
        video, audio = self.fresh(now)
        with self._lock:
            ends = ([self.frames.latest] if video else []) + ([self.audio.t_end] if audio else [])
        if not ends:
            self.counts["idle"] += 1
            return None
        t1 = min(ends)
        return self._update(t1 - self.window_s, t1, now, 0, cut_audio=False)

    def assemble(self, t0: float, t1: float, now: float, cut_audio: bool
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        """(image, frames, mel, present) of the window [t0, t1] for a batch of one, or None with no input.

        cut_audio: the audio is [t0, t1] zero-padded to the model's window (utterances, as training clips
        are cut); otherwise the model's window of audio from t0 on.
        """
        fe = self.fe
        video, audio = self.fresh(now)
        with self._lock:
            times, frames = self.frames.window(t0, t1)
            n = min(fe.n_samples, int(round((t1 - t0) * fe.sample_rate))) if cut_audio else fe.n_samples
            wave = self.audio.window(t0, n) if audio and self.audio.t_end is not None else None
        video = video and len(frames) > 0
        if not (video or wave is not None):
            return None
        grid = (resample_frames(times, frames, t0, t1, self.cfg.video_fps) if video
                else np.zeros((1, fe.frame_size, fe.frame_size, 3), np.uint8))
        clip = clip_from_media(grid, wave if wave is not None else np.zeros(fe.n_samples, np.float32), fe)
        present = np.array([[video, video, wave is not None]], np.float32)
        return clip.image[None], clip.frames[None], clip.mel[None], present

    def _update(self, t0: float, t1: float, now: float, utterance_id: int, cut_audio: bool) -> EmotionUpdate | None:
        start = self.clock()
        batch = self.assemble(t0, t1, now, cut_audio)
        if batch is None:
            self.counts["idle"] += 1
            return None
        out = self.rt.perceive(*batch)
        present = (bool(batch[3][0, 1]), bool(batch[3][0, 2]))
        va = np.asarray(out["va"])[0]
        done = self.clock()
        update = EmotionUpdate(
            label=out["labels"][0], labels=self.labels, scores=[float(s) for s in np.asarray(out["scores"])[0]],
            valence=float(va[0]), arousal=float(va[1]), window_start=t0, window_end=t1,
            latency_ms=(done - t1) * 1000.0, compute_ms=(done - start) * 1000.0, source="head",
            utterance_id=utterance_id, voice_active=self.tracker.active, present=present)
        self._last_head, self._last_tokens = update, (out["tokens"][0], out["token_mask"][0])
        self._emit_state(update, done)
        return update

    def _emit_state(self, update: EmotionUpdate, t: float) -> None:
        self.latency[latency_kind(update.source, update.utterance_id)].add(update.latency_ms)
        self.rates[update.source].tick(t)
        self.counts[f"{update.source}_updates"] += 1
        if self.on_state is not None:
            self.on_state(update)

    # -- slow path (the LLM worker) -------------------------------------------------------------
    def _submit(self, utterance_id: int, head: EmotionUpdate) -> None:
        if self.slow is None or self._last_tokens is None:
            return
        tokens, mask = self._last_tokens
        self._last_slow = self.clock()
        self.slow.submit(SlowJob(utterance_id, tokens, mask, head.window_start, head.window_end,
                                 head.valence, head.arousal, head.present))

    def _submit_timer(self, now: float) -> None:
        self._last_slow = now
        if self._last_head is not None and now - self._last_head.window_end <= self.cfg.stale_s + self.window_s:
            self._submit(self.tracker.take_id(), self._last_head)

    def _slow_work(self, job: SlowJob) -> None:
        start = self.clock()
        answer = self.rt.answer(job.tokens, job.token_mask, "emotion", self.cfg.subtitle, max_new_tokens=LABEL_TOKENS)
        label = parse_label(answer, self.labels)
        if label is None:
            self.counts["llm_unparsed"] += 1
        done = self.clock()
        self._emit_state(EmotionUpdate(
            label=label or "", labels=[], scores=[], valence=job.valence, arousal=job.arousal,
            window_start=job.window_start, window_end=job.window_end, latency_ms=(done - job.window_end) * 1000.0,
            compute_ms=(done - start) * 1000.0, source="llm", utterance_id=job.utterance_id,
            voice_active=self.tracker.active, present=job.present), done)
        if self.cfg.reason:
            self._stream_reason(job)

    def _stream_reason(self, job: SlowJob) -> None:
        text: list[str] = []

        def on_token(piece: str) -> None:
            text.append(piece)
            if self.on_reasoning is not None:
                self.on_reasoning(ReasoningUpdate(job.utterance_id, "".join(text), False, job.window_end))

        final = self.rt.answer(job.tokens, job.token_mask, "reason", self.cfg.subtitle,
                               max_new_tokens=self.cfg.max_reason_tokens, on_token=on_token)
        if self.on_reasoning is not None:
            self.on_reasoning(ReasoningUpdate(job.utterance_id, final, True, job.window_end))

    # -- running in the background ----------------------------------------------------------------
    def start(self, tick_s: float = 0.02) -> StreamRuntime:
        """Run `step` in a thread every tick_s seconds until `stop`."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, args=(tick_s,), name="emo-edge-step", daemon=True)
            self._thread.start()
        return self

    def _loop(self, tick_s: float) -> None:
        while not self._stop.wait(tick_s):
            try:
                self.step()
            except Exception as e:  # a failing window is counted and reported; the stream goes on
                self.faults["step_error"] += 1
                self.last_error = f"{type(e).__name__}: {e}"

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10.0)
            self._thread = None
        if self.slow is not None:
            self.slow.close()

    def stats(self, now: float | None = None) -> dict[str, Any]:
        """Rates (Hz), latency (ms: median, p95, max), counts, faults and buffer fill, for diagnostics."""
        now = self.clock() if now is None else now
        with self._lock:
            buffers = {"frames": len(self.frames), "audio_s": min(self.audio.written, self.audio.capacity)
                       / self.audio.rate}
        video, audio = self.fresh(now)
        return {
            "rates_hz": {k: round(m.rate(now), 3) for k, m in self.rates.items()},
            "latency_ms": {k: v.summary() for k, v in self.latency.items()},
            "counts": dict(self.counts), "faults": dict(self.faults),
            "slow": dict(self.slow.counts) if self.slow is not None else {},
            "slow_last_error": self.slow.last_error if self.slow is not None else None,
            "step_last_error": self.last_error, "buffers": buffers,
            "inputs_fresh": {"video": video, "audio": audio}, "voice_active": self.tracker.active,
        }
