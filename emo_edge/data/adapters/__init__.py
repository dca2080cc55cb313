"""Adapters from each source dataset's distributed layout to the unified JSONL (DESIGN §3).

`prepare(source, root, out)` reads one dataset under `root` and writes `<split>.jsonl` and
`prepare_report.json` under `out`. SOURCES names every adapter; one module per dataset family.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from emo_edge.data.adapters import body, conversation, facial, mer, mmsa
from emo_edge.data.adapters.base import Adapter, convert_all, labelmap, write_outputs

SOURCES: dict[str, Adapter] = {
    a.name: a for family in (mer, facial, conversation, mmsa, body) for a in family.ADAPTERS
}


def get_adapter(source: str) -> Adapter:
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}")
    return SOURCES[source]


def prepare(source: str, root: str | Path, out: str | Path, workers: int = 2) -> dict[str, Any]:
    """Convert one dataset to unified records; bad clips are reported in the returned dict, not raised."""
    adapter, root, out = get_adapter(source), Path(root), Path(out)
    if not root.is_dir():
        raise FileNotFoundError(f"--root {root} is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    records, bad = convert_all(adapter.scan(root), out, source, labelmap(adapter.labelmap), workers)
    return write_outputs(out, source, records, bad)
