"""`emo-edge bench --bag`: the replay statistics on hand-made timings, then for real: a bag made from two SynthEmo
test clips, replayed through the node (its own process, Fast DDS on loopback) and timed from its outputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from ros_support import ROOT, needs_ros_ws, ros_environment

from emo_edge.bench.replay import computed_states, head_while_reasoning, replay_summary, utterance_summary
from emo_edge.bench.report import replay_markdown

SYNTHEMO_TEST = ROOT / "data" / "synthemo-v2" / "test.jsonl"


def _state(received: float, stamp: float, latency_ms: float, source: str = "head", utt: int = 0,
           status: str = "final", speech_end: float = 0.0) -> dict:
    return {"received": received, "stamp": stamp, "latency_ms": latency_ms, "source": source, "utterance_id": utt,
            "status": status, "speech_end": speech_end}


def _reason(received: float, stamp: float, utt: int, done: bool, status: str = "final") -> dict:
    return {"received": received, "stamp": stamp, "utterance_id": utt, "done": done, "chars": 5, "status": status}


def test_utterance_summary_by_hand():
    """Utterance 1 answered early and confirmed; utterance 2's early answer withdrawn (speech resumed), then final."""
    states = [
        _state(10.2, 10.1, 100, utt=1, status="provisional", speech_end=10.0),
        _state(10.5, 10.1, 400, "llm", 1, "provisional", 10.0),
        _state(10.55, 10.1, 450, utt=1, speech_end=10.0), _state(10.56, 10.1, 460, "llm", 1, speech_end=10.0),
        _state(20.2, 20.1, 100, utt=2, status="provisional", speech_end=20.0),
        _state(20.4, 20.1, 300, utt=2, status="withdrawn", speech_end=20.0),
        _state(21.6, 21.1, 500, utt=2, speech_end=21.0), _state(21.9, 21.1, 800, "llm", 2, speech_end=21.0),
        _state(10.7, 10.65, 50), _state(10.95, 10.85, 100), _state(12.0, 11.99, 10), _state(12.5, 12.49, 10)]
    reasoning = [_reason(10.6, 10.1, 1, False, "provisional"), _reason(10.9, 10.1, 1, False),
                 _reason(11.0, 10.1, 1, True), _reason(22.0, 21.1, 2, False), _reason(22.3, 21.1, 2, True)]
    u = utterance_summary(states, reasoning)
    assert (u["n"], u["answered_early"], u["withdrawn"], u["utterances_with_withdrawals"]) == (2, 1, 1, 1)
    assert u["finals_per_utterance"] == [2]  # one head state and one LLM label per utterance
    expect = {"label_ms": (200, 600), "provisional_ms": (200,), "final_ms": (550, 600), "llm_label_ms": (500, 900),
              "reasoning_first_ms": (600, 1000), "reasoning_done_ms": (1000, 1300)}
    for key, values in expect.items():
        assert [r[key] for r in u["per_utterance"] if r[key] is not None] == pytest.approx(list(values)), key
    assert u["label_ms"]["p50_ms"] == pytest.approx(400.0)
    # the confirmed answer's re-published finals and the withdrawal are not computed states
    assert len(computed_states(states)) == len(states) - 3
    hw = head_while_reasoning(states, reasoning)  # reasoning streamed over 10.6-11.0 and 22.0-22.3
    assert hw["streaming"]["n"] == 2 and hw["streaming"]["state_e2e_ms"]["p50_ms"] == pytest.approx(75.0)
    assert hw["streaming"]["rate_hz"] == pytest.approx(4.0)  # one 0.25 s gap inside
    assert hw["not_streaming"]["n"] == 2 and hw["not_streaming"]["rate_hz"] == pytest.approx(2 / 1.55)
    assert hw["streaming_s"] == pytest.approx(0.7)


