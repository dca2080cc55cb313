"""Data files found by name: export target profiles and INT8 calibration manifests (no torch).

Users edit them in the repository's `export/*.yaml` and `calibration/*.yaml`; a wheel carries copies as
package data (`emo_edge/targets/`, `emo_edge/calibration/`, copied there by setup.py's build step). A name is
looked up in the repository first (a checkout, editable install included), then in the package data; a value
with a suffix or a directory part is a path and is used as given.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent  # the checkout's root when the package is not installed from a wheel
SUFFIX = ".yaml"


@dataclass(frozen=True)
class Kind:
    """One family of data files: where it lives in a checkout and inside the installed package."""

    what: str  # for messages
    repo_dir: str  # relative to the repository root
    package_dir: str  # relative to the emo_edge package


PROFILES = Kind("export profile", "export", "targets")
CALIBRATIONS = Kind("calibration manifest", "calibration", "calibration")


def in_checkout() -> bool:
    """True when emo_edge is imported from a source checkout of emo-edge (not from an installed wheel)."""
    pyproject = REPO_ROOT / "pyproject.toml"
    return pyproject.is_file() and 'name = "emo-edge"' in pyproject.read_text(encoding="utf-8")


def search_dirs(kind: Kind) -> list[Path]:
    """The existing directories that hold `kind`'s files, in lookup order."""
    dirs = [REPO_ROOT / kind.repo_dir] if in_checkout() else []
    dirs.append(PACKAGE_DIR / kind.package_dir)
    return [d for d in dirs if d.is_dir()]


def names(kind: Kind) -> list[str]:
    """The names that `find` resolves, sorted."""
    return sorted({p.stem for d in search_dirs(kind) for p in d.glob(f"*{SUFFIX}")})


def find(kind: Kind, name_or_path: str | Path) -> Path:
    """The file for a name (`cpu-x86`) or a path (`my/target.yaml`); ValueError listing the names."""
    given = Path(name_or_path)
    if given.suffix or len(given.parts) > 1:
        if given.is_file():
            return given
        raise ValueError(f"{kind.what} {str(name_or_path)!r}: no such file")
    for d in search_dirs(kind):
        path = d / f"{given.name}{SUFFIX}"
        if path.is_file():
            return path
    raise ValueError(f"unknown {kind.what} {str(name_or_path)!r}; available: "
                     f"{', '.join(names(kind)) or '(none)'} or a YAML path")


def is_packaged(path: str | Path, kind: Kind) -> bool:
    """True for a file from the installed package's data (as opposed to the repository or the user's)."""
    return Path(path).resolve().parent == PACKAGE_DIR / kind.package_dir


def relative_base(path: str | Path, kind: Kind) -> Path:
    """The directory that relative paths inside the file `path` start from.

    A file's own directory; for a packaged copy, `<working directory>/<repo_dir>`, so that its paths mean what
    they mean in the repository (`calibration/../data/synthemo-v2` -> `./data/synthemo-v2`) when run from a project
    directory laid out like the repository."""
    return Path.cwd() / kind.repo_dir if is_packaged(path, kind) else Path(path).resolve().parent
