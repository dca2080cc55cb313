"""Timing statistics, kept apart from the runners so they can be unit-tested.

Every figure carries its unit in its name: `_ms` milliseconds, `_tok_s` tokens per second,
`_mb` mebibytes (2^20 bytes), `_gflop_s` 10^9 FLOP per second, `_gb_s` 10^9 bytes per second.
"""

from __future__ import annotations

import math
import resource
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PERCENTILES: tuple[int, ...] = (50, 95, 99)


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between closest ranks (numpy's default)."""
    if not samples:
        raise ValueError("percentile of an empty sample")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile q must be in [0, 100], got {q}")
    xs = sorted(samples)
    pos = (len(xs) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarize_ms(samples_s: Sequence[float]) -> dict[str, float]:
    """Seconds per repetition -> {p50_ms, p95_ms, p99_ms, mean_ms, min_ms, n}."""
    ms = [s * 1e3 for s in samples_s]
    out = {f"p{q}_ms": percentile(ms, q) for q in PERCENTILES}
    out.update(mean_ms=sum(ms) / len(ms), min_ms=min(ms), n=len(ms))
    return out


def spread(a: float, b: float) -> float:
    """Relative spread of two medians: |a - b| / min(a, b) (0.1 = the larger is 10 % above the smaller)."""
    if a <= 0 or b <= 0:
        raise ValueError(f"spread needs two positive values, got {a} and {b}")
    return abs(a - b) / min(a, b)


def speedup(baseline_ms: float, candidate_ms: float) -> float:
    """How many times faster `candidate` is than `baseline` (> 1: faster)."""
    if baseline_ms <= 0 or candidate_ms <= 0:
        raise ValueError(f"speedup needs positive times, got {baseline_ms} and {candidate_ms}")
    return baseline_ms / candidate_ms


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MiB.

    Linux: VmHWM from /proc/self/status, the high-water mark of this process image. Not ru_maxrss: the
    kernel carries it across fork and exec, so a spawned worker would report at least its parent's RSS
    at the time it was started (every bench backend read 917 MiB, the parent's size). Elsewhere
    ru_maxrss (KiB on Linux, bytes on macOS)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**10  # kB
    except (OSError, ValueError, IndexError):
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


@dataclass(frozen=True)
class Reps:
    """How long to time one stage: `warmup` untimed calls, then at least `min_reps` timed calls and
    more until `min_seconds` of timed calls have passed, never more than `max_reps`."""

    warmup: int = 3
    min_reps: int = 30
    min_seconds: float = 2.0
    max_reps: int = 1000

    def __post_init__(self) -> None:
        if self.warmup < 0 or self.min_reps < 1 or self.max_reps < self.min_reps or self.min_seconds < 0:
            raise ValueError(f"reps: need warmup >= 0, 1 <= min_reps <= max_reps, min_seconds >= 0; got {self}")


def time_call(fn: Callable[[], Any], reps: Reps, clock: Callable[[], float] = time.perf_counter) -> list[float]:
    """Seconds per call of `fn` after the warm-up, as `reps` asks."""
    for _ in range(reps.warmup):
        fn()
    samples: list[float] = []
    start = clock()
    while len(samples) < reps.max_reps and (len(samples) < reps.min_reps or clock() - start < reps.min_seconds):
        t0 = clock()
        fn()
        samples.append(clock() - t0)
    return samples
