"""Single-token decode time of a GGUF through the runtime's llama.cpp binding with 1 and 2 threads, on an idle
machine and next to one busy process (a Python spin loop): how llama.cpp's thread count and other work on the cores
change its decode (a diagnostic, not a benchmark: `emo-edge bench` is that).

    python scripts/llama_threads.py export/build/default-cpu-x86/llm/llm-q4_k_m.gguf
"""

from __future__ import annotations

import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path

from emo_edge.runtime.llm import LlamaCppLM


def spin(stop: mp.synchronize.Event) -> None:
    while not stop.is_set():
        pass


def per_token_ms(lm: LlamaCppLM, n: int = 300) -> tuple[float, float]:
    """(p50, p95) ms of feeding one token after a short prompt; the context is refilled every 100 tokens."""
    prompt = lm.tokenize("The face shows a strong expression and the voice has rising pitch.")
    times = []
    for i in range(n):
        if i % 100 == 0:
            lm.reset()
            lm.feed_tokens(prompt)
        t = time.perf_counter()
        lm.feed_tokens([5 + i % 50])
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times), sorted(times)[int(0.95 * len(times))]


def main() -> None:
    if len(sys.argv) != 2 or not Path(sys.argv[1]).is_file():
        raise SystemExit(f"usage: {sys.argv[0]} MODEL.gguf (an existing GGUF file)")
    lm = LlamaCppLM(Path(sys.argv[1]), n_ctx=512, n_threads=2)
    for busy in (False, True):
        stop, proc = mp.Event(), None
        if busy:
            proc = mp.Process(target=spin, args=(stop,))
            proc.start()
            time.sleep(0.5)
        for threads in (1, 2):
            lm.set_threads(threads)
            p50, p95 = per_token_ms(lm)
            print(f"busy={busy} threads={threads}: decode per token p50 {p50:.3f} ms, p95 {p95:.3f} ms", flush=True)
        if proc is not None:
            stop.set()
            proc.join()


if __name__ == "__main__":
    main()
