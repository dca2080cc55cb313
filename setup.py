"""Build step: the wheel carries the repository's export target profiles and calibration manifests.

Users edit them at the top of the repository (`export/*.yaml`, `calibration/*.yaml`); `build_py` copies them
into the built package (`emo_edge/targets/`, `emo_edge/calibration/`), where `emo_edge.resources` finds them
in an installed wheel. An editable install copies nothing: it reads the repository's files. Everything else
about the package is in pyproject.toml.
"""

import importlib.util
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


def _resources():
    """emo_edge/resources.py loaded on its own (it imports nothing from the package): the one table of places."""
    spec = importlib.util.spec_from_file_location("_emo_edge_resources", ROOT / "emo_edge" / "resources.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


class BuildPyWithDataFiles(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        res = _resources()
        for kind in (res.PROFILES, res.CALIBRATIONS):
            for src in sorted((ROOT / kind.repo_dir).glob(f"*{res.SUFFIX}")):
                dst = Path(self.build_lib) / "emo_edge" / kind.package_dir / src.name
                self.mkpath(str(dst.parent))
                self.copy_file(str(src), str(dst))


setup(cmdclass={"build_py": BuildPyWithDataFiles})
