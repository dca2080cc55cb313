"""`emo-edge bench`: time every stage on every available backend, sweep the token budget, place each stage
under this machine's roofline, and write results.json, results.md and plots.

Each backend is timed in a fresh process (spawned), so its peak RSS is its own and no thread pool of
another framework runs beside it; with `isolate=False` everything runs in this process (tests) and the
RSS is the whole process's. Every backend is timed `rounds` times (round-robin, a fresh process each time);
every figure pools the samples of all rounds, and the stability spread compares the odd rounds' pool with
the even rounds' pool: two independent runs of `rounds / 2` processes each, as two invocations would be.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import multiprocessing as mp
import os
import platform
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emo_edge.bench.backends import (
    BackendSpec,
    LlamaCppBackend,
    OrtBackend,
    TransformersBackend,
    available_backends,
    greedy,
    head_label,
    open_perception,
)
from emo_edge.bench.sources import Window
from emo_edge.bench.stats import Reps, peak_rss_mb, summarize_ms, time_call
from emo_edge.config import FrontendConfig
from emo_edge.prompts import REASON_TOKENS
from emo_edge.runtime.llm import greedy_decode
from emo_edge.runtime.manifest import Manifest

SCHEMA_VERSION = 1
PERCEPTION_GRAPHS = ("image_encoder", "video_encoder", "audio_encoder", "fusion")
PERCEPTION_STAGES = ("preprocess", *PERCEPTION_GRAPHS, "perception", "fast_path")
LLM_STAGES = ("prefill", "ttft", "decode_per_token", "answer", "slow_path")
# the paper's layout and smaller ones, in the splice order [fusion | image | video | audio | attributes]; the
# attribute tokens (a checkpoint's, if it has them) come from the fusion, so the smaller layouts keep them
BUDGETS: dict[str, dict[str, int]] = {
    "paper-448": {"fusion": 64, "image": 256, "video": 64, "audio": 64},
    "trained": {},  # the checkpoint's own layout, filled in from the manifest
    "fusion+audio": {"fusion": -1, "image": 0, "video": 0, "audio": -1, "attributes": -1},  # -1: the trained count
    "fusion-only": {"fusion": -1, "image": 0, "video": 0, "audio": 0, "attributes": -1},
}


@dataclass
class BenchConfig:
    bundle: Path
    data: Path
    out: Path
    checkpoint: str | None = None
    threads: int = 2  # every backend: torch intra-op, ONNX Runtime intra-op, llama.cpp
    reps: Reps = field(default_factory=Reps)
    rounds: int = 6  # fresh processes per backend; figures pool them, stability compares odd vs even rounds
    clips: int = 4  # windows the timings rotate over
    eval_clips: int = 120  # test clips for the WAF of each budget and precision (0 skips the evaluation)
    fps: float = 30.0  # camera rate of the input windows
    decode_tokens: int = 32  # forced greedy tokens per prefill when timing decode
    answer_tokens: int = REASON_TOKENS  # the slow path's `reason` answer limit (the stream's default)
    isolate: bool = True
    progress: bool = True
    peaks: bool = True  # measure the machine's matmul / copy peaks (large; off only in tests)
    fallback: str | None = None  # "cpu": a bundle whose target needs a GPU / TensorRT loads here on the CPU

    def __post_init__(self) -> None:
        if self.rounds < 1 or self.clips < 1 or self.threads < 1 or self.eval_clips < 0:
            raise ValueError(f"bench: rounds, clips and threads must be >= 1 and eval_clips >= 0, got {self.rounds}, "
                             f"{self.clips}, {self.threads}, {self.eval_clips}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()}


@dataclass(frozen=True)
class Job:
    spec: BackendSpec
    bundle: Path
    manifest: Manifest
    checkpoint: str | None
    windows: list[Window]
    cfg: BenchConfig
    budgets: dict[str, int]  # budget name -> multimodal token count, for the prefill sweep


# ---------------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------------


def runtime_arrays(w: Window, fe: FrontendConfig) -> dict[str, np.ndarray]:
    """A window -> the runtime's batch-1 arrays (numpy frontend: temporal view, peak frame, log-mel)."""
    from emo_edge.clip import clip_from_media

    c = clip_from_media(w.frames, w.wave, fe)
    return {"image": c.image[None], "frames": c.frames[None], "mel": c.mel[None].astype(np.float32),
            "present": np.ones((1, 3), np.float32)}


