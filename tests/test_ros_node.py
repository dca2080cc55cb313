"""The ROS 2 node for real: its own process, a player process publishing SynthEmo clips as image + audio
topics in real time (30 fps, 16 kHz), and a recorder process writing the node's outputs to MCAP, all over
Fast DDS on loopback. Then faults injected by a publisher process, and (marked slow) memory over 10 minutes.

Needs ros2_ws built (scripts/build_ros.sh, which scripts/setup.sh runs); skips with the reason otherwise.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from ros_support import ROOT, Msg, _node, _recorder, needs_ros_ws, read_mcap, ros_environment, run_publisher

from emo_edge.bench.replay import interrupt
from emo_edge.runtime.stream import StreamConfig

N_CLIPS = 10
FINAL, PROVISIONAL, WITHDRAWN = 0, 1, 2  # EmotionState.STATUS_*

pytestmark = needs_ros_ws


@pytest.fixture(scope="module")
def ros_env() -> dict[str, str]:
    return ros_environment()


def _t(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def _diag_values(arr) -> dict[str, str]:
    return {kv["key"]: kv["value"] for kv in arr.status[0]["values"]}


@pytest.fixture(scope="module")
def played(default_bundle, default_synth_version, ros_env, tmp_path_factory) -> dict:
    """Node + recorder + player over 10 SynthEmo test clips; returns the recording and the clip schedule."""
    from emo_edge.data.synth import generate

    tmp = tmp_path_factory.mktemp("ros")
    generate(tmp, N_CLIPS, seed=0, split="test", workers=1, progress=False, version=default_synth_version)
    rec = _recorder(tmp / "out.mcap", ros_env, tmp / "recorder.log")
    node = _node(default_bundle, ros_env, tmp / "node.log", fast_hz=2.0)
    try:
        player = subprocess.run([sys.executable, "-m", "emo_edge_ros.player", "--jsonl", str(tmp / "test.jsonl"),
                                 "--limit", str(N_CLIPS), "--schedule", str(tmp / "schedule.json"), "--gap-s", "1.5",
                                 "--wait-subscribers", "120"], env=ros_env, capture_output=True, text=True, timeout=300)
        assert player.returncode == 0, player.stderr[-3000:]
        time.sleep(8)  # the last utterance's hangover, then its LLM answer and reasoning
        assert node.poll() is None, (tmp / "node.log").read_text()[-3000:]
    finally:
        interrupt(node)
        interrupt(rec)
    return {"topics": read_mcap(tmp / "out.mcap", ros_env), "schedule": json.loads((tmp / "schedule.json").read_text()),
            **json.loads(player.stdout.splitlines()[-1]), "dir": tmp, "node_log": (tmp / "node.log").read_text()}


def _per_clip(played: dict, source: int) -> list[tuple[str, str | None]]:
    """(true label, the label of the final utterance state whose window overlaps the clip most) per clip."""
    states = [m for _, m in played["topics"].get("/emotion/state", [])
              if m.utterance_id > 0 and m.source == source and m.status == FINAL]
    out = []
    for clip in played["schedule"]:
        def overlap(m, c=clip):
            return min(_t(m.window_end), c["end"]) - max(_t(m.window_start), c["start"])
        best = max(states, key=overlap, default=None)
        out.append((clip["label"], best.label if best is not None and overlap(best) > 0 else None))
    return out


def test_node_answers_each_clip(played):
    """The mechanics: one utterance state from the head and one from the LLM per clip, with both modalities."""
    head = _per_clip(played, 0)
    llm = _per_clip(played, 1)
    last = _diag_values(played["topics"]["/diagnostics"][-1][1])
    slow = {k: v for k, v in last.items() if k.startswith("slow")}
    print("head per clip:", head, "\nllm per clip:", llm, "\nLLM jobs:", slow)  # coalesced: a busy LLM
    assert sum(p is not None for _, p in head) == N_CLIPS, head
    assert sum(p is not None for _, p in llm) >= N_CLIPS - 1, llm
    states = [m for _, m in played["topics"]["/emotion/state"] if m.source == 0]
    assert all(m.video_present and m.audio_present for m in states if m.utterance_id > 0)
    assert all(m.header.frame_id == "camera" and len(m.scores) == len(m.labels) == 6 for m in states)
    # the shipped default reads the observable attributes: every head state names each one's likelier value
    from emo_edge.data.synth_v2 import ATTRIBUTES

    names = [a.name for a in ATTRIBUTES]
    assert all(list(m.attributes) == names and len(m.attribute_scores) == len(names) for m in states)
    assert all(v in a.phrases for m in states for a, v in zip(ATTRIBUTES, m.attribute_values, strict=True))
    assert all(min(m.attribute_scores) >= 0.5 for m in states)  # the likelier of two values
    assert all(not m.attributes for _, m in played["topics"]["/emotion/state"] if m.source == 1)


def test_state_topic_gives_the_right_label_for_7_of_10_clips(played):
    """The shipped default's head, answering at utterance end through the node. Its accuracy on the 600-clip
    SynthEmo v2 test split is 0.932 (README, Results); at that rate 10 clips give 7 or more right with probability
    0.99, 9 or more with 0.85 (the v1 default, 0.99 accurate, was held to 9). Whether the node passes the
    model's answers on unchanged is `test_stream_agrees_with_offline_inference`."""
    head = _per_clip(played, 0)
    right = sum(t == p for t, p in head)
    print(f"head right on {right}/{N_CLIPS}: {head}")
    assert right >= 7, f"head right on {right}/{N_CLIPS} clips: {head}"


