"""Packaging: data files found by name (emo_edge.resources), the one YAML loader, and the wheel on its own.

The wheel test builds the package from the working tree, installs it into a fresh venv outside the repository
(torch and the other dependencies reached through a .pth line to this interpreter's site-packages, so nothing is
downloaded), and exports the shipped default for cpu-x86 there: profile and calibration manifest come from the
wheel's package data.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from emo_edge import resources
from emo_edge.config import load_yaml
from emo_edge.export.profiles import load_profile
from emo_edge.export.quantize import load_manifest

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------
# lookup
# ---------------------------------------------------------------------------------------------


def test_names_resolve_to_repository_files_in_a_checkout():
    assert resources.in_checkout()
    assert resources.find(resources.PROFILES, "cpu-x86") == ROOT / "export" / "cpu-x86.yaml"
    assert resources.find(resources.CALIBRATIONS, "synthemo-val") == ROOT / "calibration" / "synthemo-val.yaml"
    assert resources.names(resources.PROFILES) == sorted(p.stem for p in (ROOT / "export").glob("*.yaml"))
    with pytest.raises(ValueError, match=r"unknown calibration manifest 'nope'; available: synthemo-val"):
        resources.find(resources.CALIBRATIONS, "nope")
    with pytest.raises(ValueError, match=r"export profile 'missing/mine.yaml': no such file"):
        load_profile("missing/mine.yaml")


@pytest.fixture
def installed_layout(tmp_path, monkeypatch):
    """emo_edge.resources as in an installed wheel: no checkout above the package, copies in package data."""
    package = tmp_path / "site-packages" / "emo_edge"
    (package / "targets").mkdir(parents=True)
    (package / "calibration").mkdir()
    (package / "targets" / "robot.yaml").write_text(yaml.safe_dump({"llm": {"quantization": "f16"}}))
    (package / "calibration" / "cal.yaml").write_text("data: ../data/synthemo\nsplit: val\n")
    monkeypatch.setattr(resources, "PACKAGE_DIR", package)
    monkeypatch.setattr(resources, "REPO_ROOT", package.parent)
    return package


def test_packaged_files_are_found_when_no_checkout_is_there(installed_layout, tmp_path, monkeypatch):
    assert not resources.in_checkout()
    assert resources.names(resources.PROFILES) == ["robot"]
    profile = load_profile("robot")
    assert profile.name == "robot" and profile.llm.quantization == "f16"
    # a packaged manifest's relative paths start where they would in the repository: ./calibration
    work = tmp_path / "project"
    work.mkdir()
    monkeypatch.chdir(work)
    assert load_manifest("cal").data == str(work.resolve() / "data" / "synthemo")
    # a user's own manifest keeps paths relative to itself
    mine = tmp_path / "elsewhere" / "mine.yaml"
    mine.parent.mkdir()
    mine.write_text("data: clips\n")
    assert load_manifest(mine).data == str(mine.parent.resolve() / "clips")


# ---------------------------------------------------------------------------------------------
# the one YAML -> dataclass loader
# ---------------------------------------------------------------------------------------------


@dataclass
class _Inner:
    size: int = 1


@dataclass
class _Outer:
    name: str
    inner: _Inner


@pytest.mark.parametrize("text, expect", [
    ("name: a\ninner: {size: 2, colour: red}\n", r"inner: unknown key\(s\) \['colour'\]; valid: \['size'\]"),
    ("inner: {size: 2}\n", r"missing key\(s\) \['name'\]"),
    ("name: a\ninner: 3\n", r"inner: expected a mapping, got 3"),
    ("- a\n- b\n", r"expected a mapping at the top level, got list"),
    ("name: [a\n", r"not valid YAML"),
])
def test_bad_yaml_names_the_file_and_field(tmp_path, text, expect):
    path = tmp_path / "x.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=expect) as err:
        load_yaml(_Outer, path)
    assert str(path) in str(err.value)


def test_nested_sections_and_defaults(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("inner: {size: 5}\n")
    assert load_yaml(_Outer, path, name="from-file-name") == _Outer("from-file-name", _Inner(5))
    path.write_text("name: b\ninner: null\n")  # a null section takes its defaults
    assert load_yaml(_Outer, path) == _Outer("b", _Inner(1))
    manifest = tmp_path / "cal.yaml"
    manifest.write_text("split: val\n")
    with pytest.raises(ValueError, match=r"cal.yaml: CalibrationManifest: missing key\(s\) \['data'\]"):
        load_manifest(manifest)


# ---------------------------------------------------------------------------------------------
# the wheel, installed outside the repository
# ---------------------------------------------------------------------------------------------


def _run(cmd: list[str], cwd: Path, timeout: float, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, f"{cmd[:4]} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def _build_wheel(tmp: Path) -> Path:
    """The wheel of the working tree (tracked and new files), built from a copy so no stale build/ leaks in."""
    src = tmp / "src"
    files = _run(["git", "ls-files", "-co", "--exclude-standard", "-z"], ROOT, 60).split("\0")
    for rel in filter(None, files):
        if (ROOT / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            (src / rel).write_bytes((ROOT / rel).read_bytes())
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(src),
          "-w", str(tmp / "dist")], tmp, 300)
    (wheel,) = (tmp / "dist").glob("emo_edge-*.whl")
    return wheel


def _fresh_venv(tmp: Path) -> tuple[Path, Path]:
    """A venv without pip; this interpreter's site-packages (torch, ...) reached through a .pth line."""
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp, 120)
    python = venv / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp, 60).strip())
    # a plain path line: the main venv's own .pth files (its editable emo_edge) are not processed from here
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python, site