def test_replay_summary_by_hand():
    timings = {
        "states": [_state(100.5, 100.0, 400.0),  # in the 1 s warm-up: not counted
                   _state(101.1, 101.0, 90.0), _state(101.6, 101.5, 80.0), _state(102.2, 102.0, 190.0, utt=1),
                   _state(103.0, 102.0, 990.0, "llm", 1)],
        "reasoning": [{"received": 103.2, "stamp": 102.0, "utterance_id": 1, "done": False, "chars": 3},
                      {"received": 103.5, "stamp": 102.0, "utterance_id": 1, "done": False, "chars": 9},
                      {"received": 104.0, "stamp": 102.0, "utterance_id": 1, "done": True, "chars": 20}],
        "diagnostics": [{"received": 101.0, "values": {"rates_hz.frames": "0.0", "rates_hz.audio": "0.0"}},
                        {"received": 102.0, "values": {"rates_hz.frames": "30.0", "rates_hz.audio": "50.0"}},
                        {"received": 103.0, "values": {"rates_hz.frames": "29.0", "rates_hz.audio": "48.0",
                                                       "counts.frames": "88", "counts.audio_chunks": "149",
                                                       "buffers.audio_gaps": "1", "buffers.audio_gap_s": "0.12"}},
                        {"received": 104.0, "values": {"rates_hz.frames": "0.0", "rates_hz.audio": "0.0"}}],
    }
    r = replay_summary(timings, warmup_s=1.0)
    assert r["states_in_warmup"] == 1 and r["duration_s"] == pytest.approx(4.0)  # to the last output
    head = r["head_states"]
    assert head["n"] == 3 and head["utterance_answers"] == 1
    assert head["state_e2e_ms"]["p50_ms"] == pytest.approx(100.0)  # e2e 100, 100, 200 ms
    assert head["state_e2e_ms"]["p99_ms"] == pytest.approx(198.0)  # 100 + 0.98 * (200 - 100)
    assert head["state_node_ms"]["p50_ms"] == pytest.approx(90.0)
    split = r["head_states_split"]  # sliding-window (100, 100 ms) and utterance-end (200 ms) apart
    assert split["head"]["n"] == 2 and split["head"]["state_e2e_ms"]["p95_ms"] == pytest.approx(100.0)
    assert split["head_utterance"]["n"] == 1 and split["head_utterance"]["state_e2e_ms"]["p50_ms"] == pytest.approx(200)
    assert r["llm_states"]["state_e2e_ms"]["p50_ms"] == pytest.approx(1000.0)
    assert r["reasoning"]["utterances"] == r["reasoning"]["finished"] == 1
    assert r["reasoning"]["reasoning_first_ms"]["p50_ms"] == pytest.approx(1200.0)
    assert r["reasoning"]["reasoning_done_ms"]["p50_ms"] == pytest.approx(2000.0)
    rates = r["rates_hz"]
    assert rates["head_states"] == pytest.approx(4 / 4.0)  # 4 head states over 100.0 .. 104.0 s
    assert rates["reasoning_messages"] == pytest.approx(3 / 4.0) and rates["diagnostics"] == pytest.approx(4 / 4.0)
    # the counts come from the last diagnostics that has them (the one after them, from an older node, has none)
    assert r["inputs"] == {"frames_received": 88, "audio_chunks_received": 149, "audio_gaps": 1, "audio_gap_s": 0.12}
    assert rates["input_frames"] == pytest.approx(29.5) and rates["input_audio_chunks"] == pytest.approx(49.0)
    md = replay_markdown(r)
    assert "| audio chunks | - | 149 |" in md and "silence: 1 (0.12 s)" in md, md
    assert "| head state: window end -> received (`state_e2e_ms`) | 3 | 100.00 / 190.00 / 198.00 |" in md, md
    assert "| head state (sliding-window): window end -> received | 2 | 100.00 / 100.00 / 100.00 |" in md, md
    with pytest.raises(ValueError, match="no emotion state"):
        replay_summary({"states": []}, 1.0)


def _clips_jsonl(tmp: Path) -> Path:
    """data/synthemo-v2/test.jsonl when it is there (emo-edge data synth), else two fresh SynthEmo test clips."""
    if SYNTHEMO_TEST.is_file():
        return SYNTHEMO_TEST
    from emo_edge.data.synth import generate

    generate(tmp, 2, seed=0, split="test", workers=1, progress=False)
    return tmp / "test.jsonl"


