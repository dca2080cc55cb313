"""The node in a ROS4HRI robot's stack, for real over Fast DDS, each its own process: audio_common_msgs audio
(AudioDataStamped + AudioInfo) and a std_msgs/String transcript in, hri_msgs/Expression out on the largest
tracked face's topic, with a fault injected into the image callback (EMO_EDGE_TEST_INJECT_FAULTS).

audio_common_msgs and hri_msgs come from tests/ros_interfaces (test-only copies of their published field
lists, built by scripts/build_ros.sh into ros2_ws/test_install); skipped when those are not built.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import time

import pytest
from ros_support import (
    ROOT,
    _node,
    needs_ros_ws,
    needs_test_interfaces,
    read_mcap,
    ros_environment,
    run_publisher,
)

from emo_edge.bench.replay import interrupt

pytestmark = [needs_ros_ws, needs_test_interfaces]

N_CLIPS = 2
TOPICS = ["/emotion/state:emo_edge_msgs/msg/EmotionState", "/diagnostics:diagnostic_msgs/msg/DiagnosticArray",
          "/humans/faces/big/expression:hri_msgs/msg/Expression",
          "/humans/faces/small/expression:hri_msgs/msg/Expression"]
EXPRESSION_CONSTANTS = set(re.findall(r'^string [A-Z]+="(\w+)"', (
    ROOT / "tests" / "ros_interfaces" / "hri_msgs" / "msg" / "Expression.msg").read_text(), re.M))


def _t(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


@pytest.fixture(scope="module")
def hri_run(default_bundle, tmp_path_factory) -> dict:
    from emo_edge.data.synth import generate

    tmp = tmp_path_factory.mktemp("hri")
    # v1 clips: one utterance each. v2's "long pause" (450-650 ms) outlasts the 0.5 s hangover, so the node would
    # end the utterance inside such a clip; these tests check the interfaces, not the model's answers
    generate(tmp, N_CLIPS, seed=3, split="test", workers=1, progress=False, version=1)
    env = ros_environment(test_interfaces=True)
    node_env = {**env, "EMO_EDGE_TEST_INJECT_FAULTS": "image", "EMO_EDGE_TEST_FAULT_EVERY": "10"}
    rec = subprocess.Popen([sys.executable, "-m", "emo_edge_ros.recorder", "--out", str(tmp / "out.mcap"),
                            "--topics", *TOPICS], env=env, stdout=(tmp / "recorder.log").open("w"),
                           stderr=subprocess.STDOUT)
    node = _node(default_bundle, node_env, tmp / "node.log", fast_hz=2.0, audio_type="audio_data_stamped",
                 transcript_type="string")
    out, log = run_publisher([str(ROOT / "tests" / "ros_hri_publisher.py"), str(tmp / "test.jsonl"), str(N_CLIPS),
                              "--transcribed", "0"], env, node, rec, tmp / "node.log",
                             settle_s=8)  # the last utterance's hangover, then its LLM answer
    return {"topics": read_mcap(tmp / "out.mcap", env, tmp / "recorder.log"), **json.loads(out.splitlines()[-1]),
            "log": log}


def _utterance_states(run: dict, source: int) -> list:
    """Per clip, the utterance state of `source` whose window overlaps the clip most (None if none does)."""
    states = [m for _, m in run["topics"].get("/emotion/state", []) if m.utterance_id > 0 and m.source == source]
    out = []
    for clip in run["schedule"]:
        def overlap(m, c=clip):
            return min(_t(m.window_end), c["end"]) - max(_t(m.window_start), c["start"])
        best = max(states, key=overlap, default=None)
        out.append(best if best is not None and overlap(best) > 0 else None)
    return out


def test_audio_common_audio_drives_the_stream(hri_run):
    head = _utterance_states(hri_run, 0)
    assert all(s is not None and s.audio_present and s.video_present for s in head), head
    diags = [(_t(d.header.stamp), {kv["key"]: kv["value"] for kv in d.status[0]["values"]})
             for _, d in hri_run["topics"]["/diagnostics"]]
    last, sent = diags[-1][1], hri_run["sent"]["audio_chunks"]
    print(f"audio_common chunks: {last['counts.audio_chunks']} of {sent} sent reached the stream; "
          f"{last['buffers.audio_gaps']} gaps filled with silence")
    # every chunk arrives (the audio queue holds bursts: audio_queue_depth); none is missing from the ring
    assert sent >= 400 and int(last["counts.audio_chunks"]) >= 0.98 * sent
    assert last["buffers.audio_gaps"] == "0" and float(last["buffers.audio_gap_s"]) == 0
    # the rate on /diagnostics, over its 5 s windows that lie inside the playback (audio flows from the lead-in
    # to the end of the last gap; earlier windows still hold the start)
    start, end = hri_run["played"]
    steady = sorted(float(d["rates_hz.audio"]) for t, d in diags if start + 5 <= t <= end)
    print(f"audio chunks/s on /diagnostics in steady playback: {steady}")
    assert len(steady) >= 3 and 45 <= steady[len(steady) // 2] <= 55  # 20 ms chunks
    assert "audio_info_missing" not in json.dumps(last)


def test_transcript_sets_the_text_modality_and_the_llm_prompt(hri_run):
    llm = _utterance_states(hri_run, 1)
    sent = [c["transcript"] for c in hri_run["schedule"]]
    print("LLM states (text_present, transcript):", [(s.text_present, s.transcript) for s in llm if s])
    assert llm[0] is not None and llm[0].text_present and llm[0].transcript == sent[0]
    assert llm[1] is not None and not llm[1].text_present and llm[1].transcript == ""  # no text for clip 1
    head = [m for _, m in hri_run["topics"]["/emotion/state"] if m.source == 0]
    assert not any(m.text_present for m in head)  # the head takes no text


def test_expressions_go_to_the_largest_tracked_face_with_all_fields(hri_run):
    topics = hri_run["topics"]
    expr = [m for _, m in topics.get("/humans/faces/big/expression", [])]
    assert not topics.get("/humans/faces/small/expression")
    head = {(m.header.stamp.sec, m.header.stamp.nanosec): m for _, m in topics["/emotion/state"] if m.source == 0}
    assert len(expr) >= 0.8 * len(head) and len(expr) >= 6, (len(expr), len(head))
    sys.path.insert(0, str(ROOT / "ros2_ws" / "src" / "emo_edge_ros"))  # hri.py's table imports no ROS
    from emo_edge_ros.hri import EXPRESSIONS

    for e in expr:
        state = head[(e.header.stamp.sec, e.header.stamp.nanosec)]
        assert e.expression in EXPRESSION_CONSTANTS and e.expression == EXPRESSIONS[state.label]
        assert e.valence == pytest.approx(state.valence) and e.arousal == pytest.approx(state.arousal)
        assert e.confidence == pytest.approx(max(state.scores)) and 0 < e.confidence <= 1
        assert e.header.frame_id == "camera"
    assert any(e.valence != 0 for e in expr) and any(e.arousal != 0 for e in expr)


def test_an_exception_in_a_callback_is_counted_on_diagnostics_and_the_node_goes_on(hri_run):
    log, topics = hri_run["log"], hri_run["topics"]
    diags = [d.status[0] for _, d in topics["/diagnostics"]]
    errors = [int(v["value"]) for d in diags for v in d["values"] if v["key"] == "errors.image"]
    assert errors and errors[-1] > 10, errors  # every 10th frame of ~30 s at 30 fps raised
    assert any(d["level"] == 2 and "exceptions: image" in d["message"] for d in diags)
    assert "InjectedFault: injected fault in image" in log and "Traceback" in log
    logged = log.count("exception in image")
    assert 1 <= logged <= errors[-1] // 5, (logged, errors[-1])  # throttled to one per 2 s, not one per fault
    last_clip_end = hri_run["schedule"][-1]["end"]
    states = [t for t, m in topics["/emotion/state"] if m.source == 0]
    assert max(states) > last_clip_end  # still publishing after all the injected faults


def test_unstamped_audio_data_and_live_speech(default_bundle, tmp_path):
    """audio_type audio_data: AudioData has no header; the node stamps each chunk on arrival less its length.
    transcript_type live_speech: hri_msgs/LiveSpeech's final text reaches the LLM (incremental results do not)."""
    from emo_edge.data.synth import generate

    generate(tmp_path, 1, seed=4, split="test", workers=1, progress=False, version=1)  # one utterance (hri_run)
    env = ros_environment(test_interfaces=True)
    rec = subprocess.Popen([sys.executable, "-m", "emo_edge_ros.recorder", "--out", str(tmp_path / "out.mcap"),
                            "--topics", TOPICS[0]], env=env, stdout=(tmp_path / "recorder.log").open("w"),
                           stderr=subprocess.STDOUT)
    node = _node(default_bundle, env, tmp_path / "node.log", fast_hz=1.0, audio_type="audio_data",
                 transcript_type="live_speech", reason="false")
    try:
        pub = subprocess.run([sys.executable, str(ROOT / "tests" / "ros_hri_publisher.py"),
                              str(tmp_path / "test.jsonl"), "1", "--audio-type", "audio_data", "--transcribed", "0",
                              "--transcript-type", "live_speech"], env=env,
                             capture_output=True, text=True, timeout=300)
        assert pub.returncode == 0, pub.stderr[-3000:]
        time.sleep(6)  # the utterance's hangover, then its LLM label
    finally:
        interrupt(node)
        code = interrupt(rec)
    with (tmp_path / "recorder.log").open("a") as f:
        f.write(f"\n(exit code {code})\n")
    run = {"topics": read_mcap(tmp_path / "out.mcap", env, tmp_path / "recorder.log"),
           "schedule": json.loads(pub.stdout.splitlines()[-1])["schedule"]}
    [head] = _utterance_states(run, 0)
    assert head is not None and head.audio_present and head.video_present
    clip = run["schedule"][0]
    print(f"utterance window {_t(head.window_start) - clip['start']:+.2f} .. {_t(head.window_end) - clip['end']:+.2f} s"
          " from the clip's start .. end")
    assert abs(_t(head.window_start) - clip["start"]) < 0.5  # arrival stamps stay on the clip's clock
    [llm] = _utterance_states(run, 1)
    assert llm is not None and llm.text_present and llm.transcript == clip["transcript"], llm


@pytest.mark.skipif(importlib.util.find_spec("audio_common_msgs") is not None,
                    reason="audio_common_msgs is installed here (a system ROS 2): nothing is missing")
def test_a_missing_interface_package_fails_configure_with_the_reason(tmp_path):
    """Without audio_common_msgs installed, audio_type audio_data_stamped fails configure (before loading the
    bundle) with the reason, and the node stays up, unconfigured."""
    env = ros_environment(test_interfaces=False)
    node = _node(tmp_path / "no-bundle-needed", env, tmp_path / "node.log", audio_type="audio_data_stamped")
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "configure failed" not in (tmp_path / "node.log").read_text():
            time.sleep(0.5)
        alive = node.poll() is None
    finally:
        interrupt(node)
    log = (tmp_path / "node.log").read_text()
    assert alive and "audio_type=audio_data_stamped needs the audio_common_msgs interface package" in log, log[-2000:]