def test_stream_agrees_with_offline_inference(played, default_bundle):
    """The pipeline itself: the streamed utterance label equals the bundle's label on the whole clip file."""
    from emo_edge.data.features import load_clip
    from emo_edge.data.schema import read_jsonl
    from emo_edge.runtime.bundle import load_bundle
    from emo_edge.runtime.pipeline import EmotionRuntime

    b = load_bundle(default_bundle)
    rt, fe = EmotionRuntime(b), b.frontend
    offline = []
    for r in read_jsonl(played["dir"] / "test.jsonl")[:N_CLIPS]:
        c = load_clip(r, played["dir"], fe)
        out = rt.perceive(c.image[None], c.frames[None], c.mel[None], np.ones((1, 3), np.float32))
        offline.append(out["labels"][0])
    streamed = [p for _, p in _per_clip(played, 0)]
    agree = sum(a == b for a, b in zip(offline, streamed, strict=True))
    print(f"stream/offline agreement {agree}/{N_CLIPS}: {list(zip(offline, streamed, strict=True))}")
    assert agree >= 8


def test_reasoning_streams_and_ends_with_done(played):
    msgs = [m for _, m in played["topics"].get("/emotion/reasoning", [])]
    by_utt: dict[int, list] = {}
    for m in msgs:
        by_utt.setdefault(m.utterance_id, []).append(m)
    assert len(by_utt) >= N_CLIPS - 1
    for utt, ms in by_utt.items():
        # the stream of the answer that stood (early answers whose speech went on end withdrawn), up to done
        window = _t(ms[-1].header.stamp)
        stood = [m for m in ms if _t(m.header.stamp) == window and m.status != WITHDRAWN]
        first_done = next(i for i, m in enumerate(stood) if m.done)
        growing = zip(stood[:first_done], stood[1:first_done + 1], strict=True)
        assert first_done >= 2 and all(len(b.text) >= len(a.text) for a, b in growing)
        # a subscriber that keeps only final messages gets exactly one done, with the whole text
        final_done = [m for m in ms if m.status == FINAL and m.done]
        assert len(final_done) == 1 and final_done[0] is ms[-1] and len(ms[-1].text) > 20, utt
        assert ms[-1].text == stood[first_done].text


def test_diagnostics_report_rates_and_latency(played):
    diags = [m for _, m in played["topics"].get("/diagnostics", [])]
    assert len(diags) >= 30  # 1 Hz over the run
    while_playing = [_diag_values(d) for d in diags if float(_diag_values(d)["rates_hz.frames"]) > 0]
    last = while_playing[-1]
    # the rates over the 5 s windows that lie inside the playback (the first ones still hold its start)
    start, end = played["played"]
    steady = [_diag_values(d) for d in diags if start + 5 <= _t(d.header.stamp) <= end]
    frames_hz = np.median([float(v["rates_hz.frames"]) for v in steady])
    audio_hz = np.median([float(v["rates_hz.audio"]) for v in steady])
    got, sent = {k: int(_diag_values(diags[-1])[f"counts.{k}"]) for k in played["sent"]}, played["sent"]
    print(f"input rates on /diagnostics (median of {len(steady)} in steady playback): frames {frames_hz:.1f} Hz, "
          f"audio {audio_hz:.1f} Hz; received {got} of {sent} sent")
    assert len(steady) >= 20 and 25 <= frames_hz <= 35 and 45 <= audio_hz <= 55  # 30 fps, 20 ms chunks
    # every audio chunk reaches the stream (frames may drop: the newest matter), and none is missing from the ring
    assert got["audio_chunks"] >= 0.98 * sent["audio_chunks"] and got["frames"] >= 0.5 * sent["frames"]
    assert _diag_values(diags[-1])["buffers.audio_gaps"] == "0"
    head_median = float(last["latency_ms.head.median_ms"])
    head_p95 = float(last["latency_ms.head.p95_ms"])
    print(f"fast path latency (window end -> state): median {head_median:.0f} ms, p95 {head_p95:.0f} ms")
    assert 0 < head_median <= head_p95
    # utterance-end head states are reported apart: their window ends where the speech ends. They go out after
    # the short pause of utterance_early_s (0.15 s), not the 0.5 s hangover (which made them wait >= 0.4 s)
    utt_median = float(last["latency_ms.head_utterance.median_ms"])
    speech_label = float(last["latency_ms.speech_label.median_ms"])
    print(f"utterance-end head latency: median {utt_median:.0f} ms, p95 "
          f"{float(last['latency_ms.head_utterance.p95_ms']):.0f} ms; VAD's end of speech -> label that stood: "
          f"median {speech_label:.0f} ms, p95 {float(last['latency_ms.speech_label.p95_ms']):.0f} ms")
    assert int(last["latency_ms.head_utterance.n"]) >= N_CLIPS - 1 and utt_median < 380
    assert int(last["counts.confirmed"]) >= N_CLIPS - 2 and int(last["latency_ms.speech_label.n"]) >= N_CLIPS - 1
    assert "slow.submitted" in last and int(last["counts.utterances"]) >= N_CLIPS - 1


