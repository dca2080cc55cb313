"""`emo-edge bench --bag`: replay a ROS 2 bag (MCAP) of camera + microphone messages through the node at real
rate and time the node end to end from its outputs, as real message traffic sees it.

    recorder (emotion/state, emotion/reasoning, /diagnostics -> outputs.mcap)
    node     (the bundle; subscribes to image + audio)
    player   (--bag: the bag's /image and /audio at their recorded spacing, stamped now)

Each is its own process over the ROS 2 middleware, with the environment of the workspace's setup.bash;
this module imports no ROS. The statistics are pure functions of the decoded timings (`replay_summary`),
so they can be unit-tested:

    state_e2e_ms         state header stamp (its input window's end) -> the recorder received it
    state_node_ms        EmotionState.latency_ms: window end -> the node's publish call (the node's own figure)
    reasoning_first_ms   an utterance's window end -> its first streamed Reasoning message received
    reasoning_done_ms    an utterance's window end -> its Reasoning message with done = true received
    rates_hz             messages per second on each output, averaged over the replay (first state's window end
                         to the last output); the input rates the node reported on /diagnostics while fed
    inputs               frames and audio chunks in the bag and those the node's stream accepted (its last
                         /diagnostics), and the gaps its audio ring filled with silence: what was lost on the way
    utterances           per utterance, from the VAD's end of speech (EmotionState.speech_end) to what the
                         subscriber received: label_ms (the first head state that stood: a provisional one later
                         confirmed, or the final one), provisional_ms / final_ms (head), llm_label_ms,
                         reasoning_first_ms, reasoning_done_ms; withdrawn provisional answers counted
    head_while_reasoning sliding-window head states received while a reasoning streamed vs. while none did:
                         latency (window end -> received) and rate
Only states the node computed count in the latency statistics: re-published confirmations and withdrawals
are counted apart.

A bag of SynthEmo clips: `python -m emo_edge_ros.player --jsonl data/synthemo-v2/test.jsonl --limit 10
--write-bag clips.mcap` (in the ROS environment).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emo_edge.bench.stats import summarize_ms
from emo_edge.runtime.settings import to_flat, yaml_scalar
from emo_edge.runtime.stream import StreamConfig, latency_kind

SCHEMA_VERSION = 2
TURN_TAKING_GAP_MS = 200.0  # ms, the typical gap between two speakers' turns in human conversation
REPO_SETUP = Path(__file__).resolve().parents[2] / "ros2_ws" / "install" / "setup.bash"


@dataclass
class ReplayConfig:
    bag: Path
    bundle: Path
    out: Path
    threads: int = 2  # the node's ONNX Runtime and llama.cpp threads
    stream: StreamConfig = field(default_factory=StreamConfig)  # the node's stream settings, all passed as parameters
    warmup_s: float = 2.0  # s, states whose window ends this soon after the first one are not counted
    tail_s: float = 10.0  # s after the bag ends for the last utterance's answer and reasoning
    wait_node_s: float = 180.0  # s the player waits for the node to subscribe (it loads the bundle first)
    ros_setup: Path | None = None  # setup.bash of the built workspace (None: ros2_ws/install, or the current env)
    image_topic: str = "/image"
    audio_topic: str = "/audio"

    def __post_init__(self) -> None:
        if self.warmup_s < 0 or self.tail_s < 0 or self.threads < 1:
            raise ValueError(f"replay: warmup_s and tail_s must be >= 0 and threads >= 1, got {self.warmup_s}, "
                             f"{self.tail_s}, {self.threads}")

    def node_params(self) -> dict[str, str]:
        """The node's parameters as `-p name:=value` text: bundle, threads and every stream setting."""
        values = {"bundle": str(self.bundle), "threads": self.threads, **to_flat(self.stream)}
        return {k: yaml_scalar(v) for k, v in values.items()}

    def to_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in dataclasses.asdict(self).items()}


# ---------------------------------------------------------------------------------------------
# statistics (pure)
# ---------------------------------------------------------------------------------------------


def _ms(values_ms: list[float]) -> dict[str, float] | None:
    return summarize_ms([v / 1e3 for v in values_ms]) if values_ms else None




def _diag_rate(diagnostics: list[dict[str, Any]], key: str) -> float | None:
    """The median of a /diagnostics rate while input was flowing (frames arriving)."""
    vals = [float(d["values"][key]) for d in diagnostics
            if key in d["values"] and float(d["values"].get("rates_hz.frames", 0)) > 0]
    return statistics.median(vals) if vals else None


def _status(m: dict[str, Any]) -> str:
    return m.get("status", "final")


