"""Helpers shared by the ROS 2 tests: the workspace's environment on a private domain, node / recorder
processes, SIGINT with a deadline, and an MCAP of the node's outputs decoded to plain dicts.

Needs ros2_ws built (scripts/build_ros.sh, which scripts/setup.sh runs); `needs_ros_ws` skips otherwise.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WS = ROOT / "ros2_ws" / "install"
TEST_WS = ROOT / "ros2_ws" / "test_install"  # test-only audio_common_msgs + hri_msgs (tests/ros_interfaces)

needs_ros_ws = pytest.mark.skipif(not (WS / "setup.bash").is_file(),
                                  reason="ros2_ws is not built (bash scripts/build_ros.sh)")
# the test-only copies, or the real audio_common_msgs + hri_msgs of a sourced ROS 2 (build_ros.sh then skips the copies)
needs_test_interfaces = pytest.mark.skipif(
    not (TEST_WS / "setup.bash").is_file() and importlib.util.find_spec("hri_msgs") is None,
    reason="no audio_common_msgs/hri_msgs: the test interfaces are not built (bash scripts/build_ros.sh)")


def ros_environment(test_interfaces: bool = False) -> dict[str, str]:
    """The environment of `. ros2_ws/install/setup.bash` (over the venv's ROS 2 wheels), on a private domain;
    test_interfaces: with the test-only audio_common_msgs and hri_msgs sourced on top."""
    venv = str(Path(sys.executable).parents[1])
    base = {**os.environ, "AMENT_PREFIX_PATH": os.environ.get("AMENT_PREFIX_PATH", venv), "OMP_NUM_THREADS": "1"}
    with_test = test_interfaces and (TEST_WS / "setup.bash").is_file()
    setup = f". {WS}/setup.bash" + (f" && . {TEST_WS}/setup.bash" if with_test else "")
    out = subprocess.run(["bash", "-c", f"{setup} && env -0"], env=base, capture_output=True, check=True)
    env = dict(kv.split("=", 1) for kv in out.stdout.decode().split("\0") if "=" in kv)
    env.update(ROS_DOMAIN_ID=str(random.randint(10, 200)), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               PYTHONUNBUFFERED="1")
    return env


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *args], env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)


def _node(bundle: Path, env: dict[str, str], log: Path, **params: object) -> subprocess.Popen:
    ros = ["--ros-args", "-p", f"bundle:={bundle}"] + [x for k, v in params.items() for x in ("-p", f"{k}:={v}")]
    return _start(["-m", "emo_edge_ros.node", *ros], env, log)


def run_publisher(args: list[str], env: dict[str, str], node: subprocess.Popen, recorder: subprocess.Popen,
                  node_log: Path, settle_s: float) -> tuple[str, str]:
    """Run a publisher script to its end while `node` and `recorder` run, wait `settle_s` for the node's last
    outputs, then stop both with SIGINT. Asserts the publisher succeeded and the node was still alive; returns the
    publisher's stdout and the node's log."""
    import time

    from emo_edge.bench.replay import interrupt

    try:
        pub = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=300)
        assert pub.returncode == 0, pub.stderr[-3000:]
        time.sleep(settle_s)
        alive = node.poll() is None
    finally:
        interrupt(node)
        interrupt(recorder)
    log = node_log.read_text()
    assert alive, log[-3000:]
    return pub.stdout, log


def _recorder(out: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    return _start(["-m", "emo_edge_ros.recorder", "--out", str(out)], env, log)




DUMP = """
import json, sys
from mcap.reader import make_reader
from rclpy.serialization import deserialize_message
from emo_edge_ros.recorder import message_class

def plain(x):
    if hasattr(x, "get_fields_and_field_types"):
        return {k: plain(getattr(x, k)) for k in x.get_fields_and_field_types()}
    if isinstance(x, bytes):
        return int.from_bytes(x, "little") if len(x) == 1 else list(x)
    if isinstance(x, (list, tuple)) or type(x).__name__ == "array" or hasattr(x, "tolist"):
        return [plain(v) for v in (x.tolist() if hasattr(x, "tolist") else x)]
    return x

out = {}
with open(sys.argv[1], "rb") as f:
    for schema, channel, m in make_reader(f).iter_messages():
        msg = deserialize_message(m.data, message_class(schema.name))
        out.setdefault(channel.topic, []).append([m.log_time * 1e-9, plain(msg)])
json.dump(out, sys.stdout)
"""


class Msg(dict):
    """A decoded message: fields as attributes (nested dicts too)."""

    def __getattr__(self, name: str):
        v = self[name]
        return Msg(v) if isinstance(v, dict) else v


def read_mcap(path: Path, env: dict[str, str], recorder_log: Path | None = None) -> dict[str, list]:
    """topic -> [(log time s, message)], decoded by a process with the ROS environment; a file that cannot be read
    fails with the recorder's log (`recorder_log`) beside the reader's error."""
    res = subprocess.run([sys.executable, "-c", DUMP, str(path)], env=env, capture_output=True, text=True, timeout=120)
    log = recorder_log.read_text()[-2000:] if recorder_log is not None and recorder_log.is_file() else "(no log)"
    assert res.returncode == 0, (f"{path} ({path.stat().st_size if path.is_file() else 'missing'} bytes) could not "
                                 f"be read: {res.stderr[-2000:]}\nrecorder log: {log}")
    return {k: [(t, Msg(m)) for t, m in v] for k, v in json.loads(res.stdout).items()}
