"""The layering promise: `emo_edge.runtime` and the ROS 2 node import nothing from export, train, model,
eval or torch. Each check imports in a fresh interpreter and lists the forbidden modules that got loaded."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from ros_support import needs_ros_ws, ros_environment

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = ("torch", "emo_edge.export", "emo_edge.train", "emo_edge.model", "emo_edge.eval")

# imports every submodule of emo_edge.runtime (and whatever else argv names), then prints the forbidden
# modules now in sys.modules with the module that was being imported when each first appeared
PROBE = """
import importlib, json, pkgutil, sys
FORBIDDEN = {forbidden!r}
def bad():
    return sorted(m for m in sys.modules if any(m == f or m.startswith(f + ".") for f in FORBIDDEN))
blame = {{}}
import emo_edge.runtime as rt
names = ["emo_edge.runtime." + m.name for m in pkgutil.walk_packages(rt.__path__)] + sys.argv[1:]
for name in names:
    importlib.import_module(name)
    for m in bad():
        blame.setdefault(m, name)
print(json.dumps({{"imported": names, "forbidden": blame}}))
"""


def _probe(extra: list[str], env: dict[str, str] | None = None) -> dict:
    code = PROBE.format(forbidden=FORBIDDEN)
    out = subprocess.run([sys.executable, "-c", code, *extra], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_runtime_imports_nothing_upward() -> None:
    result = _probe([])
    assert "emo_edge.runtime.bundle" in result["imported"] and "emo_edge.runtime.stream" in result["imported"]
    assert result["forbidden"] == {}, f"runtime imports upward (module: first importer): {result['forbidden']}"


@needs_ros_ws
def test_ros_node_imports_only_runtime_and_core() -> None:
    import os

    env = ros_environment()
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    result = _probe(["emo_edge_ros.node", "emo_edge_ros.convert", "emo_edge_ros.spin"], env=env)
    assert "emo_edge_ros.node" in result["imported"]
    assert result["forbidden"] == {}, f"the ROS node imports upward (module: first importer): {result['forbidden']}"
