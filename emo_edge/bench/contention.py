"""Fast path vs. LLM on one CPU: the head's latency and rate while the LLM streams, per CPU-sharing option.

    python -m emo_edge.bench.contention --bundle export/build/test-default-cpu-x86 --seconds 20

Runs the live runtime in this process on synthetic 30 fps frames and 16 kHz audio fed at real rate, with the
LLM kept busy (a timer request every `--period-s`, coalesced, each a label then a reasoning streamed), and
once with the LLM off as the baseline. Options compared:

    pause       the LLM waits between tokens while a fast-path update computes (`llm_pause_for_fast`)
    llm_threads llama.cpp's threads (the perception keeps `--threads`)

Only sliding-window head states count; the first `--warmup-s` seconds are not. `--gguf` swaps in another
GGUF (e.g. a real small LM) for the LLM's load; its answers then mean nothing, only its compute does: the
multimodal tokens are fed as zeros of its width.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from emo_edge.bench.stats import summarize_ms
from emo_edge.runtime.bundle import load_bundle
from emo_edge.runtime.pipeline import EmotionRuntime
from emo_edge.runtime.stream import EmotionUpdate, StreamConfig, StreamRuntime

RATE = 16000  # Hz
FPS = 30.0  # Hz, synthetic camera
CHUNK_S = 0.02  # s of audio per push


class WideLLM:
    """The bundle's runtime with another GGUF as the LLM: the multimodal tokens become zeros of its width."""

    def __init__(self, rt: EmotionRuntime, lm: Any):
        self.rt, self.lm, self.labels = rt, lm, rt.labels

    def perceive(self, *a: Any) -> dict[str, Any]:
        return self.rt.perceive(*a)

    def set_llm_threads(self, n_threads: int) -> None:
        self.lm.set_threads(n_threads)

    def answer(self, tokens: np.ndarray, mask: np.ndarray, task: str, subtitle: str | None, max_new_tokens: int = 96,
               on_token: Any = None, gate: Any = None, evidence: str | None = None) -> str:
        zeros = np.zeros((len(tokens), self.lm.n_embd), np.float32)
        return self.lm.answer(zeros, mask, " Describe the emotion:", max_new_tokens, on_token=on_token, gate=gate)


def feed(stream: StreamRuntime, seconds: float, stop: threading.Event) -> None:
    """Frames and audio at real rate on the stream's clock (low noise: no speech, so no utterances)."""
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
    t0 = stream.clock()
    k = 0
    while not stop.is_set() and stream.clock() - t0 < seconds:
        t = t0 + k * CHUNK_S
        time.sleep(max(0.0, t - stream.clock()))
        stream.push_audio(t, (0.001 * rng.standard_normal(int(RATE * CHUNK_S))).astype(np.float32), RATE)
        if int((t - t0) * FPS) != int((t - t0 - CHUNK_S) * FPS):
            stream.push_frame(t, frame)
        k += 1


def run_option(rt: Any, fe: dict[str, Any], fast_hz: float, llm_threads: int | None, pause: bool, seconds: float,
               warmup_s: float, period_s: float) -> dict[str, Any]:
    """One option: llm_threads None runs without the LLM (the baseline)."""
    llm = llm_threads is not None
    states: list[tuple[float, EmotionUpdate, bool]] = []
    cfg = StreamConfig(fast_hz=fast_hz, vad="energy", slow="timer" if llm else "off", slow_period_s=period_s,
                       llm_pause_for_fast="on" if pause else "off", llm_threads=llm_threads, max_reason_tokens=96)
    holder: dict[str, StreamRuntime] = {}

    def on_state(u: EmotionUpdate) -> None:
        s = holder["s"]
        if u.source == "head" and not u.utterance_id:
            states.append((s.clock(), u, s.slow is not None and not s.slow.idle()))
    stream = holder["s"] = StreamRuntime(rt, fe, cfg, on_state=on_state)
    stop = threading.Event()
    stream.start(tick_s=0.01)
    t0 = stream.clock()
    try:
        feed(stream, seconds, stop)
    finally:
        stop.set()
        stats = stream.stats()
        stream.stop()
    kept = [(t, u, busy) for t, u, busy in states if t >= t0 + warmup_s]
    times = [t for t, _, _ in kept]
    out = {"llm_threads": llm_threads, "pause": pause, "n": len(kept),
           "busy_share": float(np.mean([b for *_, b in kept] or [0])),
           "rate_hz": (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else None,
           "latency_ms": summarize_ms([u.latency_ms / 1e3 for _, u, _ in kept]) if kept else None,
           "latency_while_llm_ms": summarize_ms([u.latency_ms / 1e3 for _, u, b in kept if b]) if any(
               b for *_, b in kept) else None,
           "llm_labels": stats["counts"].get("llm_updates", 0),
           "llm_paused_for_fast": stats["counts"].get("llm_paused_for_fast", 0)}
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument("--gguf", type=Path, help="another GGUF to load the CPU with (its answers are not used)")
    ap.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads (and llama.cpp's by default)")
    ap.add_argument("--llm-threads", type=int, nargs="+", default=[2, 1], help="llama.cpp threads to try")
    ap.add_argument("--fast-hz", type=float, default=2.0)
    ap.add_argument("--seconds", type=float, default=20.0, help="per option")
    ap.add_argument("--warmup-s", type=float, default=3.0)
    ap.add_argument("--period-s", type=float, default=0.1,
                    help="s between LLM requests (coalesced: the LLM never idles)")
    ap.add_argument("--out", type=Path, help="write the results here (JSON)")
    args = ap.parse_args(argv)
    from emo_edge.runtime.llm import LlamaCppLM

    bundle = load_bundle(args.bundle, threads=args.threads)
    rt: Any = EmotionRuntime(bundle)
    lm = None
    if args.gguf:
        lm = LlamaCppLM(args.gguf, n_ctx=max(512, bundle.manifest.target.llm.n_ctx), n_threads=args.threads)
        rt = WideLLM(rt, lm)
    options = [(None, False)] + [(n, pause) for n in args.llm_threads for pause in (False, True)]
    results = []
    for llm_threads, pause in options:
        r = run_option(rt, bundle.frontend, args.fast_hz, llm_threads, pause, args.seconds, args.warmup_s,
                       args.period_s)
        r.update(threads=args.threads, fast_hz=args.fast_hz)
        results.append(r)
        lat = r["latency_while_llm_ms"] or r["latency_ms"]
        print(f"llm threads {llm_threads or 'off':3} pause {pause!s:5}: rate {r['rate_hz'] or 0:.2f} Hz, head "
              f"latency p50 {lat['p50_ms']:.0f} ms p95 {lat['p95_ms']:.0f} ms (LLM busy at {r['busy_share']:.0%} of "
              f"the states, {r['llm_labels']} labels)", flush=True)
    if lm is not None:
        lm.close()
    bundle.close()
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
