"""Fault isolation for the node: an exception in any callback is caught, counted by kind, logged with its
traceback at most every LOG_EVERY_S per kind, and the node keeps running.

For tests only: EMO_EDGE_TEST_INJECT_FAULTS=kind[,kind...] makes every EMO_EDGE_TEST_FAULT_EVERY-th call
(default 5) of those callbacks raise `InjectedFault` before doing its work, so a test can check the node
survives and reports it. Unset (as on a robot), nothing is injected.
"""

from __future__ import annotations

import os
import threading
import traceback
from collections import Counter
from collections.abc import Callable
from typing import Any

LOG_EVERY_S = 2.0  # s, at most one traceback per kind in this time
INJECT_ENV, EVERY_ENV = "EMO_EDGE_TEST_INJECT_FAULTS", "EMO_EDGE_TEST_FAULT_EVERY"


class InjectedFault(RuntimeError):
    """Raised on purpose by a test (EMO_EDGE_TEST_INJECT_FAULTS)."""


class FaultLog:
    """Counts caught exceptions by kind; logs each kind's traceback at most every LOG_EVERY_S s."""

    def __init__(self, logger: Any, now: Callable[[], float]):
        self.logger, self.now = logger, now
        self.counts: Counter[str] = Counter()
        self._logged: dict[str, float] = {}
        self._calls: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.inject = {k.strip() for k in os.environ.get(INJECT_ENV, "").split(",") if k.strip()}
        self.every = max(1, int(os.environ.get(EVERY_ENV, "5")))

    def record(self, kind: str, e: BaseException) -> None:
        now = self.now()
        with self._lock:
            self.counts[kind] += 1
            due = now - self._logged.get(kind, -LOG_EVERY_S) >= LOG_EVERY_S
            if due:
                self._logged[kind] = now
        if due:
            tb = "".join(traceback.format_exception(type(e), e, e.__traceback__))
            self.logger.error(f"exception in {kind} ({self.counts[kind]} so far), the node goes on:\n{tb}")

    def maybe_inject(self, kind: str) -> None:
        if kind in self.inject:
            with self._lock:
                self._calls[kind] += 1
                n = self._calls[kind]
            if n % self.every == 0:
                raise InjectedFault(f"injected fault in {kind} (call {n}; {INJECT_ENV})")

    def guard(self, kind: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """fn wrapped so that any exception it raises is recorded under `kind` instead of propagating."""
        def call(*args: Any) -> Any:
            try:
                self.maybe_inject(kind)
                return fn(*args)
            except Exception as e:  # noqa: BLE001 - isolation is the point: record it and go on
                self.record(kind, e)
                return None
        return call