def _numpy(out: dict[str, Any]) -> dict[str, np.ndarray]:
    return {k: (v.numpy() if hasattr(v, "numpy") else v) for k, v in out.items()}


def _cycle(windows: list[Window]) -> Callable[[], Window]:
    it = itertools.cycle(windows)
    return lambda: next(it)


def _long(reps: Reps) -> Reps:
    """Fewer repetitions for stages that take a whole answer."""
    n = min(reps.min_reps, max(3, reps.min_reps // 3))
    return dataclasses.replace(reps, warmup=min(reps.warmup, 1), min_reps=n)


# ---------------------------------------------------------------------------------------------
# timing one backend (runs in a child process when isolated)
# ---------------------------------------------------------------------------------------------


def time_perception(job: Job) -> dict[str, Any]:
    from emo_edge.runtime.perception import preprocess

    fe, labels = job.manifest.model.frontend, job.manifest.labels
    backend = open_perception(job.spec, job.bundle, job.manifest, job.checkpoint, job.cfg.threads)
    arrays = runtime_arrays(job.windows[0], fe)
    x = preprocess(**arrays)
    feats: dict[str, np.ndarray] = {}  # the backend's own encoder outputs feed its fusion graph
    for g, k in (("image_encoder", "image"), ("video_encoder", "frames"), ("audio_encoder", "mel")):
        feats.update(_numpy(backend.graph_call(g, {k: x[k]})()))
    feeds = {"image_encoder": {"image": x["image"]}, "video_encoder": {"frames": x["frames"]},
             "audio_encoder": {"mel": x["mel"]}, "fusion": {**feats, "present": x["present"]}}
    next_window = _cycle(job.windows)

    def fast_path() -> list[str]:
        return head_label(backend.perceive(**runtime_arrays(next_window(), fe)), labels)

    calls = {"preprocess": lambda: runtime_arrays(next_window(), fe),
             **{g: backend.graph_call(g, feeds[g]) for g in PERCEPTION_GRAPHS},
             "perception": lambda: backend.perceive(**arrays), "fast_path": fast_path}
    samples = {name: time_call(fn, job.cfg.reps) for name, fn in calls.items()}
    out: dict[str, Any] = {"stages": {k: summarize_ms(v) for k, v in samples.items()}, "samples_s": samples}
    out["peak_rss_mb"] = peak_rss_mb()  # before the profiling below, which opens a second session
    if isinstance(backend, OrtBackend) and job.spec.provider == "CPUExecutionProvider":
        out["op_times"] = backend.op_times(x)  # where the kernel time goes (the roofline's "why")
    backend.close()
    return out


def _open_llm(job: Job) -> tuple[Any, Any]:
    """(LLM backend, the perception that feeds its slow path): the reference pair for transformers, the
    bundle's own deployment perception (its profile's precision on ONNX Runtime's CPU provider) for llama.cpp."""
    m, threads = job.manifest, job.cfg.threads
    if job.spec.engine == "transformers":
        from emo_edge.bench.backends import TorchPerception

        p = TorchPerception(job.checkpoint, threads)
        return TransformersBackend(p.model, threads), p
    prec = m.perception_entry
    p = OrtBackend(job.bundle, m, BackendSpec("perception", f"ort-cpu-{prec}", "onnxruntime", prec,
                                              "CPUExecutionProvider"), threads)
    n_ctx = max(m.target.llm.n_ctx, max(job.budgets.values(), default=0) + 64 + len(_longest_evidence(m)))
    from emo_edge.runtime.bundle import llm_adapter

    lora = llm_adapter(job.bundle, m)
    return LlamaCppBackend(job.bundle / m.llm.files[job.spec.precision], n_ctx, threads, lora), p


def time_llm(job: Job) -> dict[str, Any]:
    from emo_edge.prompts import suffix
    from emo_edge.runtime.pipeline import evidence_from_probs

    fe, prompt = job.manifest.model.frontend, job.manifest.prompt
    lm, perception = _open_llm(job)
    cfg, reps = job.cfg, job.cfg.reps

    template = prompt.get("evidence")  # the bundle's LLM reads the attribute readings: its prompts carry them

    def text(task: str, w: Window, perceived: dict) -> str:
        said = evidence_from_probs(job.manifest.attributes or [], perceived["attributes"][0],
                                   np.ones(3, np.float32), template) if template else ""  # every view present
        return suffix(task, w.subtitle, prompt["template"], prompt["instructions"], said)

    tokens = [perception.perceive(**runtime_arrays(w, fe)) for w in job.windows]
    mm, mask = tokens[0]["tokens"][0], tokens[0]["token_mask"][0]
    emotion = text("emotion", job.windows[0], tokens[0])
    nxt = itertools.cycle(range(len(job.windows)))
    lengths: list[int] = []

    def answer() -> None:
        i = next(nxt)
        t = tokens[i]
        lengths.append(len(greedy(lm, lm.prefill(t["tokens"][0], t["token_mask"][0],
                                                 text("reason", job.windows[i], t)), cfg.answer_tokens)))

    def slow_path() -> None:
        i = next(nxt)
        t = perception.perceive(**runtime_arrays(job.windows[i], fe))
        greedy(lm, lm.prefill(t["tokens"][0], t["token_mask"][0], text("reason", job.windows[i], t)),
               cfg.answer_tokens)

    def ttft() -> str:
        return lm.piece(int(np.argmax(lm.prefill(mm, mask, emotion))))

    samples = {"prefill": time_call(lambda: lm.prefill(mm, mask, emotion), reps), "ttft": time_call(ttft, reps),
               "decode_per_token": _decode_samples(lm, mm, mask, emotion, cfg.decode_tokens, reps)}
    samples["answer"] = time_call(answer, _long(reps))
    samples["slow_path"] = time_call(slow_path, _long(reps))
    stages = _with_rate({k: summarize_ms(v) for k, v in samples.items()})
    sweep = {name: summarize_ms(time_call(lambda n=n: lm.prefill(_tile(mm, n), np.ones(n, np.float32), emotion),
                                          reps)) for name, n in job.budgets.items()}
    lm.close()
    return {"stages": stages, "samples_s": samples, "budget_prefill": sweep,
            "answer_tokens_mean": float(np.mean(lengths)) if lengths else 0,
            "slow_path_perception": "torch-eager-fp32" if job.spec.engine == "transformers" else
            f"ort-cpu-{job.manifest.perception_entry}"}


def _with_rate(stages: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    if "decode_per_token" in stages:
        stages["decode_per_token"]["tok_s"] = 1e3 / stages["decode_per_token"]["p50_ms"]
    return stages


def pool_rounds(rounds: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per backend, its runs in several rounds (fresh processes) as one result: every stage's statistics over
    all the rounds' samples pooled, the peak RSS the largest, the wall time summed; the rest from the first
    round. The raw samples are dropped."""
    out: dict[str, dict[str, Any]] = {}
    for name, first in rounds[0].items():
        runs = [rd[name] for rd in rounds if name in rd]
        pooled = {k: v for k, v in first.items() if k != "samples_s"}
        if all("samples_s" in r for r in runs):
            pooled["stages"] = _with_rate({stage: summarize_ms([x for r in runs for x in r["samples_s"][stage]])
                                           for stage in first["samples_s"]})
        pooled.update(peak_rss_mb=max(r["peak_rss_mb"] for r in runs), wall_s=sum(r["wall_s"] for r in runs),
                      rounds=len(runs))
        out[name] = pooled
    return out


def _tile(mm: np.ndarray, n: int) -> np.ndarray:
    """n multimodal rows made from the real ones (latency depends on the count, not the values)."""
    return np.resize(mm, (n, mm.shape[1])).astype(np.float32)


def _decode_samples(lm: Any, mm: np.ndarray, mask: np.ndarray, text: str, per_prefill: int, reps: Reps) -> list[float]:
    """Seconds per forced greedy decode step (EOS ignored), `per_prefill` steps after each prefill."""
    samples: list[float] = []
    for _ in range(reps.warmup):
        greedy(lm, lm.prefill(mm, mask, text), per_prefill, stop_at_eos=False)

    def timed_step(token: int) -> np.ndarray:
        t0 = time.perf_counter()
        logits = lm.step(token)
        samples.append(time.perf_counter() - t0)
        return logits

    start = time.perf_counter()
    while len(samples) < max(reps.min_reps, per_prefill) or time.perf_counter() - start < reps.min_seconds:
        # the runtime's decode loop, each of its `per_prefill` feeds timed (+1: the last token is not fed)
        greedy_decode(lm.prefill(mm, mask, text), timed_step, lm.is_eos, per_prefill + 1, stop_at_eog=False)
        if len(samples) >= reps.max_reps:
            break
    return samples


def run_job(job: Job) -> dict[str, Any]:
    """One backend, timed: its stages, peak RSS and wall time. The process is set up as the live runtime sets
    its own (`emo_edge.process.tune_process`: numpy's BLAS on one thread, large blocks on glibc's heap)."""
    from emo_edge.process import tune_process

    settings = tune_process()
    t0 = time.perf_counter()
    out = time_perception(job) if job.spec.kind == "perception" else time_llm(job)
    out.update(process=settings)
    out.update(backend=job.spec.name, kind=job.spec.kind, engine=job.spec.engine, precision=job.spec.precision,
               provider=job.spec.provider, graph_precision=job.spec.graph_precision,
               peak_rss_mb=out.get("peak_rss_mb") or peak_rss_mb(), wall_s=time.perf_counter() - t0)
    return out


# ---------------------------------------------------------------------------------------------
# the whole run
# ---------------------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next((x.split(":", 1)[1].strip() for x in lines if x.startswith("model name")), cpu)
        flags = next((x.split(":", 1)[1].split() for x in lines if x.startswith("flags")), [])
        simd = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "neon") if f in flags]
    except OSError:
        simd = []
    try:
        mem = int(next(x.split()[1] for x in Path("/proc/meminfo").read_text().splitlines()
                       if x.startswith("MemTotal"))) / 2**20
    except (OSError, StopIteration):
        mem = None
    return {"platform": platform.platform(), "cpu": cpu, "simd": simd, "logical_cpus": os.cpu_count(),
            "memory_gib": mem, "python": platform.python_version()}


def versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for pkg in ("emo-edge", "numpy", "torch", "transformers", "onnxruntime", "onnxruntime-gpu", "llama_cpp_python",
                "tensorrt"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def _load() -> dict[str, float]:
    one, five, _ = os.getloadavg()
    return {"load_1min": one, "load_5min": five}


def _execute(jobs: list[Job], cfg: BenchConfig, on_done: Callable[[str], None]) -> list[dict[str, Any]]:
    """Run the jobs in order, each in a fresh spawned process when isolated."""
    if not cfg.isolate:
        results = []
        for job in jobs:
            results.append(run_job(job))
            on_done(job.spec.name)
        return results
    results = []
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=ctx, max_tasks_per_child=1) as pool:
        for job in jobs:
            results.append(pool.submit(run_job, job).result())
            on_done(job.spec.name)
    return results


def run_bench(cfg: BenchConfig, windows: list[Window] | None = None, command: str | None = None) -> dict[str, Any]:
    """The whole benchmark; returns the results (also written under `cfg.out`). `command` is recorded."""
    from rich.progress import Progress

    from emo_edge.bench import analysis
    from emo_edge.bench.report import write_outputs
    from emo_edge.bench.sources import DataDirSource
    from emo_edge.runtime.bundle import load_bundle

    bundle = load_bundle(cfg.bundle, fallback=cfg.fallback)  # verifies format, hashes and the plan first
    m = bundle.manifest
    fe = m.model.frontend
    specs, missing = available_backends(m, cfg.checkpoint)
    windows = windows or DataDirSource(cfg.data, fe, cfg.fps).windows(cfg.clips)
    trained = m.token_layout.budget
    budgets = analysis.resolve_budgets(trained, BUDGETS)
    counts = {k: sum(b.values()) for k, b in budgets.items()}
    started, load_before = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), _load()
    results: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "started": started, "command": command,
                               "config": cfg.to_dict(),
                               "versions": versions(), "machine": {**machine_info(), "load_before": load_before},
                               "bundle": {"path": str(cfg.bundle), "target": m.target.name,
                                          "checkpoint": dataclasses.asdict(m.checkpoint),
                                          "token_layout": dataclasses.asdict(m.token_layout),
                                          "plan": bundle.plan.to_dict()},
                               "unavailable": [dataclasses.asdict(u) for u in missing],
                               "windows": [{"id": w.id, "frames": int(len(w.frames)), "fps": w.fps,
                                            "frame_hw": list(w.frames.shape[1:3])} for w in windows]}
    jobs = [Job(s, Path(cfg.bundle), m, cfg.checkpoint, windows, cfg, counts if s.kind == "llm" else {})
            for s in specs]
    n_steps = len(jobs) * cfg.rounds + int(cfg.peaks) + int(cfg.eval_clips > 0) + 2
    with Progress(disable=not cfg.progress, transient=False) as bar:
        task = bar.add_task("bench", total=n_steps)

        def step(what: str) -> None:
            bar.update(task, advance=1, description=f"bench: {what} done")

        if cfg.peaks:
            from emo_edge.bench.roofline import measure_peaks

            bar.update(task, description="bench: machine peaks (matmul, copy)")
            peaks = measure_peaks(cfg.threads)
            step("peaks")
        rounds = []
        for r in range(cfg.rounds):
            bar.update(task, description=f"bench: round {r + 1}/{cfg.rounds}")
            rounds.append({b["backend"]: b for b in _execute(jobs, cfg, lambda n, r=r: step(f"round {r + 1}: {n}"))})
        pooled = pool_rounds(rounds)
        results["backends"] = list(pooled.values())
        results["rounds"] = [{n: {s: v["p50_ms"] for s, v in b["stages"].items()} for n, b in rd.items()}
                             for rd in rounds]
        # two runs as a user would make them: the odd and the even rounds, each pooled like the figures
        halves = [pool_rounds(rounds[0::2]), pool_rounds(rounds[1::2])] if len(rounds) > 1 else [pooled]
        results["stability"] = analysis.stability(halves, per_run=len(rounds) // 2)
        evaluation = None
        if cfg.eval_clips > 0:
            bar.update(task, description=f"bench: WAF on {cfg.eval_clips} test clips per budget and precision")
            evaluation = analysis.evaluate(bundle, cfg.data, cfg.eval_clips, budgets, cfg.threads)
            step("evaluation")
        results["budget_sweep"] = _budget_sweep(results["backends"], budgets, evaluation)
        results["evaluation"] = evaluation
        bar.update(task, description="bench: FLOPs, bytes and roofline")
        if cfg.peaks:
            results["roofline"] = _roofline(cfg, m, results["backends"], peaks)
        step("roofline")
        from emo_edge.export.ort_fusions import fusion_report

        results["ort_fusions"] = {k: fusion_report(Path(cfg.bundle) / e.dir) for k, e in m.perception.items()}
        results["projection"] = {"note": "PROJECTION from published peak compute and bandwidth (roofline lower "
                                         "bound, fp16 tensor cores); not a measurement", **analysis.projection()}
        step("projection")
    results["targets"] = analysis.targets(pooled, results["stability"], evaluation, m, results.get("roofline"))
    if m.checkpoint.trained.get("random_weights"):
        results["random_weights"] = ("the checkpoint's perception has RANDOM weights (emo-edge init --random-weights): "
                                     "timings, FLOPs and parity are real; labels and WAF mean nothing")
    results["machine"]["load_after"] = _load()
    bundle.close()
    write_outputs(results, Path(cfg.out))
    return results


def _budget_sweep(backends: list[dict[str, Any]], budgets: dict[str, dict[str, int]],
                  evaluation: dict[str, Any] | None) -> list[dict[str, Any]]:
    rows = []
    for name, b in budgets.items():
        row: dict[str, Any] = {"budget": name, "layout": b, "tokens": sum(b.values()),
                               "prefill_p50_ms": {x["backend"]: x["budget_prefill"][name]["p50_ms"]
                                                  for x in backends if x["kind"] == "llm"}}
        if evaluation is not None:
            row["llm_waf"] = evaluation["llm_waf"][name]["waf"]
            row["waf_note"] = evaluation["llm_waf"][name].get("why", f"{evaluation['n_clips']} test clips, "
                                                                     f"{evaluation['llm']}")
        rows.append(row)
    return rows


def _roofline(cfg: BenchConfig, m: Manifest, backends: list[dict[str, Any]], peaks: Any) -> dict[str, Any]:
    from emo_edge.bench import analysis

    ckpt = cfg.checkpoint or m.checkpoint.path
    out: dict[str, Any] = {"peaks": peaks.to_dict(),
                           "bound": "max(FLOPs / compute peak, compulsory bytes / copy bandwidth), all measured in "
                                    "this run; the compute peak is ONNX Runtime's int8 GEMM for the INT8 perception "
                                    "(when measured; every FLOP of those graphs held to it, so a lower bound) and "
                                    "the fp32 matmul for everything else, GGUF stages included"}
    try:
        from emo_edge.checkpoint import load_checkpoint

        model = load_checkpoint(ckpt, merge=True)
    except (FileNotFoundError, ValueError, TypeError) as e:
        out["stages"], out["why_missing"] = [], f"no checkpoint to count FLOPs from ({e})"
        return out
    prompt = len(model.sequence_ids(_emotion_suffix(m), None)[0])
    costs = analysis.measured_costs(model, m, Path(cfg.bundle), prompt)
    out["prompt_tokens"] = prompt
    out["stages"] = analysis.roofline_rows(backends, costs, peaks)
    return out


def _longest_evidence(m: Manifest) -> str:
    """The longest evidence text the bundle's LLM can be given (every attribute said, each by its longer phrase; ""
    when it reads none): its length in characters bounds its tokens, room the budget sweep's prompts need."""
    template = m.prompt.get("evidence")
    if not template:
        return ""
    return template.format(cues=", ".join(max(a.phrases, key=len) for a in m.attributes or []))


def _emotion_suffix(m: Manifest) -> str:
    """The emotion prompt's suffix without a subtitle; for a bundle whose LLM reads the attribute readings, with
    every attribute said as its first value (the length of a clip's evidence, give or take a word)."""
    from emo_edge.prompts import suffix
    from emo_edge.runtime.pipeline import evidence_from_probs

    template = m.prompt.get("evidence")
    said = evidence_from_probs(m.attributes or [], np.ones(len(m.attributes or [])), np.ones(3),
                               template) if template else ""
    return suffix("emotion", None, m.prompt["template"], m.prompt["instructions"], said)
