"""Small file helpers shared by checkpoints, exporters and the runtime (no torch)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write(path: Path, write: Callable[[Path], Any]) -> None:
    """Call write(tmp) for a sibling temporary path, then rename it onto `path`; no partial file on failure."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(path)


def current_umask() -> int:
    """The process's file-mode creation mask (read by setting it and putting it back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def staging_dir(parent: Path, prefix: str) -> Path:
    """A new uniquely named directory in `parent`, to be filled and then renamed into place, with the permissions a
    plain mkdir gives. mkdtemp's are owner-only, which a bundle must not keep: the node that loads it may run as
    another user, or the bundle be copied to the robot with its modes."""
    d = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    d.chmod(0o777 & ~current_umask())
    return d
