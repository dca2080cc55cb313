"""The README's results from the reports scripts/measure_default.sh writes: python scripts/summarize_results.py DIR

Prints every run's scores, then the issue's targets (TARGETS, the one table of goals) with each value, its goal and
whether it is met ("-" when a run it needs is missing). Run names are the report files' stems (default-llm.json ->
"default-llm"); `default-*` are on the SynthEmo v2 test split, `seed12345-*` on the unseen seed, `neutral-*` on the
neutral-text variant; `-head-<views>` / `-llm-<views>` are the ablations (views joined by "+").
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

CHANCE = 1 / 6  # six balanced labels: the accuracy (and expected WAF) of a uniform guess
RUN_COLUMNS = ("n", "acc", "waf", "uar", "cue_recall", "cue_precision", "label_cue_recall",
               "answer_reason_consistency", "reason_fluency", "llm_head_agreement")
Runs = dict[str, dict]


@dataclass(frozen=True)
class Target:
    what: str
    value: Callable[[Runs], float | None]  # None: a run it needs is missing
    op: str  # ">=" or "<="
    goal: float

    def met(self, v: float | None) -> bool | None:
        if v is None:
            return None
        return v >= self.goal if self.op == ">=" else v <= self.goal


def score(run: str, key: str = "waf") -> Callable[[Runs], float | None]:
    return lambda runs: runs.get(run, {}).get(key)


def drop(full: str, without: str) -> Callable[[Runs], float | None]:
    """WAF lost when a view is removed: WAF(full) - WAF(without)."""
    def value(runs: Runs) -> float | None:
        a, b = score(full)(runs), score(without)(runs)
        return None if a is None or b is None else a - b
    return value


def above_chance(run: str) -> Callable[[Runs], float | None]:
    return lambda runs: None if (v := score(run)(runs)) is None else v - CHANCE


def _targets() -> list[Target]:
    t = []
    for split, name in (("default", "test"), ("seed12345", "unseen seed 12345")):
        t += [Target(f"LLM WAF, label from the reason (as the runtime), {name}", score(f"{split}-reason"), ">=", 0.95),
              Target(f"LLM WAF, short answer, {name}", score(f"{split}-llm"), ">=", 0.95),
              Target(f"head WAF, {name}", score(f"{split}-head"), ">=", 0.95),
              Target(f"cue recall (label-independent attributes), {name}", score(f"{split}-llm", "cue_recall"),
                     ">=", 0.80),
              Target(f"cue precision (label-independent attributes), {name}",
                     score(f"{split}-llm", "cue_precision"), ">=", 0.85),
              Target(f"answer/reason consistency (short answer vs reason), {name}",
                     score(f"{split}-llm", "answer_reason_consistency"), ">=", 0.99)]
    for view in ("image", "video", "audio"):
        for model in ("head", "llm"):
            t.append(Target(f"{model} WAF, {view} only", score(f"default-{model}-{view}"), "<=", 0.80))
    t.append(Target("llm WAF, text only", score("default-llm-text"), "<=", 0.80))
    for model in ("head", "llm"):
        t.append(Target(f"{model} WAF, temporal (video) only, above chance (1/6)",
                        above_chance(f"default-{model}-video"), ">=", 0.15))
        t.append(Target(f"{model} WAF lost without the temporal view (all - image+audio+text)",
                        drop(f"default-{model}", f"default-{model}-image+audio+text"), ">=", 0.03))
    t.append(Target("llm WAF, text only, neutral-text variant", score("neutral-llm-text"), "<=", 0.40))
    return t


TARGETS: list[Target] = _targets()


def load_runs(d: Path) -> Runs:
    """Every evaluation report in d by its file stem (other JSON files are skipped)."""
    runs = {}
    for p in sorted(d.glob("*.json")):
        r = json.loads(p.read_text())
        if isinstance(r, dict) and "waf" in r:
            runs[p.stem] = r
    return runs


def _cell(v: object) -> str:
    return "-" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)


def run_table(runs: Runs) -> list[str]:
    lines = ["| run | " + " | ".join(RUN_COLUMNS) + " |", "|---" * (len(RUN_COLUMNS) + 1) + "|"]
    for name, r in runs.items():
        lines.append(f"| {name} | " + " | ".join(_cell(r.get(c)) for c in RUN_COLUMNS) + " |")
    return lines


def target_table(runs: Runs, targets: list[Target] = TARGETS) -> list[str]:
    lines = ["| target | value | goal | met |", "|---|---|---|---|"]
    for t in targets:
        v = t.value(runs)
        met = {True: "yes", False: "**no**", None: "-"}[t.met(v)]
        lines.append(f"| {t.what} | {_cell(v)} | {t.op} {t.goal:.2f} | {met} |")
    return lines


def attribute_table(runs: Runs, key: str = "cue_recall_by_attribute", answer_from: str | None = None) -> list[str]:
    """A per-attribute score (`cue_recall_by_attribute`, `reason_follows_head_by_attribute` or
    `head_attribute_accuracy`) of every run that has it
    (and answers from `answer_from`, when given), attributes as columns."""
    rows = {name: r[key] for name, r in runs.items()
            if r.get(key) and (answer_from is None or r.get("answer_from") == answer_from)}
    if not rows:
        return []
    names = list(dict.fromkeys(k for by in rows.values() for k in by))
    lines = ["| run | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for run, by in rows.items():
        lines.append(f"| {run} | " + " | ".join(_cell(by.get(k)) for k in names) + " |")
    return lines


def main(d: Path) -> None:
    runs = load_runs(d)
    limited = sorted({r["n"] for r in runs.values()})
    print("\n".join(run_table(runs)))
    print()
    if limited and max(limited) < 600:
        print(f"(at most {max(limited)} clips per run: a smoke run, not the measurement)\n")
    print("\n".join(target_table(runs)))
    by_attribute = attribute_table(runs)
    if by_attribute:
        print("\ncue recall by attribute (the share of reasons naming the clip's own value):\n")
        print("\n".join(by_attribute))
    follows = attribute_table(runs, "reason_follows_head_by_attribute")
    if follows:
        print("\nreasons following the attribute head (the share naming the value the head read, right or wrong):\n")
        print("\n".join(follows))
    read = attribute_table(runs, "head_attribute_accuracy", answer_from="head")
    if read:
        print("\nattribute head accuracy (the share of clips whose value perception reads right, by the views "
              "given):\n")
        print("\n".join(read))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
