"""The quickstart's per-clip table: what `emo-edge run` streamed for each clip (runs/quickstart/<clip>.jsonl).

    python scripts/quickstart_table.py runs/quickstart
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table


def main(out: Path) -> None:
    t = Table(title="streamed per clip (utterance-end states)")
    for col in ("clip", "true", "head", "llm", "text", "head latency ms", "llm latency ms", "reason"):
        t.add_column(col)
    for line in (out / "clips.tsv").read_text().splitlines():
        cid, label = line.split("\t")[:2]
        events = [json.loads(x) for x in (out / f"{cid}.jsonl").read_text().splitlines()]
        states = [e for e in events if e["type"] == "state" and e["utterance_id"] > 0]
        head = next((s for s in states if s["source"] == "head"), None)
        llm = next((s for s in states if s["source"] == "llm"), None)
        reason = next((e["text"] for e in events if e["type"] == "reasoning" and e["done"]), "")
        t.add_row(cid, label, head["label"] if head else "-", llm["label"] if llm else "-",
                  "yes" if llm and llm.get("transcript") else "no",
                  f"{head['latency_ms']:.0f}" if head else "-", f"{llm['latency_ms']:.0f}" if llm else "-",
                  reason[:80] + ("..." if len(reason) > 80 else ""))
    Console().print(t)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
