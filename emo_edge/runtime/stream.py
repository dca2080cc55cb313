"""The live runtime: frames and audio in, emotion states and streamed reasoning out (numpy only, never torch).

    push_frame / push_audio ──► FrameRing, AudioRing (one clock, bounded)       (caller's threads; cheap)
    step()  ── VAD over new audio ─► UtteranceTracker ─► utterance windows        (the step thread)
            ── every 1/fast_hz s ─► sliding window
                 window ─► resample frames, cut audio ─► clip_from_media ─► perception + head ─► EmotionUpdate
    utterance end (or timer) ─► SlowPath: one job running, at most one waiting (coalesced or dropped, counted)
                 ─► reasoning streamed token by token (ReasoningUpdate) ─► its conclusion as the LLM label
                    (EmotionUpdate, source "llm"), then the reasoning's last update (done)
                 (reason off: one short `emotion` answer ─► the LLM label)

The LLM label and the reason come from ONE generation: the label is the reason's conclusion, read as
`emo-edge eval --answer-from reason` reads it (`reason_conclusion`: the last label named in the last sentence
that names one, "... The answer is worried."), so the two cannot disagree. Two generations (a one-word label,
then a reason) could: the reason is free to conclude otherwise. The cost is when the label comes: at the
reason's end instead of after a few tokens; with `reason` off the short answer gives the label early.
A reason without a label in it gives the label "" (counted as llm_unparsed).

Early end of utterance: after `utterance_early_s` of silence the utterance ends provisionally: its head
state and LLM job go out at once with status "provisional". If speech resumes before
`utterance_hangover_s`, the answer is withdrawn: the LLM job is cancelled (between two tokens) and one
state with status "withdrawn" tells subscribers to forget every provisional answer of that utterance id;
the final answer then covers the whole utterance. If the hangover passes with no more speech, the
provisional answer is confirmed without recomputing: its head state (and LLM label, once there) is
re-published with status "final", and the reasoning streams on with status "final". So a subscriber that
ignores everything but "final" gets exactly one head state and one LLM label per utterance.

Fresh under load: while a fast-path update runs, the LLM worker waits between two tokens
(`llm_pause_for_fast`), so the two do not compete for the same cores; the decode loses only the
fast path's compute time. `llm_threads` sets llama.cpp's threads for the stream (both default to the
bundle target profile's `runtime` section).

End of input: a sliding window is computed only when input newer than the last one's end arrived, and
it ends at the last input of the present modalities; once no input arrived for half of `stale_s` the
fast path pauses (`stats()["fast_path"]`) until input returns, so a modality going stale after the
end does not bring back an old window without it. Audio that stops mid-utterance ends the utterance.

Windows go through `clip_from_media`, the one preprocessing path of training and evaluation. An
utterance window spans the speech (plus `utterance_lead_s` before and `utterance_tail_s` after) with
its audio starting at the window start, which is how the training clips are cut (the model is
sensitive to where speech starts in its window: on SynthEmo, 0.2 s of silence before the onset
changed the head's label on 4 of 6 clips); the sliding window is the last
`window_s` seconds. A modality with no input for `stale_s` is passed to the model as absent. Recognised
speech pushed with its time (`push_transcript`) is the LLM's subtitle for the utterance it falls in
(within `transcript_slack_s`); without one the text modality is absent.
Every update carries its latency (window end -> update handed out, on the stream clock).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np

from emo_edge.clip import clip_from_media
from emo_edge.config import FrontendConfig
from emo_edge.labels import parse_label, reason_conclusion
from emo_edge.process import tune_process
from emo_edge.prompts import LABEL_TOKENS, REASON_TOKENS
from emo_edge.runtime.buffers import AudioRing, FrameRing, StreamInputError, fit_side, resample_frames
from emo_edge.runtime.vad import FRAME_MS, VAD_KINDS, Utterance, UtteranceTracker, make_vad

SLOW_TRIGGERS = ("utterance", "timer", "both", "off")
# speech_label: the VAD's end of speech -> the first head state of the utterance that was not withdrawn
LATENCY_KINDS = ("head", "head_utterance", "llm", "speech_label")
ANSWER_STATUSES = ("final", "provisional", "withdrawn")
FAST_PAUSE_MAX_S = 0.5  # s an LLM token waits for a fast-path update at most (a stuck update must not stall it)


def latency_kind(source: str, utterance_id: int) -> str:
    """Which latency statistic an update counts in: head (sliding-window updates), head_utterance (the head's
    update at an utterance's end) or llm. Kept apart because an utterance's window ends where the speech
    ends, and the VAD knows it has ended only after `utterance_hangover_s` of silence: those updates carry
    that wait (about 0.4 s with the defaults), sliding-window ones do not."""
    return "head_utterance" if source == "head" and utterance_id else source
SLOW_POLICIES = ("coalesce", "drop")
PAUSE_CHOICES = ("profile", "on", "off")


def setting(default: Any, help: str, *, choices: tuple[str, ...] = (), low: float | None = None,
            high: float | None = None, above: float | None = None, none_as: Any = None) -> Any:
    """A StreamConfig field with its description and valid values: the one table that the ROS 2 node's parameters,
    its params.yaml, the `emo-edge run` options and the bag replay are generated from (emo_edge.runtime.settings).

    low/high: inclusive bounds; above: an exclusive lower bound; none_as: how None is written where None cannot
    be (a ROS parameter, a CLI option), e.g. 0 or ""."""
    return field(default=default, metadata={"help": help, "choices": choices, "low": low, "high": high,
                                            "above": above, "none_as": none_as})


@dataclass
class StreamConfig:
    """Live-runtime settings; times in seconds on the stream clock, rates in Hz. Each field's help and range
    are in its `setting(...)`; `check_settings` enforces them, `__post_init__` the combinations."""

    fast_hz: float = setting(2.0, "Hz, sliding-window head updates (0: only at utterance ends)", low=0)
    window_s: float | None = setting(None, "s, sliding window length (0: the bundle's frontend window)", above=0,
                                     none_as=0.0)
    buffer_s: float = setting(12.0, "s of frames and audio kept", above=0)
    max_frames: int = setting(400, "frames kept at most, whatever their rate (bounds memory under a burst)", low=1)
    max_side: int = setting(320, "px, frames are stored scaled down to this longer side", low=16)
    video_fps: float = setting(15.0, "Hz, grid the frames of a window are resampled to (SynthEmo is rendered at 15)",
                               above=0)
    stale_s: float = setting(1.0, "s without input after which a modality is passed to the model as absent", above=0)
    vad: str = setting("webrtc", "voice-activity detector", choices=VAD_KINDS)
    vad_aggressiveness: int = setting(1, "webrtc VAD: 0 keeps most speech .. 3 cuts most non-speech", low=0, high=3)
    utterance_start_s: float = setting(0.12, "s of continuous speech that start an utterance", low=0)
    utterance_hangover_s: float = setting(0.5, "s of silence that end an utterance", low=0)
    utterance_early_s: float = setting(0.15, "s of silence that end an utterance provisionally: its answer goes out "
                                             "at once, withdrawn if speech resumes before the hangover (0: off)",
                                       low=0)
    utterance_min_s: float = setting(0.3, "s; shorter utterances are ignored", low=0)
    utterance_max_s: float = setting(8.0, "s; longer speech is cut into utterances of this length", above=0)
    utterance_lead_s: float = setting(0.0, "s of context kept before the speech onset (training clips start with it)",
                                      low=0)
    utterance_tail_s: float = setting(0.1, "s of context kept after the speech", low=0)
    slow: str = setting("utterance", "what starts the LLM", choices=SLOW_TRIGGERS)
    slow_period_s: float = setting(10.0, "s between timer-started LLM runs", above=0)
    slow_policy: str = setting("coalesce", "busy LLM: coalesce (the newest waiting request wins) or drop",
                               choices=SLOW_POLICIES)
    reason: bool = setting(True, "stream the LLM's reasoning; its conclusion is the LLM label (one generation, so "
                                 "they agree); off: a one-word label answer only")
    max_reason_tokens: int = setting(REASON_TOKENS, "tokens of reasoning at most (the LLM label is the reason's "
                                                    "conclusion: a cut reason may lose it)", low=1)
    subtitle: str | None = setting(None, "a fixed transcript for the text modality when no timed transcript covers "
                                         "the utterance ('': none)", none_as="")
    transcript_slack_s: float = setting(1.0, "s; a timed transcript stamped within this of an utterance's window "
                                             "belongs to it (older or later text: the text modality is absent)", low=0)
    latency_window: int = setting(512, "updates kept for latency statistics", low=1)
    llm_pause_for_fast: str = setting("profile", "LLM decode waits between tokens while a fast-path update computes "
                                                 "(profile: the bundle target's runtime.llm_pause_for_fast)",
                                      choices=PAUSE_CHOICES)
    llm_threads: int | None = setting(None, "llama.cpp threads while streaming (0: the bundle target's "
                                            "runtime.llm_threads, else kept)", low=1, none_as=0)
    numpy_blas_threads: int | None = setting(1, "numpy's BLAS threads for the whole process (0: left as it is)",
                                             low=1, none_as=0)
    tune_malloc: bool = setting(True, "keep large blocks on glibc's heap (emo_edge/process.py), for the whole "
                                      "process")

    def __post_init__(self) -> None:
        check_settings(self)
        if self.window_s is not None and not 0 < self.window_s <= self.buffer_s:
            raise ValueError(f"stream.window_s must be in (0, buffer_s={self.buffer_s}], got {self.window_s}")
        if self.utterance_early_s >= self.utterance_hangover_s:
            raise ValueError(f"stream.utterance_early_s must be < utterance_hangover_s={self.utterance_hangover_s} "
                             f"(0: off), got {self.utterance_early_s}")
        if self.utterance_max_s + self.utterance_lead_s + self.utterance_tail_s > self.buffer_s:
            raise ValueError(f"stream.buffer_s={self.buffer_s} must hold an utterance_max_s={self.utterance_max_s} "
                             f"window with its padding")


def check_settings(cfg: Any) -> None:
    """Each field of a dataclass made of `setting(...)` fields against its choices and bounds (None passes)."""
    for f in fields(cfg):
        m, value = f.metadata, getattr(cfg, f.name)
        if not m or value is None:
            continue
        if m["choices"] and value not in m["choices"]:
            raise ValueError(f"stream.{f.name}={value!r}: choose one of {', '.join(m['choices'])}")
        if m["low"] is not None and value < m["low"]:
            raise ValueError(f"stream.{f.name} must be >= {m['low']}, got {value}")
        if m["high"] is not None and value > m["high"]:
            raise ValueError(f"stream.{f.name} must be <= {m['high']}, got {value}")
        if m["above"] is not None and value <= m["above"]:
            raise ValueError(f"stream.{f.name} must be > {m['above']}, got {value}")


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
    transcript: str | None = None  # source "llm": the text passed to the LLM as the subtitle (None: text absent)
    status: str = "final"  # final | provisional (may be withdrawn) | withdrawn (forget utterance_id's provisional)
    speech_end: float = 0.0  # s, stream clock: the VAD's end of the utterance's speech (0: sliding window)
    # source "head" with a model that reads observable attributes: each attribute, its likelier value and that
    # value's probability (empty otherwise)
    attributes: list[str] = field(default_factory=list)
    attribute_values: list[str] = field(default_factory=list)
    attribute_scores: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ReasoningUpdate:
    """The LLM's reasoning for one utterance (or timer request) so far; the last one has done=True."""

    utterance_id: int
    text: str
    done: bool
    window_end: float
    status: str = "final"  # as EmotionUpdate.status; a withdrawn stream ends with done=True, status "withdrawn"

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
    status: str = "final"  # provisional until confirmed (-> final) or withdrawn (-> cancelled)
    speech_end: float = 0.0
    cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    label_update: EmotionUpdate | None = None  # the LLM label once emitted (re-published final on confirmation)
    reasoning: str | None = None  # the finished reasoning, likewise
    subtitle: str | None = None  # the transcript its prompts took (set when the job starts)
    started: bool = False
    evidence: str = ""  # the attribute readings in words, for a bundle whose LLM reads them (perceive's `evidence`)


@dataclass
class OpenAnswer:
    """An utterance's provisional answer while it may still be withdrawn."""

    head: EmotionUpdate  # the provisional head state as published
    job: SlowJob | None = None  # its LLM job (None: the slow path is off or had no tokens)

    @property
    def head_done(self) -> float:
        """s, stream clock: when the head state was handed out."""
        return self.head.window_end + self.head.latency_ms / 1000.0


def runtime_setting(value: Any, runtime: Any, key: str, default: Any) -> Any:
    """A stream setting: `value` when given, else the bundle target profile's `runtime.<key>` (as recorded in the
    manifest, `runtime.runtime_profile`), else `default`."""
    if value is not None:
        return value
    # looked up on the type: an AttributeError raised inside the property must surface, not read as "no profile"
    profile = (runtime.runtime_profile if hasattr(type(runtime), "runtime_profile") else None) or {}
    return profile.get(key, default) if profile.get(key) is not None else default


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

    def __init__(self, work: Callable[[SlowJob], None], policy: str = "coalesce",
                 on_error: Callable[[str, BaseException], None] | None = None):
        if policy not in SLOW_POLICIES:
            raise ValueError(f"slow_policy={policy!r}: choose one of {', '.join(SLOW_POLICIES)}")
        self.policy, self._work = policy, work
        self._cond = threading.Condition()
        self._pending: SlowJob | None = None
        self._running: SlowJob | None = None
        self._busy = self._stop = False
        self.counts: Counter[str] = Counter()
        self.last_error: str | None = None
        self.on_error = on_error  # told of each failed job (kind "slow_job"), e.g. to log its traceback
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

    def cancel(self, utterance_id: int) -> bool:
        """Withdraw utterance_id's job: a waiting one is removed, a running one told to stop at its next token."""
        with self._cond:
            if self._pending is not None and self._pending.utterance_id == utterance_id:
                self._pending.cancel.set()
                self._pending = None
                self.counts["cancelled"] += 1
                self._cond.notify_all()
                return True
            if self._running is not None and self._running.utterance_id == utterance_id:
                self._running.cancel.set()
                self.counts["cancelled"] += 1
                return True
            return False

    def _loop(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                job, self._pending, self._busy = self._pending, None, True
                self._running = job
            try:
                self._work(job)
                self.counts["done"] += 1
            except Exception as e:  # a failed LLM run ends that job only; it is counted and reported
                self.counts["failed"] += 1
                self.last_error = f"{type(e).__name__}: {e}"
                if self.on_error is not None:
                    self.on_error("slow_job", e)
            with self._cond:
                self._busy, self._running = False, None
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
    on_error: called with (kind, exception) for each exception caught in the runtime's threads ("step": a
        window failed, the stream goes on; "slow_job": one LLM job failed, the worker goes on); counted in
        `errors` by kind either way.
    """

    def __init__(self, runtime: Any, frontend: FrontendConfig | dict[str, Any], config: StreamConfig | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 on_state: Callable[[EmotionUpdate], None] | None = None,
                 on_reasoning: Callable[[ReasoningUpdate], None] | None = None,
                 on_error: Callable[[str, BaseException], None] | None = None):
        self.rt, self.fe, self.cfg = runtime, frontend_of(frontend), config or StreamConfig()
        self.on_error = on_error
        self.errors: Counter[str] = Counter()  # exceptions caught in the runtime's threads, by kind
        # process-wide (see emo_edge/process.py for why): numpy's BLAS threads, glibc's large-block policy
        self.process_settings = tune_process(self.cfg.numpy_blas_threads, self.cfg.tune_malloc)
        self.clock = clock
        self.on_state, self.on_reasoning = on_state, on_reasoning
        self.labels = list(runtime.labels)
        self.window_s = self.cfg.window_s or self.fe.window_seconds
        if self.window_s > self.cfg.buffer_s:
            raise ValueError(f"stream.buffer_s={self.cfg.buffer_s} is shorter than the {self.window_s} s window")
        pause = {"profile": None, "on": True, "off": False}[self.cfg.llm_pause_for_fast]
        self.pause_for_fast = runtime_setting(pause, runtime, "llm_pause_for_fast", True)
        # the model's sessions open here, before any input: opened by the first window they would stall the callbacks
        self.load_s: dict[str, float] = runtime.load(self.cfg.slow != "off") if hasattr(runtime, "load") else {}
        self.llm_threads = runtime_setting(self.cfg.llm_threads, runtime, "llm_threads", None)
        if self.llm_threads is not None and self.cfg.slow != "off" and hasattr(runtime, "set_llm_threads"):
            runtime.set_llm_threads(self.llm_threads)
        self._lock = threading.Lock()
        self.frames = FrameRing(self.cfg.buffer_s, self.cfg.max_frames)
        self.audio = AudioRing(self.fe.sample_rate, self.cfg.buffer_s)
        self.vad = make_vad(self.cfg.vad, self.fe.sample_rate, self.cfg.vad_aggressiveness)
        self.tracker = UtteranceTracker(FRAME_MS / 1000, self.cfg.utterance_start_s, self.cfg.utterance_hangover_s,
                                        self.cfg.utterance_max_s, self.cfg.utterance_min_s, self.cfg.utterance_early_s)
        self._vad_pos = 0  # absolute audio sample index the VAD has reached
        self._utterances: deque[Utterance] = deque(maxlen=8)  # utterance events, waiting for their padding to arrive
        self._cut_by_input: set[int] = set()  # utterance ids the end of input ended (no padding will come)
        self._open: dict[int, OpenAnswer] = {}  # utterance id -> its provisional answer, until confirmed or withdrawn
        self._answer_lock = threading.Lock()  # a job's status vs. the worker emitting its label and reasoning
        self._fast_idle = threading.Event()  # clear while a fast-path update computes (the LLM waits, see above)
        self._fast_idle.set()
        self._last_frame_at = self._last_audio_at = -np.inf  # clock times of the last accepted input
        self._next_fast = -np.inf
        self._last_sliding_end = -np.inf  # window end of the last sliding update (a new one needs newer input)
        self.fast_path = "starting"  # running | no new input | paused: no input (for diagnostics)
        self._last_slow = clock()
        self._last_head: EmotionUpdate | None = None
        self._last_tokens: tuple[np.ndarray, np.ndarray, str] | None = None  # tokens, mask, evidence text
        self.latency = {k: LatencyStats(self.cfg.latency_window) for k in LATENCY_KINDS}
        self.rates = {k: RateMeter() for k in ("frames", "audio", "head", "llm")}
        self.faults: Counter[str] = Counter()
        self.counts: Counter[str] = Counter()
        self._transcripts: deque[tuple[float, str]] = deque(maxlen=64)  # (clock time, text), time order
        self.slow = (SlowPath(self._slow_work, self.cfg.slow_policy, on_error=self._error)
                     if self.cfg.slow != "off" else None)
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
                self.counts["frames"] += 1
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
                self.counts["audio_chunks"] += 1
        self.rates["audio"].tick(self._last_audio_at)

    def push_transcript(self, t: float, text: str) -> None:
        """Recognised speech stamped at clock time t (when it was said, or when it arrived); empty text is ignored.
        The LLM's job for an utterance takes the texts stamped within `transcript_slack_s` of its window."""
        text = text.strip()
        if not text:
            return
        with self._lock:
            self._transcripts.append((t, text))
        self.counts["transcripts"] += 1

    def transcript_for(self, t0: float, t1: float) -> str | None:
        """The timed texts within transcript_slack_s of the window [t0, t1], joined in time order; else the
        fixed `subtitle` (None, or '' in a flat setting: the text modality is absent)."""
        slack = self.cfg.transcript_slack_s
        with self._lock:
            texts = [text for t, text in sorted(self._transcripts, key=lambda x: x[0]) if t0 - slack <= t <= t1 + slack]
        return " ".join(texts) if texts else (self.cfg.subtitle or None)

    def _error(self, kind: str, e: BaseException) -> None:
        """Count an exception caught in a runtime thread and hand it on (the node logs it with its traceback)."""
        self.errors[kind] += 1
        if self.on_error is not None:
            try:
                self.on_error(kind, e)
            except Exception:  # noqa: BLE001 - reporting must never take the thread down with it
                self.errors["on_error"] += 1

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
        self._end_of_audio(now)
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
                self._utterance_event(u)

    def _end_of_audio(self, now: float) -> None:
        """Audio that stopped mid-utterance (file end, microphone gone) for a hangover, or for half of stale_s
        (so the input is still fresh for the answer), ends the utterance where the input ended."""
        gone_s = min(self.cfg.utterance_hangover_s, self.cfg.stale_s / 2)
        if self.tracker.active and now - self._last_audio_at >= gone_s:
            u = self.tracker.flush()
            if u is not None:
                self.counts["utterances_ended_by_input"] += 1
                self._cut_by_input.add(u.id)
                self._utterance_event(u)

    def _utterance_event(self, u: Utterance) -> None:
        if u.status == "withdrawn":
            self._withdraw(u.id)
            return
        self._utterances.append(u)
        self.counts["utterances" if u.status == "final" else "provisional"] += 1

    def _finish_utterances(self, now: float) -> list[EmotionUpdate]:
        out = []
        while self._utterances:
            u = self._utterances[0]
            t0, t1 = u.start - self.cfg.utterance_lead_s, u.end + self.cfg.utterance_tail_s
            if u.id in self._cut_by_input:
                t1 = min(t1, self._input_end(now, t1))
            with self._lock:
                video_in = self.frames.latest is not None and self.frames.latest >= t1
                audio_in = self.audio.t_end is not None and self.audio.t_end >= t1
            video, audio = self.fresh(now)
            if ((video and not video_in) or (audio and not audio_in)) and now - t1 < self.cfg.stale_s:
                break  # the padding after the speech has not arrived yet
            self._utterances.popleft()
            self._cut_by_input.discard(u.id)
            if u.status == "final" and self._confirm(u):
                continue
            update = self._update(t0, t1, now, u.id, cut_audio=True, status=u.status, speech_end=u.end)
            if update is not None:
                out.append(update)
                if u.status == "provisional":
                    self._open[u.id] = OpenAnswer(update)
                if self.cfg.slow in ("utterance", "both"):
                    self._submit(u.id, update)
        return out

    def _input_end(self, now: float, default: float) -> float:
        """The last input common to the fresh modalities (a window must not reach past it), or `default`."""
        video, audio = self.fresh(now)
        with self._lock:
            ends = ([self.frames.latest] if video else []) + ([self.audio.t_end] if audio else [])
        return min(ends) if ends else default

    # -- provisional answers: confirmed or withdrawn --------------------------------------------------
    def _confirm(self, u: Utterance) -> bool:
        """The final end of an utterance: promote its provisional answer when it covers the same speech (True),
        else withdraw that answer (False: the caller computes the final one)."""
        ans = self._open.pop(u.id, None)
        if ans is None:
            return False
        if abs(ans.head.speech_end - u.end) > 1e-6:  # speech went on past the provisional end (cut at max_s)
            self._withdraw_answer(u.id, ans)
            return False
        job = ans.job
        if job is not None and job.started and self.transcript_for(job.window_start, job.window_end) != job.subtitle:
            # a recogniser's text arrived after the provisional LLM job took its prompt: the final answer needs it
            self.counts["withdrawn_late_transcript"] += 1
            self._withdraw_answer(u.id, ans)
            return False
        now = self.clock()
        self.counts["confirmed"] += 1
        self.latency["speech_label"].add((ans.head_done - u.end) * 1000.0)
        self._emit_state(replace(ans.head, status="final", latency_ms=(now - ans.head.window_end) * 1000.0), now,
                         measured=False)
        with self._answer_lock:
            if ans.job is not None and not ans.job.cancel.is_set():
                ans.job.status = "final"
                if ans.job.label_update is not None:  # the label went out provisional: confirm it too
                    label = replace(ans.job.label_update, status="final",
                                    latency_ms=(now - ans.job.window_end) * 1000.0)
                    self._emit_state(label, now, measured=False)
                if ans.job.reasoning is not None and self.on_reasoning is not None:  # and a finished reasoning
                    self.on_reasoning(ReasoningUpdate(u.id, ans.job.reasoning, True, ans.job.window_end, "final"))
        return True

    def _withdraw(self, utterance_id: int) -> None:
        """Speech resumed after a provisional end: forget it (a still waiting event is simply dropped)."""
        waiting = [u for u in self._utterances if u.id == utterance_id and u.status == "provisional"]
        for u in waiting:  # void before it went out (speech resumed within the same step): nothing to take back
            self._utterances.remove(u)
            self.counts["withdrawn_unsent"] += 1
        ans = self._open.pop(utterance_id, None)
        if ans is not None:
            self._withdraw_answer(utterance_id, ans)

    def _withdraw_answer(self, utterance_id: int, ans: OpenAnswer) -> None:
        with self._answer_lock:
            if ans.job is not None:
                ans.job.cancel.set()
                ans.job.status = "withdrawn"
        if self.slow is not None:
            self.slow.cancel(utterance_id)
        self.counts["withdrawn"] += 1
        now = self.clock()
        self._emit_state(replace(ans.head, status="withdrawn", latency_ms=(now - ans.head.window_end) * 1000.0), now,
                         measured=False)

    # -- the fast path ----------------------------------------------------------------------------------
    def _sliding_update(self, now: float) -> EmotionUpdate | None:
        video, audio = self.fresh(now)
        with self._lock:
            ends = ([self.frames.latest] if video else []) + ([self.audio.t_end] if audio else [])
        if not ends:
            self.counts["idle"] += 1
            self.fast_path = "paused: no input"
            return None
        last_arrival = max(([self._last_frame_at] if video else []) + ([self._last_audio_at] if audio else []))
        if now - last_arrival > self.cfg.stale_s / 2:  # the input stopped: its last windows are already out
            self.counts["input_stopped"] += 1
            self.fast_path = "paused: input stopped"
            return None
        t1 = min(ends)
        if t1 <= self._last_sliding_end + 1e-6:  # nothing new since the last window: it would be the same one
            self.counts["no_new_input"] += 1
            self.fast_path = "no new input"
            return None
        self._last_sliding_end, self.fast_path = t1, "running"
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

    def _update(self, t0: float, t1: float, now: float, utterance_id: int, cut_audio: bool, status: str = "final",
                speech_end: float = 0.0) -> EmotionUpdate | None:
        start = self.clock()
        self._fast_idle.clear()  # the LLM worker waits between tokens until this update is out
        try:
            batch = self.assemble(t0, t1, now, cut_audio)
            if batch is None:
                self.counts["idle"] += 1
                return None
            out = self.rt.perceive(*batch)
        finally:
            self._fast_idle.set()
        present = (bool(batch[3][0, 1]), bool(batch[3][0, 2]))
        va = np.asarray(out["va"])[0]
        readings = out.get("readings", [[]])[0]
        done = self.clock()
        update = EmotionUpdate(
            label=out["labels"][0], labels=self.labels, scores=[float(s) for s in np.asarray(out["scores"])[0]],
            valence=float(va[0]), arousal=float(va[1]), window_start=t0, window_end=t1,
            latency_ms=(done - t1) * 1000.0, compute_ms=(done - start) * 1000.0, source="head",
            utterance_id=utterance_id, voice_active=self.tracker.active, present=present, status=status,
            speech_end=speech_end, attributes=[r[0] for r in readings], attribute_values=[r[1] for r in readings],
            attribute_scores=[r[2] for r in readings])
        self._last_head = update
        self._last_tokens = out["tokens"][0], out["token_mask"][0], out.get("evidence", [""])[0]
        if utterance_id and status == "final":
            self.latency["speech_label"].add((done - speech_end) * 1000.0)
        self._emit_state(update, done)
        return update

    def _emit_state(self, update: EmotionUpdate, t: float, measured: bool = True) -> None:
        """Hand an update out; `measured` False for re-published ones (confirmations, withdrawals), which are
        counted apart and left out of the latency and rate statistics."""
        if measured:
            self.latency[latency_kind(update.source, update.utterance_id)].add(update.latency_ms)
            self.rates[update.source].tick(t)
        self.counts[f"{update.source}_updates" if measured else f"{update.source}_{update.status}_republished"] += 1
        if self.on_state is not None:
            self.on_state(update)

    # -- slow path (the LLM worker) -------------------------------------------------------------
    def _submit(self, utterance_id: int, head: EmotionUpdate) -> None:
        if self.slow is None or self._last_tokens is None:
            return
        tokens, mask, evidence = self._last_tokens
        self._last_slow = self.clock()
        job = SlowJob(utterance_id, tokens, mask, head.window_start, head.window_end, head.valence, head.arousal,
                      head.present, status=head.status, speech_end=head.speech_end, evidence=evidence)
        if head.status == "provisional" and utterance_id in self._open:
            self._open[utterance_id].job = job
        self.slow.submit(job)

    def _submit_timer(self, now: float) -> None:
        self._last_slow = now
        if self._last_head is not None and now - self._last_head.window_end <= self.cfg.stale_s + self.window_s:
            self._submit(self.tracker.take_id(), replace(self._last_head, status="final", speech_end=0.0))

    def _llm_gate(self, job: SlowJob) -> bool:
        """Called by the decode loop before each token: waits while a fast-path update computes (when
        pause_for_fast), and says whether to go on (False once the job is withdrawn)."""
        if self.pause_for_fast and not self._fast_idle.is_set():
            self.counts["llm_paused_for_fast"] += 1
            self._fast_idle.wait(FAST_PAUSE_MAX_S)
        return not job.cancel.is_set()

    def _slow_work(self, job: SlowJob) -> None:
        """One LLM job. With reasoning on, ONE generation (the `reason` task) gives both: the reason streams token
        by token and the label is its conclusion (`reason_conclusion`, as `emo-edge eval --answer-from reason`
        reads it), so label and reason cannot disagree; the label goes out when the reason ends, just before its
        last (done) update. With reasoning off, the short `emotion` answer gives the label (LABEL_TOKENS)."""
        if job.cancel.is_set():
            return
        start = self.clock()
        subtitle = self.transcript_for(job.window_start, job.window_end)  # at job start: late text still counts
        job.subtitle, job.started = subtitle, True
        if not self.cfg.reason:
            answer = self.rt.answer(job.tokens, job.token_mask, "emotion", subtitle, max_new_tokens=LABEL_TOKENS,
                                    gate=lambda: self._llm_gate(job), evidence=job.evidence)
            with self._answer_lock:
                if not job.cancel.is_set():
                    self._emit_label(job, parse_label(answer, self.labels), start, subtitle)
            return
        reason = self._stream_reason(job, subtitle)
        with self._answer_lock:  # label and finished reason together: a confirmation sees both or neither
            if reason is None:
                return
            if job.cancel.is_set():  # withdrawn after its last token: end the stream subscribers saw, no label
                job.reasoning = reason
                if self.on_reasoning is not None:
                    self.on_reasoning(ReasoningUpdate(job.utterance_id, reason, True, job.window_end, job.status))
                return
            self._emit_label(job, reason_conclusion(reason, self.labels), start, subtitle)
            job.reasoning = reason
            if self.on_reasoning is not None:
                self.on_reasoning(ReasoningUpdate(job.utterance_id, reason, True, job.window_end, job.status))

    def _emit_label(self, job: SlowJob, label: str | None, start: float, subtitle: str | None) -> None:
        """The job's LLM state (label "" when none could be read, counted as llm_unparsed); under _answer_lock."""
        if label is None:
            self.counts["llm_unparsed"] += 1
        done = self.clock()
        job.label_update = EmotionUpdate(
            label=label or "", labels=[], scores=[], valence=job.valence, arousal=job.arousal,
            window_start=job.window_start, window_end=job.window_end, latency_ms=(done - job.window_end) * 1000.0,
            compute_ms=(done - start) * 1000.0, source="llm", utterance_id=job.utterance_id,
            voice_active=self.tracker.active, present=job.present, status=job.status, speech_end=job.speech_end,
            transcript=subtitle)
        self._emit_state(job.label_update, done)

    def _stream_reason(self, job: SlowJob, subtitle: str | None) -> str | None:
        """Stream the reason's pieces (done=False) as they come; returns the whole reason, or None when the job
        was withdrawn mid-way (a stream subscribers saw part of is then ended as withdrawn)."""
        text: list[str] = []

        def on_token(piece: str) -> None:
            text.append(piece)
            with self._answer_lock:  # the status as of now: a confirmation mid-stream turns it final
                if self.on_reasoning is not None and job.status != "withdrawn":
                    self.on_reasoning(ReasoningUpdate(job.utterance_id, "".join(text), False, job.window_end,
                                                      job.status))

        final = self.rt.answer(job.tokens, job.token_mask, "reason", subtitle,
                               max_new_tokens=self.cfg.max_reason_tokens, on_token=on_token,
                               gate=lambda: self._llm_gate(job), evidence=job.evidence)
        if not job.cancel.is_set():
            return final
        self.counts["llm_cancelled_mid_reasoning"] += 1
        if text and self.on_reasoning is not None:
            with self._answer_lock:
                job.reasoning = "".join(text).strip()
                self.on_reasoning(ReasoningUpdate(job.utterance_id, job.reasoning, True, job.window_end, job.status))
        return None

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
            self.step_isolated()

    def step_isolated(self, now: float | None = None) -> list[EmotionUpdate]:
        """`step` as the step thread runs it: an exception is counted (faults.step_error, errors.step), handed to
        on_error, and the stream goes on with the next step."""
        try:
            return self.step(now)
        except Exception as e:  # a failing window is counted and reported; the stream goes on
            self.faults["step_error"] += 1
            self.last_error = f"{type(e).__name__}: {e}"
            self._error("step", e)
            return []

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
                       / self.audio.rate, "audio_gaps": self.audio.gaps,
                       "audio_gap_s": round(self.audio.gap_samples / self.audio.rate, 3)}
        video, audio = self.fresh(now)
        return {
            "rates_hz": {k: round(m.rate(now), 3) for k, m in self.rates.items()},
            "latency_ms": {k: v.summary() for k, v in self.latency.items()},
            "counts": dict(self.counts), "faults": dict(self.faults), "errors": dict(self.errors),
            "slow": dict(self.slow.counts) if self.slow is not None else {},
            "slow_last_error": self.slow.last_error if self.slow is not None else None,
            "step_last_error": self.last_error, "buffers": buffers,
            "inputs_fresh": {"video": video, "audio": audio}, "voice_active": self.tracker.active,
            "fast_path": self.fast_path, "provisional_open": len(self._open), "llm_pause_for_fast": self.pause_for_fast,
            "llm_threads": self.llm_threads,
        }
