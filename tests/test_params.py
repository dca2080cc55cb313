"""One parameter table: StreamConfig's settings generate the node's parameters, config/params.yaml, the
`emo-edge run` options and the bag replay's node parameters; the launch file is checked against the table.
No ROS 2 needed (the node's table lives in a module without rclpy), except the launch run, which skips
cleanly without ROS 2's launch."""

from __future__ import annotations

import ast
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from emo_edge.runtime.settings import SETTINGS, from_flat, to_flat, yaml_scalar
from emo_edge.runtime.stream import StreamConfig

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "ros2_ws" / "src" / "emo_edge_ros"
LAUNCH = PKG / "launch" / "emo_edge.launch.py"
sys.path.insert(0, str(PKG))  # emo_edge_ros.params imports no rclpy

from emo_edge_ros.params import NODE_PARAMS, PARAMS_FILE, node_parameters, params_yaml  # noqa: E402

FLAT_DEFAULTS = to_flat(StreamConfig())


def test_regenerated_params_yaml_equals_the_committed_one():
    assert PARAMS_FILE == PKG / "config" / "params.yaml"
    assert params_yaml() == PARAMS_FILE.read_text(), "run: python scripts/gen_ros_params.py"


def test_params_yaml_holds_every_parameter_with_its_default():
    values = yaml.safe_load(PARAMS_FILE.read_text())["emo_edge"]["ros__parameters"]
    assert set(values) == set(node_parameters()) == set(NODE_PARAMS) | set(SETTINGS)
    for name, flat in FLAT_DEFAULTS.items():
        assert values[name] == flat and type(values[name]) is type(flat), name
    assert values["vad_aggressiveness"] == StreamConfig().vad_aggressiveness == 1


def test_node_cli_and_replay_defaults_equal_the_stream_config():
    from typer.main import get_command

    from emo_edge.bench.replay import ReplayConfig
    from emo_edge.cli import app

    node = {k: v[0] for k, v in node_parameters().items() if k in SETTINGS}
    assert node == FLAT_DEFAULTS
    run = get_command(app).commands["run"]
    cli = {p.name: p.default for p in run.params if p.name in SETTINGS}
    assert cli == FLAT_DEFAULTS
    helps = {p.name: p.help for p in run.params if p.name in SETTINGS}
    assert all(helps[k] == SETTINGS[k].description for k in SETTINGS)
    replay = ReplayConfig(Path("b.mcap"), Path("bundle"), Path("out")).node_params()
    assert {k: replay[k] for k in SETTINGS} == {k: yaml_scalar(v) for k, v in FLAT_DEFAULTS.items()}


def test_run_options_reach_the_stream_config(tmp_path):
    """`emo-edge run --vad-aggressiveness 3 --no-reason --subtitle hi` builds that StreamConfig (then stops at
    the missing bundle, after parsing)."""
    from typer.testing import CliRunner

    from emo_edge.cli import app

    res = CliRunner().invoke(app, ["run", "--bundle", str(tmp_path / "none"), "--video", "x.mp4",
                                   "--vad-aggressiveness", "7"])
    assert res.exit_code == 2 and "vad_aggressiveness must be <= 3" in res.output, res.output
    res = CliRunner().invoke(app, ["run", "--help"])
    assert "--transcript" in res.output and "--vad-aggressiveness" in res.output and "--no-reason" in res.output


def test_flat_values_round_trip_and_bad_ones_are_refused_by_name():
    cfg = StreamConfig(window_s=3.0, subtitle="hello", numpy_blas_threads=None, fast_hz=0.0)
    flat = to_flat(cfg)
    assert flat["numpy_blas_threads"] == 0 and flat["subtitle"] == "hello" and flat["window_s"] == 3.0
    assert from_flat(flat) == cfg
    assert from_flat({"window_s": 0.0, "subtitle": ""}).window_s is None
    assert from_flat({"fast_hz": 4}).fast_hz == 4.0  # an int for a float, as ROS parameters may come
    with pytest.raises(ValueError, match="unknown stream setting.*'fast'"):
        from_flat({"fast": 2.0})
    with pytest.raises(ValueError, match="reason=.*must be a bool"):
        from_flat({"reason": "yes"})
    for bad, match in (({"vad_aggressiveness": 4}, "vad_aggressiveness must be <= 3"),
                       ({"max_reason_tokens": 0}, "max_reason_tokens must be >= 1"),
                       ({"stale_s": 0.0}, "stale_s must be > 0"), ({"transcript_slack_s": -1.0}, "transcript_slack_s")):
        with pytest.raises(ValueError, match=match):
            StreamConfig(**bad)


def test_each_setting_is_described_with_its_range():
    assert SETTINGS["vad"].description.endswith("webrtc | energy | none")
    assert SETTINGS["vad_aggressiveness"].description.endswith("[>= 0, <= 3]")
    assert SETTINGS["stale_s"].description.endswith("[> 0]")
    assert all(len(s.help) > 10 for s in SETTINGS.values())


