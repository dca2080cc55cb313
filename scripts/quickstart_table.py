"""The quickstart's per-clip table: what `emo-edge run` streamed for each clip (runs/quickstart/<clip>.jsonl).

    python scripts/quickstart_table.py runs/quickstart
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table


def answers_that_stood(events: list[dict]) -> tuple[dict | None, dict | None, str]:
    """The last utterance's final head state and LLM label, each with the latency of when it first went out (an
    early answer later confirmed counts from the early one; a withdrawn one not at all), and its final reason."""
    pending: dict[tuple[int, str], dict] = {}
    stood: dict[str, dict] = {}
    for e in events:
        if e["type"] != "state" or e["utterance_id"] <= 0:
            continue
        key = (e["utterance_id"], e["source"])
        status = e.get("status", "final")
        if status == "withdrawn":  # forget every provisional answer of that utterance
            pending = {k: v for k, v in pending.items() if k[0] != e["utterance_id"]}
        elif status == "provisional":
            pending[key] = e
        else:
            first = pending.pop(key, None)
            stood[e["source"]] = {**e, "latency_ms": (first or e)["latency_ms"]}
    reason = next((e["text"] for e in reversed(events) if e["type"] == "reasoning" and e["done"]
                   and e.get("status", "final") == "final"), "")
    return stood.get("head"), stood.get("llm"), reason


def perceived(head: dict | None) -> str:
    """The attribute values the head state read (what the reason should name), '-' for a model without them."""
    values = (head or {}).get("attribute_values") or []
    return ", ".join(values) if values else "-"


def main(out: Path) -> None:
    t = Table(title="streamed per clip (the answers that stood)")
    for col in ("clip", "true", "head", "llm", "text", "head latency ms", "llm latency ms", "reason"):
        t.add_column(col)
    seen = []
    for line in (out / "clips.tsv").read_text().splitlines():
        cid, label = line.split("\t")[:2]
        events = [json.loads(x) for x in (out / f"{cid}.jsonl").read_text().splitlines()]
        head, llm, reason = answers_that_stood(events)
        t.add_row(cid, label, head["label"] if head else "-", llm["label"] if llm else "-",
                  "yes" if llm and llm.get("transcript") else "no",
                  f"{head['latency_ms']:.0f}" if head else "-", f"{llm['latency_ms']:.0f}" if llm else "-",
                  reason[:80] + ("..." if len(reason) > 80 else ""))
        seen.append(f"{cid}: {perceived(head)}")
    console = Console()
    console.print(t)
    console.print("perceived by the head (each attribute's likelier value), per clip:\n  " + "\n  ".join(seen))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