@needs_ros_ws
def test_bench_bag_end_to_end(default_bundle, tmp_path):
    from typer.testing import CliRunner

    from emo_edge.cli import app

    env = ros_environment()
    bag = tmp_path / "clips.mcap"
    made = subprocess.run([sys.executable, "-m", "emo_edge_ros.player", "--jsonl", str(_clips_jsonl(tmp_path)),
                           "--limit", "2", "--write-bag", str(bag), "--schedule", str(tmp_path / "schedule.json")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr[-3000:]
    schedule = json.loads((tmp_path / "schedule.json").read_text())
    seconds = schedule[-1]["end"] + 1.5 - schedule[0]["start"] + 1.0  # the clips, their gaps and the lead
    counts = _count_messages(bag)
    assert abs(counts["/image"] - 30 * seconds) <= 3 and abs(counts["/audio"] - 50 * seconds) <= 3, (counts, seconds)

    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["bench", "--bag", str(bag), "--bundle", str(default_bundle), "--out", str(out),
                                   "--fast-hz", "4", "--warmup-s", "1"], env=env)
    assert res.exit_code == 0, res.output + (out / "replay" / "node.log").read_text()[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert {"schema_version", "config", "versions", "machine", "bundle", "ros2_replay"} <= set(results)
    r = results["ros2_replay"]
    print(json.dumps(r, indent=1))
    summaries = [r["head_states"]["state_e2e_ms"], r["head_states"]["state_node_ms"]]
    assert r["head_states"]["n"] >= 4 * (seconds - 2)  # 4 Hz sliding updates
    assert r["head_states"]["utterance_answers"] >= 1
    for extra in (r["llm_states"]["state_e2e_ms"], r["reasoning"]["reasoning_first_ms"],
                  r["reasoning"]["reasoning_done_ms"]):
        if extra is not None:  # the LLM answers on a busy 2-core machine may be coalesced away, not all lost
            summaries.append(extra)
    assert r["reasoning"]["utterances"] >= 1 and r["reasoning"]["finished"] >= 1
    for s in summaries:
        assert 0 < s["min_ms"] and 0 < s["p50_ms"] <= s["p95_ms"] <= s["p99_ms"], s
    # the recorder gets a state after the node stamped its latency, and both count from the same window end
    assert r["head_states"]["state_e2e_ms"]["p50_ms"] >= r["head_states"]["state_node_ms"]["p50_ms"]
    rates = r["rates_hz"]
    # the frames' rate, not the audio chunks' (50 Hz) or the states' (4 Hz): published at 30 fps, the median of the
    # node's 1 s rates read 24.6-24.8 on a 2-core AMD EPYC (player, node and recorder share the cores) and the
    # release before this one measured the same there, so the lower bound is 20
    assert 3.0 <= rates["head_states"] <= 5.0 and 20 <= rates["input_frames"] <= 35, rates
    md = (out / "results.md").read_text()
    assert "## ROS 2 replay" in md and "state_e2e_ms" in md
    # every audio chunk of the bag reached the node's stream, none was filled in with silence
    inputs = r["inputs"]
    assert inputs["audio_chunks_in_bag"] == counts["/audio"] and inputs["frames_in_bag"] == counts["/image"], inputs
    assert counts["/audio"] >= inputs["audio_chunks_received"] >= 0.98 * counts["/audio"], inputs
    assert inputs["audio_gaps"] == 0 and 0.5 * counts["/image"] <= inputs["frames_received"] <= counts["/image"], inputs
    assert f"| audio chunks | {counts['/audio']} | {inputs['audio_chunks_received']} |" in md
    # per utterance from the VAD's end of speech: each clip answered, early, and once finally
    u = r["utterances"]
    assert u["n"] >= 1 and u["answered_early"] >= 1 and u["finals_per_utterance"] in ([1], [2], [1, 2]), u
    assert 0 < u["label_ms"]["p50_ms"] < 1000 and "### Utterances" in md and "turn-taking" in md
    assert r["head_while_reasoning"]["not_streaming"]["n"] >= 1 and (out / "utterance_latency.png").stat().st_size


def _count_messages(bag: Path) -> dict[str, int]:
    from mcap.reader import make_reader

    with bag.open("rb") as f:
        stats = make_reader(f).get_summary().statistics
    with bag.open("rb") as f:
        channels = make_reader(f).get_summary().channels
    return {channels[cid].topic: n for cid, n in stats.channel_message_counts.items()}
