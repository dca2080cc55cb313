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

A bag of SynthEmo clips: `python -m emo_edge_ros.player --jsonl data/synthemo/test.jsonl --limit 10
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emo_edge.bench.stats import summarize_ms
from emo_edge.runtime.stream import latency_kind

SCHEMA_VERSION = 1
REPO_SETUP = Path(__file__).resolve().parents[2] / "ros2_ws" / "install" / "setup.bash"


@dataclass
class ReplayConfig:
    bag: Path
    bundle: Path
    out: Path
    threads: int = 2  # the node's ONNX Runtime and llama.cpp threads
    fast_hz: float = 2.0  # Hz, the node's sliding-window head updates
    slow: str = "utterance"  # what starts the node's LLM: utterance, timer, both or off
    warmup_s: float = 2.0  # s, states whose window ends this soon after the first one are not counted
    tail_s: float = 10.0  # s after the bag ends for the last utterance's answer and reasoning
    wait_node_s: float = 180.0  # s the player waits for the node to subscribe (it loads the bundle first)
    ros_setup: Path | None = None  # setup.bash of the built workspace (None: ros2_ws/install, or the current env)
    image_topic: str = "/image"
    audio_topic: str = "/audio"

    def __post_init__(self) -> None:
        if self.slow not in ("utterance", "timer", "both", "off"):
            raise ValueError(f"replay: slow={self.slow!r}; choose one of utterance, timer, both, off")
        if self.fast_hz < 0 or self.warmup_s < 0 or self.tail_s < 0 or self.threads < 1:
            raise ValueError(f"replay: fast_hz, warmup_s and tail_s must be >= 0 and threads >= 1, got {self.fast_hz}, "
                             f"{self.warmup_s}, {self.tail_s}, {self.threads}")

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


def replay_summary(timings: dict[str, list[dict[str, Any]]], warmup_s: float) -> dict[str, Any]:
    """The decoded outputs of a replay (emo_edge_ros.timings) -> latency percentiles, counts and rates."""
    states = timings.get("states", [])
    if not states:
        raise ValueError("replay: the node published no emotion state (see node.log in the output directory)")
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
        if r["stamp"] < start + warmup_s:
            continue
        first.setdefault(r["utterance_id"], (r["received"] - r["stamp"]) * 1e3)
        if r["done"]:
            done[r["utterance_id"]] = (r["received"] - r["stamp"]) * 1e3
    out["reasoning"] = {"utterances": len(first), "finished": len(done),
                        "reasoning_first_ms": _ms(list(first.values())), "reasoning_done_ms": _ms(list(done.values()))}
    diags, duration = timings.get("diagnostics", []), out["duration_s"]
    out["rates_hz"] = {
        "head_states": sum(s["source"] == "head" for s in states) / duration,
        "llm_states": sum(s["source"] == "llm" for s in states) / duration,
        "reasoning_messages": len(timings.get("reasoning", [])) / duration,
        "diagnostics": sum(start <= d["received"] <= start + duration for d in diags) / duration,
        "input_frames": _diag_rate(diags, "rates_hz.frames"),
        "input_audio_chunks": _diag_rate(diags, "rates_hz.audio"),
    }
    return out


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
    node_args = {"bundle": cfg.bundle, "threads": cfg.threads, "fast_hz": float(cfg.fast_hz),
                 "slow": f"'{cfg.slow}'"}  # quoted: 'off' is a YAML boolean
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
                               "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                               "config": cfg.to_dict(), "versions": versions(),
                               "machine": {**machine_info(), "load_before": _load()},
                               "bundle": {"path": str(cfg.bundle), "target": manifest.target.name,
                                          "checkpoint": dataclasses.asdict(manifest.checkpoint)}}
    timings = replay(cfg, work, ros_environment(cfg.ros_setup))
    (work / "timings.json").write_text(json.dumps(timings))
    results["ros2_replay"] = replay_summary(timings, cfg.warmup_s)
    results["machine"]["load_after"] = _load()
    write_replay_outputs(results, Path(cfg.out))
    return results