def _stood(states: list[dict[str, Any]]) -> dict[tuple[int, str], dict[str, Any]]:
    """(utterance id, source) -> the first state of the answer that stood: its final state, or the provisional one
    it confirmed (a provisional state with the same speech end)."""
    finals = {(s["utterance_id"], s["source"]): s for s in states if s["utterance_id"] and _status(s) == "final"}
    out = {}
    for key, final in finals.items():
        early = [s for s in states if (s["utterance_id"], s["source"]) == key and _status(s) == "provisional"
                 and abs(s.get("speech_end", 0.0) - final.get("speech_end", 0.0)) < 1e-3]
        out[key] = min(early + [final], key=lambda s: s["received"])
    return out


def computed_states(states: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The states the node computed: all but withdrawals and the final re-publication of a confirmed answer."""
    stood = _stood(states)
    return [s for s in states if _status(s) != "withdrawn"
            and not (_status(s) == "final" and s["utterance_id"]
                     and stood.get((s["utterance_id"], s["source"])) not in (None, s))]


def utterance_summary(states: list[dict[str, Any]], reasoning: list[dict[str, Any]]) -> dict[str, Any]:
    """Per utterance: the VAD's end of speech -> each answer at the subscriber (ms); see the module docstring."""
    stood, rows = _stood(states), []
    for (utt, source), first in sorted(stood.items()):
        if source != "head":
            continue
        end, head_final = first.get("speech_end", 0.0), [s for s in states if s["utterance_id"] == utt
                                                          and s["source"] == "head" and _status(s) == "final"]
        llm = stood.get((utt, "llm"))
        # the reasoning of the answer that stood: stamped with the same window end, never withdrawn
        rs = [r for r in reasoning if r["utterance_id"] == utt and abs(r["stamp"] - first["stamp"]) < 1e-3
              and _status(r) != "withdrawn"]
        done = [r for r in rs if r["done"]]

        def ms(m: dict[str, Any] | None, end: float = end) -> float | None:
            return None if m is None else (m["received"] - end) * 1e3
        rows.append({
            "utterance_id": utt, "speech_end": end, "early": _status(first) == "provisional",
            "label_ms": ms(first), "provisional_ms": ms(first) if _status(first) == "provisional" else None,
            "final_ms": ms(head_final[0]) if head_final else None, "llm_label_ms": ms(llm),
            "reasoning_first_ms": ms(rs[0]) if rs else None, "reasoning_done_ms": ms(done[0]) if done else None,
            "withdrawn": sum(s["utterance_id"] == utt and _status(s) == "withdrawn" for s in states)})
    keys = ("label_ms", "provisional_ms", "final_ms", "llm_label_ms", "reasoning_first_ms", "reasoning_done_ms")
    return {"n": len(rows), "answered_early": sum(r["early"] for r in rows),
            "withdrawn": sum(_status(s) == "withdrawn" for s in states),
            "utterances_with_withdrawals": sum(r["withdrawn"] > 0 for r in rows),
            "finals_per_utterance": sorted({sum(s["utterance_id"] == r["utterance_id"] and _status(s) == "final"
                                                for s in states) for r in rows}),
            **{k: _ms([r[k] for r in rows if r[k] is not None]) for k in keys},
            "turn_taking_gap_ms": TURN_TAKING_GAP_MS, "per_utterance": rows}


def _streaming_intervals(reasoning: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """[first message, last message] received of each reasoning stream (one per utterance and window)."""
    spans: dict[tuple[int, float], list[float]] = {}
    for r in reasoning:
        spans.setdefault((r["utterance_id"], round(r["stamp"], 3)), []).append(r["received"])
    return sorted((min(v), max(v)) for v in spans.values())


def head_while_reasoning(states: list[dict[str, Any]], reasoning: list[dict[str, Any]]) -> dict[str, Any]:
    """Sliding-window head states received while a reasoning streamed vs. not: latency and rate (from the gaps
    between consecutive states, each gap counted where its midpoint falls)."""
    spans = _streaming_intervals(reasoning)
    sliding = sorted((s for s in states if s["source"] == "head" and not s["utterance_id"]),
                     key=lambda s: s["received"])

    def busy(t: float) -> bool:
        return any(a <= t <= b for a, b in spans)
    out = {}
    for name, want in (("streaming", True), ("not_streaming", False)):
        e2e = [(s["received"] - s["stamp"]) * 1e3 for s in sliding if busy(s["received"]) == want]
        gaps = [b["received"] - a["received"] for a, b in zip(sliding, sliding[1:], strict=False)
                if busy((a["received"] + b["received"]) / 2) == want]
        out[name] = {"n": len(e2e), "state_e2e_ms": _ms(e2e),
                     "rate_hz": len(gaps) / sum(gaps) if gaps and sum(gaps) > 0 else None}
    out["streaming_s"] = sum(b - a for a, b in spans)
    return out


def replay_summary(timings: dict[str, list[dict[str, Any]]], warmup_s: float) -> dict[str, Any]:
    """The decoded outputs of a replay (emo_edge_ros.timings) -> latency percentiles, counts and rates."""
    everything = timings.get("states", [])
    if not everything:
        raise ValueError("replay: the node published no emotion state (see node.log in the output directory)")
    states = computed_states(everything)
    start = min(s["stamp"] for s in states)
    kept = [s for s in states if s["stamp"] >= start + warmup_s]
    out: dict[str, Any] = {"warmup_s": warmup_s, "states_in_warmup": len(states) - len(kept),
                           "duration_s": max(m["received"] for m in states + timings.get("reasoning", [])) - start}
    for source in ("head", "llm"):
        ss = [s for s in kept if s["source"] == source]
        out[f"{source}_states"] = {"n": len(ss), "utterance_answers": sum(s["utterance_id"] > 0 for s in ss),
                                   "state_e2e_ms": _ms([(s["received"] - s["stamp"]) * 1e3 for s in ss]),
                                   "state_node_ms": _ms([s["latency_ms"] for s in ss])}
    # the head's sliding-window and utterance-end states apart, as the node's own statistics keep them
    out["head_states_split"] = {}
    for kind in ("head", "head_utterance"):
        e2e = [(s["received"] - s["stamp"]) * 1e3 for s in kept if latency_kind(s["source"], s["utterance_id"]) == kind]
        out["head_states_split"][kind] = {"n": len(e2e), "state_e2e_ms": _ms(e2e)}
    first: dict[int, float] = {}
    done: dict[int, float] = {}
    for r in timings.get("reasoning", []):
        if r["stamp"] < start + warmup_s or _status(r) == "withdrawn":
            continue
        first.setdefault(r["utterance_id"], (r["received"] - r["stamp"]) * 1e3)
        if r["done"]:
            done.setdefault(r["utterance_id"], (r["received"] - r["stamp"]) * 1e3)
    out["reasoning"] = {"utterances": len(first), "finished": len(done),
                        "reasoning_first_ms": _ms(list(first.values())), "reasoning_done_ms": _ms(list(done.values()))}
    late = [s for s in everything if s["stamp"] >= start + warmup_s]
    out["utterances"] = utterance_summary(late, [r for r in timings.get("reasoning", []) if r["stamp"] >= start
                                                 + warmup_s])
    out["head_while_reasoning"] = head_while_reasoning(kept, timings.get("reasoning", []))
    diags, duration = timings.get("diagnostics", []), out["duration_s"]
    out["rates_hz"] = {
        "head_states": sum(s["source"] == "head" for s in states) / duration,
        "llm_states": sum(s["source"] == "llm" for s in states) / duration,
        "reasoning_messages": len(timings.get("reasoning", [])) / duration,
        "diagnostics": sum(start <= d["received"] <= start + duration for d in diags) / duration,
        "input_frames": _diag_rate(diags, "rates_hz.frames"),
        "input_audio_chunks": _diag_rate(diags, "rates_hz.audio"),
    }
    out["inputs"] = inputs_received(diags)
    return out


def inputs_received(diagnostics: list[dict[str, Any]]) -> dict[str, Any]:
    """What the node's stream accepted over the replay, from its last /diagnostics: frames, audio chunks, and the
    gaps its audio ring filled with silence (chunks lost on the way, or a source that paused)."""
    last = next((d["values"] for d in reversed(diagnostics) if "counts.audio_chunks" in d["values"]
                 or "counts.frames" in d["values"]), None)
    if last is None:
        return {}
    return {"frames_received": int(last.get("counts.frames", 0)),
            "audio_chunks_received": int(last.get("counts.audio_chunks", 0)),
            "audio_gaps": int(last.get("buffers.audio_gaps", 0)),
            "audio_gap_s": float(last.get("buffers.audio_gap_s", 0.0))}


def bag_message_counts(bag: Path, topics: dict[str, str]) -> dict[str, int]:
    """Messages per topic in an MCAP bag, named by `topics` (name -> topic): from its summary when it has one."""
    from mcap.reader import make_reader

    with Path(bag).open("rb") as f:
        reader = make_reader(f)
        summary = reader.get_summary()
        if summary is not None and summary.statistics is not None:
            by_topic = {c.topic: summary.statistics.channel_message_counts.get(i, 0)
                        for i, c in summary.channels.items()}
        else:
            by_topic = {}
            for _, channel, _ in reader.iter_messages():
                by_topic[channel.topic] = by_topic.get(channel.topic, 0) + 1
    return {name: by_topic.get(topic, 0) for name, topic in topics.items()}


# ---------------------------------------------------------------------------------------------
# the processes
# ---------------------------------------------------------------------------------------------


def ros_environment(setup: Path | None = None) -> dict[str, str]:
    """The environment of the workspace's setup.bash over this one (the venv's ROS 2 wheels when no ROS 2 is
    sourced); with no setup.bash to find, this environment as it is (ROS 2 already sourced)."""
    setup = setup or (REPO_SETUP if REPO_SETUP.is_file() else None)
    if setup is None:
        return dict(os.environ)
    if not Path(setup).is_file():
        raise FileNotFoundError(f"{setup}: no such setup.bash (build the workspace: bash scripts/build_ros.sh)")
    venv = str(Path(sys.executable).parents[1])
    base = {**os.environ, "AMENT_PREFIX_PATH": os.environ.get("AMENT_PREFIX_PATH", venv)}
    res = subprocess.run(["bash", "-c", f". {setup} && env -0"], env=base, capture_output=True, check=True)
    return dict(kv.split("=", 1) for kv in res.stdout.decode().split("\0") if "=" in kv)


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *args], env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def interrupt(p: subprocess.Popen, timeout: float = 30.0) -> int:
    """SIGINT a ROS process (its clean shutdown path), kill it if it has not exited after `timeout` s."""
    if p.poll() is None:
        p.send_signal(signal.SIGINT)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    return p.returncode


def _tail(log: Path) -> str:
    return log.read_text()[-2000:] if log.is_file() else ""


def replay(cfg: ReplayConfig, work: Path, env: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    """Recorder + node + player over the bag; returns the decoded timings of the node's outputs."""
    outputs = work / "outputs.mcap"
    node_args = cfg.node_params()
    recorder = _start(["-m", "emo_edge_ros.recorder", "--out", str(outputs)], env, work / "recorder.log")
    node = _start(["-m", "emo_edge_ros.node", "--ros-args",
                   *[x for k, v in node_args.items() for x in ("-p", f"{k}:={v}")]], env, work / "node.log")
    try:
        player = subprocess.run([sys.executable, "-m", "emo_edge_ros.player", "--bag", str(cfg.bag),
                                 "--bag-image-topic", cfg.image_topic, "--bag-audio-topic", cfg.audio_topic,
                                 "--wait-subscribers", str(cfg.wait_node_s)],
                                env=env, capture_output=True, text=True)
        (work / "player.log").write_text(player.stdout + player.stderr)
        if player.returncode != 0:
            raise RuntimeError(f"the player failed ({player.returncode}): {player.stderr[-2000:]}")
        if "no subscriber" in player.stderr:
            raise RuntimeError(f"the node never subscribed within {cfg.wait_node_s} s: {_tail(work / 'node.log')}")
        time.sleep(cfg.tail_s)
        if node.poll() is not None:
            raise RuntimeError(f"the node exited ({node.returncode}): {_tail(work / 'node.log')}")
    finally:
        interrupt(node)
        interrupt(recorder)
    res = subprocess.run([sys.executable, "-m", "emo_edge_ros.timings", str(outputs)], env=env, capture_output=True,
                         text=True)
    if res.returncode != 0:
        raise RuntimeError(f"decoding {outputs} failed: {res.stderr[-2000:]}")
    return json.loads(res.stdout)


def run_replay(cfg: ReplayConfig, command: str | None = None) -> dict[str, Any]:
    """The bag bench; returns the results (also written to results.json and results.md under `cfg.out`)."""
    from emo_edge.bench.report import write_replay_outputs
    from emo_edge.bench.runner import _load, machine_info, versions
    from emo_edge.runtime.bundle import read_manifest

    if not Path(cfg.bag).is_file():
        raise FileNotFoundError(f"{cfg.bag}: no such bag")
    manifest = read_manifest(cfg.bundle)  # a bad bundle fails here, before any process starts
    work = Path(cfg.out) / "replay"
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "command": command,
                               "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                               "config": cfg.to_dict(), "versions": versions(),
                               "machine": {**machine_info(), "load_before": _load()},
                               "bundle": {"path": str(cfg.bundle), "target": manifest.target.name,
                                          "checkpoint": dataclasses.asdict(manifest.checkpoint)}}
    timings = replay(cfg, work, ros_environment(cfg.ros_setup))
    (work / "timings.json").write_text(json.dumps(timings))
    results["ros2_replay"] = replay_summary(timings, cfg.warmup_s)
    results["ros2_replay"]["inputs"].update(bag_message_counts(cfg.bag, {"frames_in_bag": cfg.image_topic,
                                                                         "audio_chunks_in_bag": cfg.audio_topic}))
    results["machine"]["load_after"] = _load()
    write_replay_outputs(results, Path(cfg.out))
    return results
