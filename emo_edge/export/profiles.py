"""Export target profiles: per-device choices for the perception graphs and the LLM, as data files.

A profile lives in `export/<name>.yaml` at the repository root (`cpu-x86`, `jetson-orin-agx`,
`jetson-orin-nano`) or at any path. Its fields and checks are the dataclasses of
`emo_edge.runtime.profile` (the bundle records the profile and the runtime plans from it); this module
finds and reads the files.
"""

from __future__ import annotations

from pathlib import Path

import yaml

import emo_edge
from emo_edge.runtime.profile import ExportProfile, profile_from_dict

PROFILE_DIR = Path(emo_edge.__file__).parents[1] / "export"


def list_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def load_profile(name_or_path: str | Path) -> ExportProfile:
    """A profile by name (a file in `export/`) or a path to a YAML file; ValueError naming the file and field."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PROFILE_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown export profile {str(name_or_path)!r}; available: "
                         f"{', '.join(list_profiles()) or '(none)'} or a YAML path")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    try:
        return profile_from_dict(data, name=path.stem)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: {e}") from e
