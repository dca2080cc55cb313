"""The node as a managed (lifecycle) node, driven from another process through its real services
(/emo_edge/change_state, /emo_edge/get_state, /emo_edge/set_parameters) over Fast DDS on loopback."""

from __future__ import annotations

import json
import subprocess
import sys

from ros_support import ROOT, _node, needs_ros_ws, ros_environment

from emo_edge.bench.replay import interrupt

pytestmark = needs_ros_ws


def test_lifecycle_transitions_through_the_services(default_bundle, tmp_path):
    env = ros_environment()
    bad = tmp_path / "no-such-bundle"
    node = _node(bad, env, tmp_path / "node.log", autostart="false", fast_hz=4.0, slow="'off'")  # quoted: YAML
    try:
        client = subprocess.run([sys.executable, str(ROOT / "tests" / "ros_lifecycle_client.py"), str(default_bundle)],
                                env=env, capture_output=True, text=True, timeout=600)
        alive = node.poll() is None
    finally:
        rc = interrupt(node)
    log = (tmp_path / "node.log").read_text()
    assert client.returncode == 0, client.stderr[-3000:] + log[-3000:]
    steps = {s["step"]: s for s in map(json.loads, client.stdout.splitlines())}
    print(json.dumps(steps, indent=1))
    assert alive, log[-3000:]
    assert rc == 0, log[-3000:]

    def check(step: str, success: bool | None, state: str, subs: int) -> dict:
        s = steps[step]
        assert (s["success"], s["state"], s["image_subscribers"]) == (success, state, subs), s
        return s

    check("start", None, "unconfigured", 0)  # autostart false: nothing loaded, nothing subscribed
    check("configure_bad_bundle", False, "unconfigured", 0)
    assert f"configure failed: BundleError: bundle {bad}: no such directory" in log  # the reason, logged
    check("set_good_bundle", True, "unconfigured", 0)
    assert check("configure", True, "inactive", 0)["states"] == 0  # loaded, but not publishing
    active = check("activate", True, "active", 1)
    assert active["states"] >= 5 and active["diagnostics"] >= 2, active  # 4 Hz head updates, 1 Hz diagnostics
    inactive = check("deactivate", True, "inactive", 0)
    assert inactive["states"] == 0 and inactive["diagnostics"] == 0, inactive
    assert check("activate_again", True, "active", 1)["states"] >= 5  # a fresh stream after reactivation
    check("deactivate_again", True, "inactive", 0)
    check("cleanup", True, "unconfigured", 0)
    check("shutdown", True, "finalized", 0)
    assert "cleaned up: runtime released" in log
    assert "Traceback" not in log, log[-3000:]
