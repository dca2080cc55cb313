"""The live runtime's logic on the CPU: ring buffers, VAD and utterances, windows, fast/slow paths, faults.

A fake model stands in for the bundle (its answers are scripted); the clock is simulated, so every
timing here is exact. The real bundle under a real stream is exercised by tests/test_ros_node.py.
"""

from __future__ import annotations

import shutil
import threading
import time
from dataclasses import replace

import numpy as np
import pytest
from scipy.signal import resample_poly

from emo_edge.config import FrontendConfig
from emo_edge.runtime.buffers import AudioRing, FrameRing, StreamInputError, resample_frames
from emo_edge.runtime.stream import SlowJob, SlowPath, StreamConfig, StreamRuntime, to_mono_float
from emo_edge.runtime.vad import EnergyVad, UtteranceTracker, WebRtcVad, webrtc_available

LABELS = ["neutral", "happy", "sad", "angry", "worried", "surprise"]
FE = FrontendConfig(window_seconds=2.0, n_frames=4, frame_size=16, image_size=24)
RATE = FE.sample_rate


class FakeModel:
    """`EmotionRuntime`'s interface: 'happy' when the window has audio energy, else 'neutral'. Its LLM answers
    `emotion` (the one-word task) and `reason` (a reason with its conclusion); they may be set to disagree."""

    labels = LABELS

    def __init__(self, answer_gate: threading.Event | None = None, emotion: str = "happy",
                 reason: str = "The voice is loud and bright, so the person is happy."):
        self.gate = answer_gate
        self.emotion, self.reason = emotion, reason
        self.perceived: list[np.ndarray] = []  # present flags per call
        self.answers = 0
        self.tasks: list[str] = []  # the task of each LLM call
        self.subtitles: list[str | None] = []  # the text modality of each LLM call (None: absent)
        self.evidences: list[str | None] = []  # the evidence text each LLM call was given
        self.fail_perceive: set[int] = set()  # perceive call numbers (1-based) that raise, for fault isolation
        self.fail_answers: set[int] = set()  # answer call numbers that raise

    def perceive(self, image, frames, mel, present):
        assert image.shape == (1, 24, 24, 3) and frames.shape == (1, 4, 16, 16, 3) and mel.shape[:2] == (1, 64)
        self.perceived.append(present[0].copy())
        if len(self.perceived) in self.fail_perceive:
            raise RuntimeError(f"perceive call {len(self.perceived)} failed on purpose")
        loud = present[0, 2] > 0 and mel.max() > 0.5
        scores = np.full((1, 6), 0.02, np.float32)
        scores[0, 1 if loud else 0] = 0.9
        return {"scores": scores, "labels": ["happy" if loud else "neutral"], "va": np.array([[0.5, 0.3]]),
                "tokens": np.zeros((1, 4, 8), np.float32), "token_mask": np.ones((1, 4), np.float32)}

    def answer(self, tokens, token_mask, task, subtitle, max_new_tokens=96, on_token=None, gate=None, evidence=None):
        if self.gate is not None:
            assert self.gate.wait(10)
        self.answers += 1
        self.subtitles.append(subtitle)
        self.evidences.append(evidence)
        self.tasks.append(task)
        if self.answers in self.fail_answers:
            raise RuntimeError(f"answer call {self.answers} failed on purpose")
        text = self.emotion if task == "emotion" else self.reason
        out = []
        for piece in text.split(" "):
            if gate is not None and not gate():  # the runtime's gate: stop between two tokens when withdrawn
                return " ".join(out)
            out.append(piece)
            if on_token is not None:
                on_token(piece + " ")
        return text


class Sim:
    """Feeds a StreamRuntime on a simulated clock: 30 fps frames and 20 ms audio chunks."""

    def __init__(self, cfg: StreamConfig, model: FakeModel | None = None):
        self.t = 0.0
        self.states, self.reasoning = [], []
        self.model = model or FakeModel()
        self.rt = StreamRuntime(self.model, FE, cfg, clock=lambda: self.t, on_state=self.states.append,
                                on_reasoning=self.reasoning.append)

    def run(self, seconds: float, wave_fn=None, frames: bool = True, audio: bool = True,
            isolated: bool = False) -> None:
        """isolated: step as the runtime's step thread does (exceptions caught and counted)."""
        for _ in range(int(round(seconds / 0.02))):
            if audio:
                k = np.arange(320) + int(round(self.t * RATE))
                self.rt.push_audio(self.t, wave_fn(k) if wave_fn else np.zeros(320, np.float32), RATE)
            if frames:
                for j in range(int(np.ceil(self.t * 30 - 1e-9)), int(np.ceil((self.t + 0.02) * 30 - 1e-9))):
                    self.rt.push_frame(j / 30, np.full((48, 64, 3), j % 256, np.uint8))
            self.t = round(self.t + 0.02, 6)
            self.rt.step_isolated() if isolated else self.rt.step()


