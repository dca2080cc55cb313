"""Print the README's results table from runs/results/*.json: python scripts/summarize_results.py DIR"""

import json
import sys
from pathlib import Path


def main(d: Path) -> None:
    print("| run | n | acc | WAF | UAR | cue recall | LLM/head agreement |")
    print("|---|---|---|---|---|---|---|")
    for p in sorted(d.glob("*.json")):
        r = json.loads(p.read_text())
        if "waf" not in r:
            continue
        cells = [r["n"], r["acc"], r["waf"], r["uar"], r.get("cue_recall"), r.get("llm_head_agreement")]
        print(f"| {p.stem} | " + " | ".join("-" if c is None else f"{c:.4f}" if isinstance(c, float) else str(c)
                                           for c in cells) + " |")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