def test_each_utterance_has_exactly_one_final_answer(played):
    """Early answers are provisional; a subscriber that keeps only final states gets one head state and one LLM
    label per utterance, and the head state says when the speech ended."""
    states = [m for _, m in played["topics"]["/emotion/state"] if m.utterance_id > 0]
    by_utt: dict[int, list] = {}
    for m in states:
        by_utt.setdefault(m.utterance_id, []).append(m)
    assert len(by_utt) >= N_CLIPS - 1
    for utt, ms in by_utt.items():
        finals = [m for m in ms if m.status == FINAL]
        assert sorted(m.source for m in finals) in ([0], [0, 1]), (utt, [(m.source, m.status) for m in ms])
        head = next(m for m in finals if m.source == 0)
        assert 0 < _t(head.window_end) - _t(head.speech_end) <= 0.1 + 1e-6  # the utterance_tail_s after the speech
    assert sum(m.status == PROVISIONAL for m in states) >= N_CLIPS - 1  # answered early, then confirmed


def test_pause_inside_an_utterance_gives_one_final_answer_covering_it(default_bundle, ros_env,
                                                                       tmp_path):
    """Two SynthEmo clips joined by a 300 ms pause (longer than utterance_early_s, shorter than the hangover):
    the early answer given in the pause is withdrawn, and one final answer covers both clips."""
    from emo_edge.data.synth import generate

    # v1 clips, without pauses of their own: v2's "long pause" (450-650 ms) would give an early answer of its own
    generate(tmp_path, 2, seed=0, split="test", workers=1, progress=False, version=1)
    rec = _recorder(tmp_path / "out.mcap", ros_env, tmp_path / "recorder.log")
    node = _node(default_bundle, ros_env, tmp_path / "node.log", fast_hz=2.0)
    try:
        player = subprocess.run([sys.executable, "-m", "emo_edge_ros.player", "--jsonl", str(tmp_path / "test.jsonl"),
                                 "--limit", "2", "--join", "2", "--inner-pause-s", "0.3", "--schedule",
                                 str(tmp_path / "schedule.json"), "--wait-subscribers", "120"],
                                env=ros_env, capture_output=True, text=True, timeout=300)
        assert player.returncode == 0, player.stderr[-3000:]
        time.sleep(6)
    finally:
        interrupt(node)
        interrupt(rec)
    (joined,) = json.loads((tmp_path / "schedule.json").read_text())
    (pause_start, pause_end), = joined["pauses"]
    states = [m for _, m in read_mcap(tmp_path / "out.mcap", ros_env)["/emotion/state"] if m.utterance_id > 0]
    print([(m.utterance_id, m.source, m.status, round(_t(m.speech_end) - joined["start"], 2)) for m in states])
    finals = [m for m in states if m.status == FINAL]
    assert sorted(m.source for m in finals) == [0, 1], "one final head state and one final LLM label"
    head = next(m for m in finals if m.source == 0)
    assert _t(head.window_start) < pause_start and _t(head.speech_end) > pause_end  # covers both clips
    withdrawn = [m for m in states if m.status == WITHDRAWN]
    early = [m for m in states if m.status == PROVISIONAL and m.source == 0]
    assert withdrawn and all(m.utterance_id == head.utterance_id for m in states)
    # an early answer went out in the inner pause, and was withdrawn when the second clip's speech began
    assert any(pause_start - 0.2 <= _t(m.speech_end) <= pause_start + 0.05 for m in early), \
        [(_t(m.speech_end) - pause_start) for m in early]