# -- the launch file ------------------------------------------------------------------------------------

def _launch_arguments() -> dict[str, dict]:
    """DeclareLaunchArgument(name, default_value=..., description=...) calls of the launch file, by AST."""
    tree = ast.parse(LAUNCH.read_text(), str(LAUNCH))
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "DeclareLaunchArgument":
            kw = {k.arg: ast.literal_eval(k.value) for k in node.keywords if isinstance(k.value, ast.Constant)}
            out[ast.literal_eval(node.args[0])] = kw
    return out


def _module_constant(name: str) -> dict:
    tree = ast.parse(LAUNCH.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == name:
            return {ast.literal_eval(k): v for k, v in zip(node.value.keys, node.value.values, strict=True)}
    raise AssertionError(f"{name} not found in {LAUNCH}")


def test_launch_file_compiles_and_its_arguments_match_the_parameter_table():
    compile(LAUNCH.read_text(), str(LAUNCH), "exec")
    args, table = _launch_arguments(), node_parameters()
    passed, topics = _module_constant("PARAMETER_ARGS"), _module_constant("TOPIC_ARGS")
    assert set(args) == set(passed) | set(topics) | {"params"}, sorted(args)
    for name in passed:
        assert name in table, f"launch argument {name} is passed as a parameter the node does not declare"
        if "default_value" in args[name]:
            default = table[name][0]
            want = ("true" if default else "false") if isinstance(default, bool) else str(default)
            assert args[name]["default_value"] == want, (name, args[name]["default_value"], default)
        assert args[name].get("description"), name


@pytest.mark.skipif(importlib.util.find_spec("launch_ros") is None or shutil.which("ros2") is None,
                    reason="ROS 2 launch is not installed (not on PyPI): needs a sourced system ROS 2")
def test_launch_file_starts_the_node(default_bundle, tmp_path):
    """Runs the launch file for real where ROS 2's launch is installed (a system ROS 2 with ros2_ws built)."""
    proc = subprocess.Popen(["ros2", "launch", "emo_edge_ros", "emo_edge.launch.py", f"bundle:={default_bundle}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out = ""
        for line in proc.stdout:
            out += line
            if "active" in line and "inactive" not in line:
                break
    finally:
        proc.terminate()
        proc.wait(30)
    assert "configured: bundle" in out and "active" in out, out[-3000:]


def test_every_label_maps_to_a_rep155_expression_constant():
    """The label -> hri_msgs/Expression table against the published constants (tests/ros_interfaces copy)."""
    import re

    from emo_edge_ros.hri import EXPRESSIONS, FaceChooser, expression_of

    from emo_edge.labels import LABELS

    msg = (ROOT / "tests" / "ros_interfaces" / "hri_msgs" / "msg" / "Expression.msg").read_text()
    constants = set(re.findall(r'^string [A-Z]+="(\w+)"', msg, re.M))
    assert len(constants) == 25 and set(EXPRESSIONS.values()) <= constants
    assert [expression_of(lb) for lb in LABELS] == ["neutral", "happy", "sad", "angry", "scared", "surprised"]
    assert expression_of("contempt") == ""
    now = [0.0]
    faces = FaceChooser("", "person", clock=lambda: now[0])
    assert faces.current() == "person"  # nothing tracked yet: the default id
    faces.on_tracked(["a", "b"])
    faces.on_roi("a", 0.1)
    assert faces.current() is None  # two faces, b's size not known yet: no guess
    now[0] = 1.5
    assert faces.current() == "a"  # b went without an ROI for ROI_WAIT_S: the largest known
    faces.on_roi("b", 0.3)
    assert faces.current() == "b"  # the largest
    faces.on_tracked(["b", "c"])
    assert faces.current() is None  # c is new and has no ROI yet
    faces.on_tracked([])
    assert faces.current() is None
    chosen = FaceChooser("a", "person")
    chosen.on_tracked(["b"])
    assert chosen.current() is None  # the configured face is not in view


def test_expressions_go_out_in_time_order_without_withdrawn_answers():
    """An utterance's early answer is published, then withdrawn or re-published final at the hangover with the same
    (older) stamp, while sliding states with newer stamps went out: expressions keep time order and drop both."""
    from emo_edge_ros.hri import ExpressionOrder

    order = ExpressionOrder()
    seen = [(status, t) for status, t in [("final", 10.0), ("provisional", 10.2), ("final", 10.5),
                                          ("withdrawn", 10.2), ("final", 10.2), ("final", 11.0), ("withdrawn", 12.0)]
            if order.admit(status, t)]
    assert seen == [("final", 10.0), ("provisional", 10.2), ("final", 10.5), ("final", 11.0)]
