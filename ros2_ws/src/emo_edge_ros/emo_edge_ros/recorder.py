"""Record topics to an MCAP file (ROS 2 CDR messages with their ros2msg schemas), readable by rosbag2,
Foxglove and the `mcap` / `rosbags` packages.

    mcap_recorder --out run.mcap                    # the node's outputs: emotion/state, emotion/reasoning, /diagnostics
    mcap_recorder --out in.mcap --topics /image:sensor_msgs/msg/Image /audio:emo_edge_msgs/msg/AudioChunk
"""

from __future__ import annotations

import argparse
import importlib
import os
import threading
from pathlib import Path
from typing import Any

from rclpy.node import Node
from rclpy.qos import QoSProfile, qos_profile_sensor_data

from emo_edge_ros.spin import spin_node

DEFAULT_TOPICS = ("/emotion/state:emo_edge_msgs/msg/EmotionState", "/emotion/reasoning:emo_edge_msgs/msg/Reasoning",
                  "/diagnostics:diagnostic_msgs/msg/DiagnosticArray")
PRIMITIVES = {"bool", "byte", "char", "float32", "float64", "int8", "uint8", "int16", "uint16", "int32", "uint32",
              "int64", "uint64", "string", "wstring"}
SEPARATOR = "=" * 80


def message_class(type_name: str) -> Any:
    """'pkg/msg/Type' (or 'pkg/Type') -> the Python message class."""
    pkg, _, name = type_name.replace("/msg/", "/").partition("/")
    return getattr(importlib.import_module(f"{pkg}.msg"), name)


def _msg_file(pkg: str, name: str) -> Path:
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        p = Path(prefix) / "share" / pkg / "msg" / f"{name}.msg"
        if p.is_file():
            return p
    raise FileNotFoundError(f"{pkg}/msg/{name}.msg not found under AMENT_PREFIX_PATH")


def msg_definition(type_name: str) -> str:
    """The ros2msg schema text: the type's .msg, then each nested type once, as rosbag2 writes it."""
    pkg, _, name = type_name.replace("/msg/", "/").partition("/")
    parts, seen, todo = [], set(), [(pkg, name)]
    while todo:
        p, n = todo.pop(0)
        if (p, n) in seen:
            continue
        seen.add((p, n))
        text = _msg_file(p, n).read_text()
        parts.append(text if not parts else f"{SEPARATOR}\nMSG: {p}/{n}\n{text}")
        for line in text.splitlines():
            field = line.split("#", 1)[0].split()
            if len(field) < 2 or "=" in line.split("#", 1)[0]:
                continue
            base = field[0].split("[", 1)[0].split("<=", 1)[0]
            if base in PRIMITIVES:
                continue
            dep_pkg, _, dep = base.replace("/msg/", "/").rpartition("/")
            todo.append((dep_pkg or p, dep))
    return "\n".join(parts)


class McapRecorder(Node):
    def __init__(self, out: Path, topics: list[str]):
        super().__init__("emo_edge_recorder")
        from mcap.writer import Writer

        self._file = out.open("wb")
        self._writer = Writer(self._file)
        self._writer.start(profile="ros2", library="emo-edge")
        self._lock = threading.Lock()
        self.counts: dict[str, int] = {}
        for spec in topics:
            topic, _, type_name = spec.partition(":")
            schema = self._writer.register_schema(name=type_name, encoding="ros2msg",
                                                  data=msg_definition(type_name).encode())
            channel = self._writer.register_channel(topic=topic, message_encoding="cdr", schema_id=schema)
            qos = qos_profile_sensor_data if type_name.startswith("sensor_msgs") else QoSProfile(depth=100)
            self.create_subscription(message_class(type_name), topic,
                                     lambda data, c=channel, t=topic: self._write(c, t, data), qos, raw=True)
            self.counts[topic] = 0

    def _write(self, channel: int, topic: str, data: bytes) -> None:
        now = self.get_clock().now().nanoseconds
        with self._lock:
            self._writer.add_message(channel_id=channel, log_time=now, publish_time=now, data=data,
                                     sequence=self.counts[topic])
            self.counts[topic] += 1

    def close(self) -> None:
        with self._lock:
            self._writer.finish()
            self._file.close()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="MCAP file to write")
    ap.add_argument("--topics", nargs="*", default=list(DEFAULT_TOPICS), help="TOPIC:pkg/msg/Type ...")
    args, ros_args = ap.parse_known_args(argv)
    spin_node(lambda: McapRecorder(args.out, args.topics), ros_args)


if __name__ == "__main__":
    main()