def test_execution_plan_is_logged_and_on_diagnostics(played):
    plans = [Msg(m.status[1]) for _, m in played["topics"].get("/diagnostics", []) if len(m.status) > 1]
    assert plans and plans[-1].name == "emo_edge: execution plan" and plans[-1].message == "as planned for cpu-x86"
    values = {kv["key"]: kv["value"] for kv in plans[-1]["values"]}
    assert values["perception.backend"] == "onnxruntime" and values["perception.providers"] == \
        "['CPUExecutionProvider']"
    assert values["llm.n_gpu_layers"] == "0" and values["fallback"] == "False"
    assert "plan: target cpu-x86" in played["node_log"] and "plan: llm: llama.cpp llm/llm-q8_0.gguf" in \
        played["node_log"]


def test_node_survives_faults_and_keeps_publishing(default_bundle, ros_env, tmp_path):
    rec = _recorder(tmp_path / "faults.mcap", ros_env, tmp_path / "recorder.log")
    node = _node(default_bundle, ros_env, tmp_path / "node.log", fast_hz=4.0, slow="'off'",  # quoted: YAML
                 image_transport="both")
    out, log = run_publisher([str(ROOT / "tests" / "ros_faults.py")], ros_env, node, rec, tmp_path / "node.log",
                             settle_s=2)
    phases = [json.loads(line) for line in out.splitlines()]
    topics = read_mcap(tmp_path / "faults.mcap", ros_env)
    state_times = [t for t, _ in topics["/emotion/state"]]
    sliding_times = [t for t, m in topics["/emotion/state"] if m.utterance_id == 0]
    # phases without any valid input: every message refused (stamps 5 s back) or none sent; the fast path pauses
    # then (no window is computed past the last input) and resumes when input returns
    no_input = ("backwards", "vanish")
    stale_s = StreamConfig().stale_s  # the node's default
    no_input_since = None
    for a, b in zip(phases, phases[1:], strict=False):  # states keep coming in every phase with valid input
        if a["phase"] in no_input:
            no_input_since = a["start"] if no_input_since is None else no_input_since
            continue
        if no_input_since is not None:  # input returns with this phase (a vanished publisher is matched again)
            paused = [t for t in sliding_times if no_input_since + stale_s < t < a["start"]]
            assert not paused, f"sliding states without input at {paused} (no input since {no_input_since})"
            resumed = min(t for t in state_times if t > a["start"]) - a["start"]
            print(f"states resumed {resumed:.1f} s after input returned")
            assert resumed <= 4.0
            no_input_since = None
            continue
        assert any(a["start"] < t <= b["start"] + 0.5 for t in state_times), \
            f"no state during {a['phase']}: phases {phases}, states at {state_times}"
    for kind in ("image_encoding", "image_layout", "image_decode", "audio_rate", "audio_format", "time_backwards"):
        assert f"input refused ({kind})" in log, kind
    diags = [Msg(d.status[0]) for _, d in topics["/diagnostics"]]
    warned = " ".join(s.message for s in diags if s.level >= 1)
    for kind in ("image_encoding", "image_layout", "image_decode", "audio_rate", "audio_format", "time_backwards"):
        assert kind in warned, f"{kind} never reported on /diagnostics"
    assert "no video or audio input" in warned  # the vanished publisher
    last = {kv["key"]: kv["value"] for kv in diags[-1]["values"]}
    assert int(last["faults.time_backwards"]) > 10 and float(last["latency_ms.head.p95_ms"]) > 0
    assert log.count("input refused") < 200  # throttled, not one line per message


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


@pytest.mark.slow
def test_memory_is_bounded_over_10_minutes(default_bundle, ros_env, tmp_path):
    """RSS after 10 minutes of 30 fps input within 10 % of RSS after 1 minute."""
    node = _node(default_bundle, ros_env, tmp_path / "node.log", fast_hz=2.0, slow="timer", slow_period_s=10.0)
    pub = subprocess.Popen([sys.executable, str(ROOT / "tests" / "ros_faults.py"), *(["0"] * 10), "600"],
                           env={**ros_env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(60 + 10)
        rss_1 = _rss_kb(node.pid)
        pub.wait(timeout=700)
        rss_10 = _rss_kb(node.pid)
    finally:
        pub.kill()
        interrupt(node)
    print(f"RSS after 1 min {rss_1 / 1024:.0f} MB, after 10 min {rss_10 / 1024:.0f} MB")
    assert rss_10 <= 1.10 * rss_1
