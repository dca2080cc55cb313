"""The timing fields of a recording of the node's outputs (mcap_recorder's default topics), as JSON.

    python -m emo_edge_ros.timings run.mcap > timings.json

`emo-edge bench --bag` runs this (ROS messages need the ROS environment to decode) and computes the
statistics itself. Every time is in seconds on the node's clock; `received` is when the recorder got
the message (the MCAP log time), `stamp` its header stamp (the input window's end).

    {"states": [{received, stamp, latency_ms, source, utterance_id, status, speech_end}],
     "reasoning": [{received, stamp, utterance_id, done, chars, status}],

status: final | provisional | withdrawn; speech_end: the VAD's end of speech (0.0 for sliding-window states).
     "diagnostics": [{received, values: {key: value}}]}
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from emo_edge_ros.convert import stamp_to_s
from emo_edge_ros.recorder import message_class

STATE_TOPIC, REASONING_TOPIC, DIAGNOSTICS_TOPIC = "/emotion/state", "/emotion/reasoning", "/diagnostics"
STATUS_NAMES = ("final", "provisional", "withdrawn")  # EmotionState / Reasoning STATUS_* values, in order


def _record(topic: str, received: float, msg: Any) -> tuple[str, dict[str, Any]] | None:
    if topic == STATE_TOPIC:
        return "states", {"received": received, "stamp": stamp_to_s(msg.header.stamp), "latency_ms": msg.latency_ms,
                          "source": "llm" if msg.source == msg.SOURCE_LLM else "head",
                          "utterance_id": msg.utterance_id, "status": STATUS_NAMES[msg.status],
                          "speech_end": stamp_to_s(msg.speech_end)}
    if topic == REASONING_TOPIC:
        return "reasoning", {"received": received, "stamp": stamp_to_s(msg.header.stamp),
                             "utterance_id": msg.utterance_id, "done": msg.done, "chars": len(msg.text),
                             "status": STATUS_NAMES[msg.status]}
    if topic == DIAGNOSTICS_TOPIC and msg.status:
        return "diagnostics", {"received": received, "values": {kv.key: kv.value for kv in msg.status[0].values}}
    return None


def read_timings(path: Path) -> dict[str, list[dict[str, Any]]]:
    from mcap.reader import make_reader
    from rclpy.serialization import deserialize_message

    out: dict[str, list[dict[str, Any]]] = {"states": [], "reasoning": [], "diagnostics": []}
    with path.open("rb") as f:
        topics = [STATE_TOPIC, REASONING_TOPIC, DIAGNOSTICS_TOPIC]
        for schema, channel, message in make_reader(f).iter_messages(topics=topics, log_time_order=True):
            rec = _record(channel.topic, message.log_time * 1e-9,
                          deserialize_message(message.data, message_class(schema.name)))
            if rec is not None:
                out[rec[0]].append(rec[1])
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mcap", type=Path, help="an MCAP recording of the node's outputs")
    args = ap.parse_args(argv)
    json.dump(read_timings(args.mcap), sys.stdout)


if __name__ == "__main__":
    main()
