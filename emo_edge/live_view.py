"""What `emo-edge run` shows while the stream runs: one line per update, or a compact live view (rich Live)
with the head's label, a bar per label score, the latency, the LLM's label and its reason streaming in."""

from __future__ import annotations

import threading
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

VIEWS = ("live", "lines")
BAR = 24  # characters of a full score bar
HISTORY = 4  # finished utterances kept in the live view


class LineView:
    """One printed line per state; a reason printed when it is complete."""

    def __init__(self, console: Console, title: str = ""):
        self.console, self.title = console, title

    def __enter__(self) -> LineView:
        if self.title:
            self.console.rule(self.title)
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def state(self, u: Any) -> None:
        utt = f" utterance {u.utterance_id}" + ("" if u.status == "final" else f" ({u.status})") if u.utterance_id \
            else ""
        score = f" {max(u.scores):.2f}" if u.scores else ""
        text = " +text" if u.transcript else ""
        self.console.print(f"[bold]{u.source:4}[/] {u.label or '?':9}{score}{utt}{text}  latency {u.latency_ms:.0f} ms")

    def reasoning(self, r: Any) -> None:
        if r.done:
            self.console.print(f"[cyan]reason[/] utterance {r.utterance_id}: {r.text}")


class LiveView(LineView):
    """A compact view redrawn in place as updates arrive (from the runtime's threads)."""

    def __init__(self, console: Console, title: str = ""):
        super().__init__(console, title)
        self._lock = threading.Lock()
        self.head: Any = None
        self.llm: dict[int, Any] = {}
        self.reason: dict[int, tuple[str, bool]] = {}
        self.live = Live(self._render(), console=console, refresh_per_second=8, transient=False)

    def __enter__(self) -> LiveView:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.live.update(self._render(), refresh=True)
        self.live.__exit__(*exc)

    def state(self, u: Any) -> None:
        with self._lock:
            if u.source == "llm":
                self.llm[u.utterance_id] = u
            else:
                self.head = u
        self.live.update(self._render())

    def reasoning(self, r: Any) -> None:
        with self._lock:
            self.reason[r.utterance_id] = (r.text, r.done)
        self.live.update(self._render())

    def _render(self) -> Group:
        with self._lock:
            parts: list[Any] = [Text(self.title, style="bold")] if self.title else []
            parts.append(self._scores())
            for utt in sorted(set(self.llm) | set(self.reason))[-HISTORY:]:
                parts.append(self._utterance(utt))
        return Group(*parts)

    def _scores(self) -> Table:
        u = self.head
        kind = "waiting for input" if u is None else (f"utterance {u.utterance_id}" if u.utterance_id else "sliding")
        t = Table(box=None, show_header=False, pad_edge=False, title_justify="left",
                  title=f"head ({kind})" + ("" if u is None else f"  latency {u.latency_ms:.0f} ms"))
        t.add_column(width=10)
        t.add_column(width=BAR)
        t.add_column(justify="right")
        for label, score in zip(u.labels, u.scores, strict=True) if u is not None else ():
            style = "bold green" if label == u.label else "dim"
            t.add_row(Text(label, style=style), Text("█" * round(score * BAR), style=style), f"{score:.2f}")
        if u is not None and u.attribute_values:  # what perception read: the evidence the reason should name
            t.add_row(Text("perceived", style="bold"), Text(", ".join(u.attribute_values), style="yellow"), "")
        return t

    def _utterance(self, utt: int) -> Text:
        llm = self.llm.get(utt)
        text, done = self.reason.get(utt, ("", False))
        head = Text(f"utterance {utt}: ", style="bold")
        if llm is not None:
            status = "" if llm.status == "final" else f", {llm.status}"
            head.append(f"LLM {llm.label or '?'} ({llm.latency_ms:.0f} ms{status})", style="cyan")
            head.append("  text: " + (repr(llm.transcript) if llm.transcript else "absent"), style="dim")
        head.append("\n  " + text + ("" if done else " ▌"))
        return head


def make_view(kind: str, console: Console, title: str = "") -> LineView:
    """The view `kind` (live falls back to lines when the console is not a terminal, e.g. CI logs)."""
    if kind not in VIEWS:
        raise ValueError(f"--view {kind!r}: choose one of {', '.join(VIEWS)}")
    return LiveView(console, title) if kind == "live" and console.is_terminal else LineView(console, title)