def test_wheel_carries_the_data_files_and_exports_cpu_x86_without_the_repository(tmp_path, synth_dir):
    wheel = _build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    for profile in (ROOT / "export").glob("*.yaml"):
        assert f"emo_edge/targets/{profile.name}" in names
    assert "emo_edge/calibration/synthemo-val.yaml" in names and "emo_edge/default/perception.safetensors" in names
    assert not [n for n in names if n.startswith(("tests/", "export/", "calibration/", "emo_edge/targets/build"))]

    python, site = _fresh_venv(tmp_path)
    _run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile", "--target", str(site),
          str(wheel)], tmp_path, 300)
    work = tmp_path / "project"  # a user's directory: data/synthemo-v2, as `emo-edge data synth` would write it
    (work / "data").mkdir(parents=True)
    (work / "data" / "synthemo-v2").symlink_to(synth_dir)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    _run([str(python), str(site / "bin" / "emo-edge"), "export", "--out", "bundle", "--target", "cpu-x86",
          "--data", "data/synthemo-v2", "--parity-clips", "4"], work, 900, env)

    check = ("import json, emo_edge\n"
             "from emo_edge import resources\n"
             "from emo_edge.export.quantize import load_manifest\n"
             "from emo_edge.runtime.bundle import load_bundle\n"
             "b = load_bundle('bundle'); b.perception; b.llm\n"
             "print(json.dumps({'module': emo_edge.__file__,\n"
             "                  'profile': str(resources.find(resources.PROFILES, 'cpu-x86')),\n"
             "                  'calibration': load_manifest('synthemo-val').data}))")
    out = json.loads(_run([str(python), "-c", check], work, 300, env).strip().splitlines()[-1])
    for key in ("module", "profile"):
        found = Path(out[key]).resolve()
        assert found.is_relative_to(site.resolve()) and not found.is_relative_to(ROOT), out
    assert Path(out["calibration"]) == synth_dir.resolve()  # ./calibration/../data/synthemo-v2, from the project dir
    manifest = json.loads((work / "bundle" / "manifest.json").read_text())
    assert manifest["target"]["name"] == "cpu-x86" and "int8" in manifest["perception"]


# ---------------------------------------------------------------------------------------------
# the robot's Python: the CLI's runtime paths need no torch (scripts/check_py310.sh runs them on 3.10)
# ---------------------------------------------------------------------------------------------


def test_cli_and_runtime_import_without_torch():
    code = ("import sys\n"
            "sys.modules['torch'] = None  # any `import torch` now raises ImportError\n"
            "import importlib, pkgutil\n"
            "import emo_edge.runtime\n"
            "from emo_edge.cli import app\n"
            "names = [m.name for m in pkgutil.iter_modules(emo_edge.runtime.__path__, 'emo_edge.runtime.')]\n"
            "for name in [*names, 'emo_edge.eval.evaluate', 'emo_edge.export.profiles', 'emo_edge.resources']:\n"
            "    importlib.import_module(name)\n"
            "for command in ('run', 'eval', 'info'):\n"
            "    try:\n"
            "        app([command, '--help'], standalone_mode=False)\n"
            "    except SystemExit as e:\n"
            "        assert e.code in (0, None), e.code\n"
            "print('modules', len(names))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert int(proc.stdout.split()[-1]) >= 5  # the runtime's modules were found and imported