def tone(k: np.ndarray) -> np.ndarray:
    """A loud 220 Hz tone with 5 Hz amplitude modulation (speech-like energy for the energy VAD)."""
    return (0.5 * np.sin(2 * np.pi * 220 * k / RATE) * (0.6 + 0.4 * np.sin(2 * np.pi * 5 * k / RATE))).astype(
        np.float32)


# -- buffers ----------------------------------------------------------------------------------------

def test_frame_ring_is_bounded_and_refuses_time_going_back():
    ring = FrameRing(seconds=1.0, max_frames=10)
    for i in range(100):  # a burst: 100 frames in 0.5 s
        ring.push(i * 0.005, np.zeros((2, 2, 3), np.uint8))
    assert len(ring) == 10 and ring.latest == pytest.approx(0.495)
    ring.push(5.0, np.zeros((2, 2, 3), np.uint8))
    assert len(ring) == 1  # older than 1 s before the newest: gone
    with pytest.raises(StreamInputError) as e:
        ring.push(4.0, np.zeros((2, 2, 3), np.uint8))
    assert e.value.kind == "time_backwards" and len(ring) == 1


def test_audio_ring_wraps_pads_gaps_and_reads_by_time():
    ring = AudioRing(rate=100, seconds=1.0)  # 100 samples
    for i in range(15):  # 1.5 s of a ramp in 0.1 s chunks: wraps around once
        ring.push(i * 0.1, np.arange(i * 10, i * 10 + 10, dtype=np.float32))
    assert ring.written == 150 and ring.t_end == pytest.approx(1.5) and ring.gaps == 0
    np.testing.assert_array_equal(ring.window(1.0, 5), [100, 101, 102, 103, 104])
    np.testing.assert_array_equal(ring.read(40, 45), np.zeros(5))  # overwritten: zeros, not stale data
    ring.push(2.0, np.full(10, 7, np.float32))  # 0.5 s gap -> 50 samples of silence first
    assert ring.written == 150 + 50 + 10 and ring.gaps == 1 and ring.gap_samples == 50
    np.testing.assert_array_equal(ring.window(1.45, 10), [145, 146, 147, 148, 149, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(ring.window(2.0, 10), np.full(10, 7))
    with pytest.raises(StreamInputError, match="before the previous"):
        ring.push(1.9, np.zeros(10, np.float32))
    ring.push(2.15, np.zeros(10, np.float32))  # 0.05 s late: jitter, appended back to back, no gap
    ring.push(4.0, np.zeros(10, np.float32))  # 1.75 s missing, more than the buffer: the fill is capped, the count not
    assert ring.gaps == 2 and ring.gap_samples == 50 + 175 and ring.written == 210 + 10 + 100 + 10


def test_resample_frames_evens_out_bursts_and_drops():
    times = np.concatenate([np.linspace(0, 0.1, 30), [0.9]])  # a burst, then a 0.8 s drop
    frames = [np.full((4, 4, 3), i, np.uint8) for i in range(len(times))]
    out = resample_frames(times, frames, 0.0, 1.0, fps=10)
    assert out.shape == (10, 4, 4, 3)
    # grid at 0.05, 0.15, .., 0.95 s: one frame of the burst per slot, then held through the drop
    assert [int(f[0, 0, 0]) for f in out] == [14] + [29] * 8 + [30]


def test_to_mono_float_converts_and_refuses():
    np.testing.assert_allclose(to_mono_float(np.array([[16384, -16384], [0, 0]], np.int16)), [0.0, 0.0])
    np.testing.assert_allclose(to_mono_float(np.array([16384], np.int16)), [0.5])
    for bad, kind in ((np.array([1, 2], np.uint8), "audio_format"), (np.zeros((0,), np.float32), "audio_format"),
                      (np.array([np.nan], np.float32), "audio_format")):
        with pytest.raises(StreamInputError) as e:
            to_mono_float(bad)
        assert e.value.kind == kind


# -- VAD and utterances -----------------------------------------------------------------------------

def test_utterance_tracker_starts_ends_and_drops_short_bursts():
    tr = UtteranceTracker(frame_s=0.03, start_s=0.09, hangover_s=0.3, max_s=2.0, min_s=0.3)
    flags = [False] * 10 + [True] * 2 + [False] * 20 + [True] * 30 + [False] * 5 + [True] * 10 + [False] * 20
    ended = [u for i, f in enumerate(flags) if (u := tr.update(i * 0.03, f)) is not None]
    assert len(ended) == 1  # the 2-frame blip never starts one; the 5-frame pause does not end one
    u = ended[0]
    assert u.id == 1 and u.start == pytest.approx(32 * 0.03) and u.end == pytest.approx(77 * 0.03)
    long = [tr.update(3.0 + i * 0.03, True) for i in range(100)]
    assert sum(u is not None for u in long) == 1  # cut at max_s = 2 s


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (scripts/setup.sh)")
@pytest.mark.parametrize("kind", ["webrtc", "energy"])
def test_vad_finds_real_speech(kind):
    if kind == "webrtc" and not webrtc_available():
        pytest.skip("webrtcvad is not installed (pip install webrtcvad-wheels)")
    from emo_edge.data.synth import RESAMPLE, speak

    speech = resample_poly(speak("The weather was fine all day long.", "en-us", 50, 160, 100, "medium"), *RESAMPLE)
    rng = np.random.default_rng(0)
    wave = np.concatenate([np.zeros(RATE), speech / np.abs(speech).max() * 0.5, np.zeros(RATE)]).astype(np.float32)
    wave += 0.003 * rng.standard_normal(wave.size).astype(np.float32)  # a quiet room (~ -50 dBFS)
    vad = WebRtcVad(RATE, 1) if kind == "webrtc" else EnergyVad()
    n = 480
    flags = np.array([vad.is_speech(wave[i:i + n]) for i in range(0, wave.size - n, n)])
    t = np.arange(flags.size) * 0.03
    in_speech = (t > 1.1) & (t < 1.0 + speech.size / RATE - 0.3)
    assert flags[in_speech].mean() > 0.7 and flags[(t > 0.3) & (t < 0.9)].mean() < 0.1  # after 0.3 s to adapt


def test_utterance_tracker_ends_early_then_withdraws_or_confirms():
    tr = UtteranceTracker(frame_s=0.03, start_s=0.09, hangover_s=0.3, max_s=5.0, min_s=0.3, early_s=0.15)
    # 0.6 s speech, a 0.21 s pause (> early_s, < hangover), 0.6 s speech, then silence
    flags = [False] * 5 + [True] * 20 + [False] * 7 + [True] * 20 + [False] * 15
    events = [(i, u) for i, f in enumerate(flags) if (u := tr.update(i * 0.03, f)) is not None]
    assert [(i, u.status, u.id) for i, u in events] == [
        (29, "provisional", 1),  # 5 silent frames (0.15 s) after the first run
        (32, "withdrawn", 1),  # speech again on frame 32
        (56, "provisional", 1),  # the same utterance ends early again
        (61, "final", 1)]  # and the hangover (10 silent frames) confirms it
    assert events[0][1].end == pytest.approx(25 * 0.03) and events[2][1].end == pytest.approx(52 * 0.03)
    assert events[3][1].start == pytest.approx(5 * 0.03) and events[3][1].end == pytest.approx(52 * 0.03)
    # too short for min_s: no provisional end, and no final either
    assert [tr.update(3.0 + i * 0.03, f) for i, f in enumerate([True] * 5 + [False] * 12)] == [None] * 17
    with pytest.raises(ValueError, match="early_s"):
        UtteranceTracker(hangover_s=0.3, early_s=0.3)


# -- the stream runtime -------------------------------------------------------------------------------

def test_fast_path_runs_at_its_rate_with_latency_and_missing_modalities():
    sim = Sim(StreamConfig(fast_hz=4, vad="energy", slow="off", stale_s=0.5))
    sim.run(3.0)
    head = [s for s in sim.states if s.source == "head"]
    assert 11 <= len(head) <= 13  # 4 Hz over 3 s
    assert all(s.utterance_id == 0 and s.present == (True, True) and s.label == "neutral" for s in head)
    assert all(s.window_end - s.window_start == pytest.approx(2.0) for s in head)
    lat = sim.rt.stats()["latency_ms"]["head"]
    assert lat["n"] == len(head) and lat["median_ms"] is not None and lat["p95_ms"] >= lat["median_ms"]
    sim.run(2.0, frames=False)  # the camera is gone: after stale_s the model gets video as absent
    assert sim.states[-1].present == (False, True)
    sim.run(2.0, audio=False)  # camera back, microphone gone
    assert sim.states[-1].present == (True, False)
    n = len(sim.states)
    sim.run(2.0, frames=False, audio=False)  # nothing at all: no updates, counted as idle
    assert len(sim.states) <= n + 2 and sim.rt.stats()["counts"]["idle"] > 0


class ReadingModel(FakeModel):
    """A model with an attribute head: its fast path also names what it reads."""

    def perceive(self, image, frames, mel, present):
        out = super().perceive(image, frames, mel, present)
        out["readings"] = [[("gaze", "averted", 0.8), ("pause", "fluent", 0.6)]]
        out["evidence"] = [f" Perceived: call {len(self.perceived)}."]
        return out


def test_head_states_carry_the_attribute_readings_and_llm_states_none():
    sim = Sim(StreamConfig(vad="energy", slow="utterance", utterance_tail_s=0.1, utterance_early_s=0),
              ReadingModel())
    sim.run(1.0)
    sim.run(1.5, wave_fn=tone)
    sim.run(1.5)
    assert sim.rt.slow.wait_idle(10)
    head = [u for u in sim.states if u.source == "head"]
    llm = [u for u in sim.states if u.source == "llm"]
    assert head and llm
    assert all(u.attributes == ["gaze", "pause"] and u.attribute_values == ["averted", "fluent"]
               and u.attribute_scores == [0.8, 0.6] for u in head)
    assert all(u.attributes == [] and u.attribute_scores == [] for u in llm)
    # the LLM is asked with the evidence text of a fast-path call (the readings in words), never without it
    said = {f" Perceived: call {i}." for i in range(1, len(sim.model.perceived) + 1)}
    assert sim.model.evidences and all(e in said for e in sim.model.evidences)
    plain = Sim(StreamConfig(vad="energy", slow="off"))
    plain.run(1.0)
    assert plain.states and all(u.attributes == [] for u in plain.states)  # a model without readings


def test_utterance_end_gives_head_state_then_llm_label_and_streamed_reasoning():
    # early ends off: the answer waits for the hangover (the early path is tested below)
    sim = Sim(StreamConfig(fast_hz=0, vad="energy", slow="utterance", utterance_tail_s=0.1, utterance_early_s=0))
    sim.run(1.0)
    sim.run(1.5, wave_fn=tone)  # speech from t=1.0 to 2.5
    sim.run(1.5)
    assert sim.rt.slow.wait_idle(10)
    head = [s for s in sim.states if s.source == "head"]
    assert len(head) == 1 and head[0].utterance_id == 1 and head[0].label == "happy"
    assert head[0].window_start == pytest.approx(1.0, abs=0.04) and head[0].window_end == pytest.approx(2.6, abs=0.04)
    # the state comes once the tail has arrived, then waits for the next step: latency >= 0 and < hangover + tick
    assert 0 <= head[0].latency_ms <= 600
    # kept apart from sliding-window latencies (fast_hz 0: there are none), as the node reports them
    lat = sim.rt.stats()["latency_ms"]
    assert lat["head_utterance"]["n"] == 1 and lat["head"]["n"] == 0, lat
    llm = [s for s in sim.states if s.source == "llm"]
    assert len(llm) == 1 and llm[0].label == "happy" and llm[0].utterance_id == 1 and llm[0].scores == []
    texts = [r.text for r in sim.reasoning]
    assert len(texts) > 3 and [r.done for r in sim.reasoning] == [False] * (len(texts) - 1) + [True]
    assert all(b.startswith(a.strip()) for a, b in zip(texts, texts[1:], strict=False))
    assert texts[-1].endswith("happy.") and sim.reasoning[-1].utterance_id == 1


def _one_utterance(cfg: StreamConfig, model: FakeModel) -> tuple[Sim, list]:
    """Speech from 1.0 to 2.5 s with early ends off; returns the Sim and its LLM states and reasoning updates
    in the order they were handed out."""
    sim = Sim(cfg, model)
    events: list = []
    sim.rt.on_state = lambda u: (sim.states.append(u), events.append(u))
    sim.rt.on_reasoning = lambda r: (sim.reasoning.append(r), events.append(r))
    sim.run(1.0)
    sim.run(1.5, wave_fn=tone)
    sim.run(1.5)
    assert sim.rt.slow.wait_idle(10)
    return sim, [e for e in events if getattr(e, "source", "llm") == "llm"]


def test_the_llm_label_is_the_reasons_conclusion_so_they_cannot_disagree():
    """The quickstart case: the one-word answer says sad, the reason ends "The answer is neutral." With reasoning
    on, ONE generation (the reason) gives both and the label is its conclusion: neutral. (The runtime before
    this read the label from a separate `emotion` generation: this test failed there with label "sad" and two
    LLM calls.) With reasoning off the short answer is still the label."""
    model = FakeModel(emotion="sad", reason="The face is flat and the voice calm. The answer is neutral.")
    cfg = StreamConfig(fast_hz=0, vad="energy", slow="utterance", utterance_early_s=0)
    sim, events = _one_utterance(cfg, model)
    llm = [e for e in events if hasattr(e, "source")]
    assert [s.label for s in llm] == ["neutral"] and model.tasks == ["reason"]
    # the reason streams first; its conclusion goes out as the label, then the reason's last (done) update
    kinds = ["label" if hasattr(e, "source") else "done" if e.done else "piece" for e in events]
    assert kinds[-2:] == ["label", "done"] and set(kinds[:-2]) == {"piece"}, kinds
    assert events[-1].text == model.reason and llm[0].utterance_id == events[-1].utterance_id == 1
    assert "llm_unparsed" not in sim.rt.stats()["counts"]

    off, _ = _one_utterance(replace(cfg, reason=False), FakeModel(emotion="sad", reason=model.reason))
    assert [s.label for s in off.states if s.source == "llm"] == ["sad"] and off.model.tasks == ["emotion"]
    assert off.reasoning == []


def test_a_reason_naming_no_label_gives_an_empty_label_counted_unparsed():
    sim, _ = _one_utterance(StreamConfig(fast_hz=0, vad="energy", utterance_early_s=0),
                            FakeModel(reason="The voice is loud and bright."))
    assert [s.label for s in sim.states if s.source == "llm"] == [""]
    assert sim.rt.stats()["counts"]["llm_unparsed"] == 1


def _utterance_states(sim: Sim, source: str, status: str | None = None) -> list:
    return [s for s in sim.states if s.source == source and s.utterance_id > 0 and status in (None, s.status)]


def test_pause_inside_an_utterance_withdraws_the_early_answer_and_ends_with_one_final_covering_it():
    # two clips' worth of speech joined by a 300 ms pause: > utterance_early_s (0.15 s), < the 0.5 s hangover
    gate = threading.Event()  # holds the LLM worker, so the withdrawal finds its job unfinished
    sim = Sim(StreamConfig(fast_hz=0, vad="energy", slow="utterance"), FakeModel(answer_gate=gate))
    sim.run(1.0)
    sim.run(1.0, wave_fn=tone)  # speech 1.0 .. 2.0
    sim.run(0.3)
    early = _utterance_states(sim, "head", "provisional")
    assert len(early) == 1 and early[0].utterance_id == 1  # answered in the pause, before the hangover
    assert early[0].speech_end == pytest.approx(2.0, abs=0.04) and early[0].window_end < 2.3
    sim.run(1.0, wave_fn=tone)  # speech again 2.3 .. 3.3: the early answer is void
    withdrawn = [s for s in sim.states if s.status == "withdrawn"]
    assert len(withdrawn) == 1 and withdrawn[0].utterance_id == 1
    gate.set()
    sim.run(1.5)
    assert sim.rt.slow.wait_idle(10)
    finals = _utterance_states(sim, "head", "final")
    assert len(finals) == 1 and finals[0].utterance_id == 1
    assert finals[0].window_start == pytest.approx(1.0, abs=0.04)
    assert finals[0].speech_end == pytest.approx(3.3, abs=0.04)  # covers both parts
    llm_final = _utterance_states(sim, "llm", "final")
    assert len(llm_final) == 1 and llm_final[0].window_end == finals[0].window_end
    # the cancelled job never answered (a provisional label of the second, confirmed end may be there)
    assert all(s.speech_end > 3.0 for s in _utterance_states(sim, "llm"))
    assert "withdrawn" not in {r.status for r in sim.reasoning} and sim.reasoning[-1].done
    st = sim.rt.stats()
    assert st["counts"]["withdrawn"] == 1 and st["counts"]["provisional"] == 2 and st["counts"]["utterances"] == 1
    assert st["slow"]["cancelled"] == 1 and st["provisional_open"] == 0


def test_early_answer_is_confirmed_without_recomputing():
    for hold_llm in (True, False):  # the LLM label still running at the confirmation, or already out provisional
        gate = threading.Event()
        if not hold_llm:
            gate.set()
        model = FakeModel(answer_gate=gate)
        sim = Sim(StreamConfig(fast_hz=0, vad="energy", slow="utterance"), model)
        sim.run(1.0)
        sim.run(1.5, wave_fn=tone)  # speech 1.0 .. 2.5
        sim.run(0.3)
        assert len(_utterance_states(sim, "head", "provisional")) == 1
        if not hold_llm:
            assert sim.rt.slow.wait_idle(10)  # label and reasoning out, provisional
            assert len(_utterance_states(sim, "llm", "provisional")) == 1
        sim.run(1.0)  # the hangover passes: confirmed
        gate.set()
        assert sim.rt.slow.wait_idle(10)
        heads, llms = _utterance_states(sim, "head", "final"), _utterance_states(sim, "llm", "final")
        assert len(heads) == 1 and len(llms) == 1, (hold_llm, sim.states)
        early = _utterance_states(sim, "head", "provisional")[0]
        assert heads[0].window_end == early.window_end and heads[0].label == early.label == "happy"
        assert model.tasks == ["reason"] and sim.rt.stats()["counts"]["confirmed"] == 1  # one generation: both
        done = [r for r in sim.reasoning if r.done]
        assert [r.status for r in done] == (["final"] if hold_llm else ["provisional", "final"])
        assert done[-1].text.endswith("happy.")
        # speech end -> the label that stood: the early one, one VAD frame + a step past utterance_early_s
        lat = sim.rt.stats()["latency_ms"]["speech_label"]
        assert lat["n"] == 1 and 150 <= lat["median_ms"] <= 150 + 30 + 20 + 1, lat


def test_end_of_input_gives_no_state_past_the_last_input():
    sim = Sim(StreamConfig(fast_hz=4, vad="energy", slow="utterance", stale_s=0.5))
    sim.run(2.0)
    sim.run(0.8, wave_fn=tone)  # speech up to the end of the input: the VAD never hears it end
    sim.run(0.1, wave_fn=tone, frames=False)  # the video ends 0.1 s before the audio (as a file's tracks may)
    last_input = sim.t
    n = len(sim.states)
    sim.run(3.0, frames=False, audio=False)
    after = sim.states[n:]
    assert all(s.window_end <= last_input + 1e-6 for s in sim.states), [s.window_end for s in after]
    sliding = [s.window_end for s in sim.states if s.utterance_id == 0]
    assert len(sliding) == len(set(sliding))  # no window computed twice
    # nor again without the video once it went stale: the input had stopped by then
    assert all(s.present == (True, True) for s in sim.states), [(s.window_end, s.present) for s in after]
    finals = _utterance_states(sim, "head", "final")  # the input's end ended the utterance
    assert len(finals) == 1 and sim.rt.stats()["counts"]["utterances_ended_by_input"] == 1
    st = sim.rt.stats()
    assert st["fast_path"] == "paused: no input" and st["counts"]["input_stopped"] > 0
    sim.run(1.0)  # input returns: the fast path with it
    assert sim.rt.stats()["fast_path"] == "running" and sim.states[-1].window_end > last_input


def test_llm_waits_between_tokens_while_a_fast_update_computes():
    for pause in (True, False):
        sim = Sim(StreamConfig(fast_hz=0, vad="energy", slow="off", llm_pause_for_fast="on" if pause else "off"))
        rt, waited = sim.rt, []
        job = SlowJob(1, np.zeros((1, 1)), np.ones(1), 0, 1, 0, 0, (True, True))
        rt._fast_idle.clear()  # as during a fast-path update
        threading.Timer(0.2, rt._fast_idle.set).start()
        t0 = time.monotonic()
        assert rt._llm_gate(job)
        waited.append(time.monotonic() - t0)
        assert (waited[0] >= 0.15) == pause, waited
        job.cancel.set()
        assert not rt._llm_gate(job)
    assert StreamRuntime(FakeModel(), FE, StreamConfig(slow="off")).pause_for_fast  # the default: pause


def test_busy_slow_path_coalesces_or_drops_and_never_queues():
    for policy, expect in (("coalesce", {"submitted": 4, "coalesced": 2, "done": 2}),
                           ("drop", {"submitted": 4, "dropped": 3, "done": 1})):
        gate, started, ran = threading.Event(), threading.Event(), []

        def work(job, gate=gate, started=started, ran=ran):
            started.set()
            assert gate.wait(10)
            ran.append(job.utterance_id)

        slow = SlowPath(work, policy)
        jobs = [SlowJob(i, np.zeros((1, 1)), np.ones(1), 0, 1, 0, 0, (True, True)) for i in range(1, 5)]
        outcomes = [slow.submit(jobs[0])]
        assert started.wait(10)  # the worker is busy with the first job
        outcomes += [slow.submit(j) for j in jobs[1:]]
        gate.set()
        assert slow.wait_idle(10)
        slow.close()
        assert {k: slow.counts[k] for k in expect} == expect
        if policy == "coalesce":
            assert outcomes == ["started", "waiting", "coalesced", "coalesced"] and ran == [1, 4]
        else:
            assert outcomes == ["started", "dropped", "dropped", "dropped"] and ran == [1]


def test_timer_triggers_the_slow_path_without_speech():
    sim = Sim(StreamConfig(fast_hz=2, vad="energy", slow="timer", slow_period_s=1.0))
    sim.run(3.5)
    assert sim.rt.slow.wait_idle(10)
    llm = [s for s in sim.states if s.source == "llm"]
    assert 2 <= len(llm) <= 4 and len({s.utterance_id for s in llm}) == len(llm)


def test_faults_are_refused_counted_and_the_stream_goes_on():
    sim = Sim(StreamConfig(fast_hz=2, vad="energy", slow="off"))
    sim.run(1.0)
    rt = sim.rt
    cases = [
        (lambda: rt.push_frame(sim.t, np.zeros((48, 64), np.uint8)), "frame_format"),
        (lambda: rt.push_frame(sim.t, np.zeros((48, 64, 3), np.float32)), "frame_format"),
        (lambda: rt.push_audio(sim.t, np.zeros(441, np.float32), 44100), "audio_rate"),
        (lambda: rt.push_audio(sim.t, np.zeros(320, np.uint8), RATE), "audio_format"),
        (lambda: rt.push_frame(sim.t - 5, np.zeros((48, 64, 3), np.uint8)), "time_backwards"),
        (lambda: rt.push_audio(sim.t - 5, np.zeros(320, np.float32), RATE), "time_backwards"),
    ]
    for call, kind in cases:
        with pytest.raises(StreamInputError) as e:
            call()
        assert e.value.kind == kind
    n = len(sim.states)
    sim.run(1.0)
    assert len(sim.states) >= n + 2
    assert rt.stats()["faults"] == {"frame_format": 2, "audio_rate": 1, "audio_format": 1, "time_backwards": 2}


def test_memory_stays_bounded_under_a_burst():
    sim = Sim(StreamConfig(fast_hz=1, vad="energy", slow="off", buffer_s=3.0, max_frames=50, max_side=32,
                           utterance_max_s=2.0))
    for i in range(3000):  # 10 s at 300 fps (10x), frames 480x640 stored at most 32 px on a side
        sim.rt.push_frame(i / 300, np.zeros((480, 640, 3), np.uint8))
    assert len(sim.rt.frames) == 50 and max(f.shape[:2] for _, f in sim.rt.frames._items) == (24, 32)
    assert sim.rt.audio.capacity == 3 * RATE


def test_config_rejects_impossible_settings():
    for bad in ({"vad": "silero"}, {"slow": "always"}, {"slow_policy": "queue"}, {"fast_hz": -1},
                {"window_s": 20.0}, {"utterance_max_s": 20.0}, {"utterance_early_s": 0.5}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            StreamConfig(**bad)


# -- transcripts: the text modality by time ----------------------------------------------------------

def _utterance_with_text(cfg: StreamConfig, text_at: float | None, text: str = "I got the job") -> Sim:
    """Speech from 1.0 to 2.5 s; a transcript pushed at `text_at` (None: none); returns the finished Sim."""
    sim = Sim(cfg)
    if text_at is not None:
        sim.rt.push_transcript(text_at, text)
    sim.run(1.0)
    sim.run(1.5, wave_fn=tone)
    sim.run(1.5)
    assert sim.rt.slow.wait_idle(10)
    return sim


def test_transcript_within_the_utterance_reaches_the_llm_prompt():
    sim = _utterance_with_text(StreamConfig(fast_hz=0, vad="energy", transcript_slack_s=1.0), text_at=1.2)
    assert sim.model.subtitles == ["I got the job"]  # the reason's prompt (the label is its conclusion)
    llm = [s for s in sim.states if s.source == "llm" and s.status == "final"]
    assert len(llm) == 1 and llm[0].transcript == "I got the job"
    assert all(s.transcript is None for s in sim.states if s.source == "head")  # the head takes no text


def test_a_transcript_arriving_after_the_provisional_answer_is_in_the_final_one():
    """A recogniser's text typically lands after the speech ends: the provisional LLM job has already taken its
    prompt without it, so the confirmation must not promote that answer but compute the final one with the text."""
    sim = Sim(StreamConfig(fast_hz=0, vad="energy", utterance_early_s=0.15, utterance_hangover_s=0.5))
    sim.run(1.0)
    sim.run(1.5, wave_fn=tone)
    sim.run(0.3)  # past the early end, before the hangover: the provisional job ran without text
    assert sim.rt.slow.wait_idle(10)
    assert [s.status for s in sim.states if s.source == "llm"] == ["provisional"]
    sim.rt.push_transcript(2.4, "I got the job")
    sim.run(1.2)
    assert sim.rt.slow.wait_idle(10)
    final = [s for s in sim.states if s.source == "llm" and s.status == "final"]
    assert [s.transcript for s in final] == ["I got the job"]
    assert sim.rt.stats()["counts"]["withdrawn_late_transcript"] == 1


def test_stale_or_missing_transcript_leaves_text_absent_or_the_fixed_subtitle():
    stale = _utterance_with_text(StreamConfig(fast_hz=0, vad="energy", transcript_slack_s=0.5), text_at=0.1)
    assert stale.model.subtitles == [None]  # 0.9 s before the onset, outside 0.5 s of slack
    assert [s.transcript for s in stale.states if s.source == "llm" and s.status == "final"] == [None]
    fixed = _utterance_with_text(StreamConfig(fast_hz=0, vad="energy", subtitle="fixed words"), text_at=None)
    assert fixed.model.subtitles == ["fixed words"]
    no_reason = _utterance_with_text(StreamConfig(fast_hz=0, vad="energy", reason=False, subtitle="fixed words"),
                                     text_at=None)
    assert no_reason.model.subtitles == ["fixed words"] and no_reason.model.tasks == ["emotion"]


def test_transcripts_of_one_utterance_are_joined_in_time_order():
    sim = Sim(StreamConfig(fast_hz=0, vad="energy"))
    sim.rt.push_transcript(2.0, "second part")
    sim.rt.push_transcript(1.5, " first part ")
    sim.rt.push_transcript(1.7, "   ")  # empty: ignored
    assert sim.rt.transcript_for(1.0, 2.5) == "first part second part"
    assert sim.rt.transcript_for(5.0, 6.0) is None


# -- fault isolation in the runtime's threads ------------------------------------------------------------

def test_a_failing_window_or_llm_job_is_counted_reported_and_the_stream_goes_on():
    model = FakeModel()
    model.fail_perceive, model.fail_answers = {2}, {1}  # the second window; the first LLM job's reason call
    seen: list[tuple[str, str]] = []
    sim = Sim(StreamConfig(fast_hz=2, vad="energy", slow="utterance"), model)
    sim.rt.on_error = lambda kind, e: seen.append((kind, str(e)))
    for _ in range(2):  # two utterances: the first LLM job fails, the second one must still run
        sim.run(1.0, isolated=True)
        sim.run(1.5, wave_fn=tone, isolated=True)
        sim.run(1.5, isolated=True)
        assert sim.rt.slow.wait_idle(10)
    errors = sim.rt.stats()["errors"]
    assert errors == {"step": 1, "slow_job": 1}, errors
    assert [k for k, _ in seen] == ["step", "slow_job"] and "failed on purpose" in seen[0][1]
    assert sim.rt.slow.counts["failed"] == 1 and sim.rt.slow.counts["done"] >= 1
    assert any(s.source == "llm" for s in sim.states)  # the second job answered
    assert sum(s.source == "head" for s in sim.states) >= 3  # windows after the failed one were published


def test_the_bundle_target_profiles_runtime_section_reaches_the_stream(default_bundle):
    """cpu-x86 gives llama.cpp 1 thread while the stream runs and pauses decode for fast-path updates; a stream
    setting overrides the profile. (After the manifest became a dataclass, a dict-style read of the profile raised
    AttributeError inside the property and was taken for "no profile": the stream then kept 2 threads.)"""
    from emo_edge.runtime.bundle import load_bundle
    from emo_edge.runtime.pipeline import EmotionRuntime

    b = load_bundle(default_bundle)
    try:
        rt = EmotionRuntime(b)
        assert rt.runtime_profile == {"llm_pause_for_fast": True, "llm_threads": 1}
        st = StreamRuntime(rt, b.frontend, StreamConfig(vad="energy", llm_pause_for_fast="off")).stats()
        assert st["llm_threads"] == 1 and st["llm_pause_for_fast"] is False
    finally:
        b.close()


def test_a_stream_opens_the_models_sessions_before_any_input(default_bundle):
    """Perception (and the LLM, when the slow path is on) open when the stream is made, not on its first window:
    opened there, perception held the interpreter for ~0.6 s (importing onnx, merging the graphs) and the ROS node's
    audio queue overflowed meanwhile (27 chunks lost at start-up)."""
    from emo_edge.runtime.bundle import load_bundle
    from emo_edge.runtime.pipeline import EmotionRuntime

    for slow in ("off", "utterance"):
        b = load_bundle(default_bundle)
        try:
            assert b._perception is None and b._llm is None  # the bundle itself opens them on first use
            st = StreamRuntime(EmotionRuntime(b), b.frontend, StreamConfig(vad="energy", slow=slow))
            assert b._perception is not None and (b._llm is not None) == (slow != "off")
            assert set(st.load_s) == ({"perception_s"} if slow == "off" else {"perception_s", "llm_s"})
            assert all(v > 0 for v in st.load_s.values()), st.load_s
        finally:
            b.close()
