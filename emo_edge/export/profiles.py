"""Export target profiles: per-device choices for the perception graphs and the LLM, as data files.

A profile lives in `export/<name>.yaml` at the repository root (`cpu-x86`, `jetson-orin-agx`,
`jetson-orin-nano`; a wheel carries copies, found through `emo_edge.resources`) or at any path. Its fields
and checks are the dataclasses of `emo_edge.runtime.profile` (the bundle records the profile and the runtime
plans from it); this module finds and reads the files through the one YAML loader (`config.load_yaml`).
"""

from __future__ import annotations

from pathlib import Path

from emo_edge import resources
from emo_edge.config import load_yaml
from emo_edge.runtime.profile import ExportProfile, profile_from_dict

__all__ = ["ExportProfile", "list_profiles", "load_profile", "profile_from_dict"]


def list_profiles() -> list[str]:
    return resources.names(resources.PROFILES)


def load_profile(name_or_path: str | Path) -> ExportProfile:
    """A profile by name (`emo_edge.resources`: the repository's `export/`, else the package's copies) or a path
    to a YAML file; ValueError naming the file and field."""
    path = resources.find(resources.PROFILES, name_or_path)
    return load_yaml(ExportProfile, path, name=path.stem)
