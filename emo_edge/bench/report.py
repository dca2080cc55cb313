"""Bench outputs from the results dict: results.json, results.md (tables), PNG plots, and docs/benchmarks.md.

`python -m emo_edge.bench.report RESULTS.json --docs docs/benchmarks.md` regenerates the markdown (and the
docs page) from a saved results.json without re-running anything.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

PLOTS = ("latency.png", "budget_sweep.png")
REPLAY_PLOT = "utterance_latency.png"
BUSY_LOAD = 0.5  # load average per logical CPU before the run above which the numbers are flagged


def _f(x: Any, nd: int = 2) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float | int):
        return f"{x:,.{nd}f}" if abs(x) < 1e4 else f"{x:,.0f}"
    return str(x)


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_f(c) if not isinstance(c, str) else c for c in r) + " |" for r in rows]
    return "\n".join(lines)


SMOKE_REPS = 10  # fewer timed repetitions per stage than this: a smoke run


def busy_note(results: dict[str, Any]) -> str | None:
    """A warning when the machine was loaded before the run or the run was a smoke run (few repetitions):
    its timings are then not publishable."""
    m, reps = results["machine"], results["config"]["reps"]
    load, cpus = m.get("load_before", {}).get("load_1min"), m.get("logical_cpus") or 1
    why = []
    if load is not None and load / cpus > BUSY_LOAD:
        why.append(f"the machine was busy (1-min load {load:.2f} on {cpus} logical CPUs before the run)")
    if reps["min_reps"] < SMOKE_REPS:
        why.append(f"a smoke run ({reps['min_reps']} timed repetitions per stage)")
    if not why:
        return None
    return f"**Not final: {' and '.join(why)}**; rerun on a quiet machine before quoting these timings."


def _ms3(s: dict[str, Any] | None) -> str:
    return "-" if s is None else f"{s['p50_ms']:.2f} / {s['p95_ms']:.2f} / {s['p99_ms']:.2f}"


def _targets_md(results: dict[str, Any]) -> str:
    met = {True: "**met**", False: "**unmet**", None: "not measured"}
    return table(["target", "goal", "value", "status", "numbers"],
                 [[t["target"], _f(t["goal"]), _f(t["value"], 3), met[t["met"]], t["detail"]]
                  for t in results["targets"]])


def _latency_md(results: dict[str, Any], kind: str, stages: Sequence[str]) -> str:
    rows = []
    for b in results["backends"]:
        if b["kind"] != kind:
            continue
        extra = []
        if kind == "llm":
            extra = [_f(b["stages"]["decode_per_token"].get("tok_s"), 1), _f(b.get("answer_tokens_mean"), 1)]
        rows.append([b["backend"], *[_ms3(b["stages"].get(s)) for s in stages], *extra, _f(b["peak_rss_mb"], 0)])
    extra_h = ["decode tok/s", "answer tokens (mean)"] if kind == "llm" else []
    return table(["backend", *[f"{s} ms p50/p95/p99" for s in stages], *extra_h, "peak RSS MiB"], rows)


def _sweep_md(results: dict[str, Any]) -> str:
    sweep = results["budget_sweep"]
    llms = sorted({k for r in sweep for k in r["prefill_p50_ms"]})
    rows = [[r["budget"], str(r["tokens"]), "/".join(str(v) for v in r["layout"].values()),
             *[_f(r["prefill_p50_ms"].get(b)) for b in llms], _f(r.get("llm_waf"), 3), r.get("waf_note", "-")]
            for r in sweep]
    return table(["budget", "tokens", "fusion/image/video/audio", *[f"prefill p50 ms {b}" for b in llms], "LLM WAF",
                  "WAF source"], rows)


def _roofline_md(results: dict[str, Any]) -> str:
    r = results.get("roofline")
    if not r:
        return "Roofline not measured (run without --no-peaks)."
    p = r["peaks"]
    head = (f"Peaks measured in this run: fp32 matmul {p['fp32_matmul_gflop_s']:.1f} GFLOP/s, bf16 matmul "
            f"{p['bf16_matmul_gflop_s']:.1f} GFLOP/s, "
            + (f"int8 GEMM {p['int8_matmul_gop_s']:.1f} GOP/s, " if p.get("int8_matmul_gop_s") else "")
            + f"copy {p['copy_gb_s']:.2f} GB/s. Bound: {r['bound']}.")
    if not r.get("stages"):
        return head + "\n\n" + r.get("why_missing", "")
    rows = [[s["backend"], s["stage"], _f(s["flops"] / 1e6, 1), _f(s["bytes"] / 2**20, 2),
             _f(s["intensity_flop_per_byte"], 1), _f(s["p50_ms"]), _f(s["achieved_gflop_s"], 2), _f(s["bound_ms"], 3),
             f"{s['limiter']} ({s.get('compute_roof', 'fp32')})", f"{s['fraction_of_bound'] * 100:.1f} %",
             s["reason"] or "-"] for s in r["stages"]]
    return head + "\n\n" + table(["backend", "stage", "MFLOP", "MiB", "FLOP/B", "p50 ms", "GFLOP/s", "bound ms",
                                  "limiter (compute roof)", "of bound", "why far below (<10 %) or above"], rows)


def _op_times_md(results: dict[str, Any], top: int = 8) -> str:
    """The largest (graph, op type) kernel times of each ONNX Runtime CPU backend, from its profiler."""
    parts = []
    for b in results["backends"]:
        ops = b.get("op_times")
        if not ops:
            continue
        rows = [[k.split(":")[0], k.split(":")[1], _f(v["us_per_run"], 0), f"{v['share'] * 100:.1f} %"]
                for k, v in list(ops["by_graph_op"].items())[:top]]
        parts.append(f"`{b['backend']}`: {ops['kernel_us_per_run']:.0f} us of kernels per run ({ops['runs']} profiled "
                     f"runs)\n\n" + table(["graph", "op", "us per run", "share"], rows))
    return "\n\n".join(parts) or "Not measured."


def _fusions_md(results: dict[str, Any]) -> str:
    fusions = results.get("ort_fusions")
    if not fusions:
        return "Not counted."
    rows = [[entry, graph, ", ".join(f"{op} {n}" for op, n in ops.items()) or "none"]
            for entry, graphs in fusions.items() for graph, ops in graphs.items()]
    return ("Fused ops in the graph ONNX Runtime's CPU provider runs (session optimisation level all):\n\n"
            + table(["graphs", "graph", "fused ops"], rows))


def _projection_md(results: dict[str, Any]) -> str:
    pr = results["projection"]
    parts = [f"**{pr['note']}.**"]
    for preset in ("edge-small", "edge-base", "paper"):
        if preset not in pr:
            continue
        p = pr[preset]
        devices = list(p["devices"])
        stages = list(p["costs"])
        rows = [[s, _f(p["costs"][s]["flops"] / 1e9, 3), _f(p["costs"][s]["bytes"] / 2**20, 1),
                 *[f"{p['devices'][d][s]['bound_ms']:.3f} ({p['devices'][d][s]['limiter']})" for d in devices]]
                for s in stages]
        parts.append(f"`{preset}` ({p['tokens']} multimodal tokens, {p['prompt_tokens']} prompt tokens):\n\n"
                     + table(["stage", "GFLOP", "MiB", *[f"{d} bound ms" for d in devices]], rows))
    from emo_edge.bench.roofline import DEVICES

    parts.append("Published peaks used:\n\n" + table(
        ["device", "fp32 TFLOP/s", "fp16 dense TFLOP/s", "GB/s", "derivation", "sources"],
        [[d.name, _f(d.fp32_tflop_s), _f(d.fp16_tensor_tflop_s), _f(d.bandwidth_gb_s, 1), d.derivation,
          "; ".join(d.sources)] for d in DEVICES]))
    return "\n\n".join(parts)


def results_markdown(results: dict[str, Any]) -> str:
    m, c = results["machine"], results["config"]
    ev = results.get("evaluation")
    lines = [f"# emo-edge bench: {results['bundle']['target']} bundle, {results['started']}", ""]
    note = busy_note(results)
    if note:
        lines += [note, ""]
    if results.get("random_weights"):
        lines += [f"**{results['random_weights']}.**", ""]
    lines += [f"Machine: {m['cpu']} ({m['logical_cpus']} logical CPUs, {', '.join(m['simd']) or 'no SIMD flags read'}),"
              f" {m['platform']}; load before {m['load_before']['load_1min']:.2f}, after "
              f"{m.get('load_after', {}).get('load_1min', float('nan')):.2f}. Threads per backend: {c['threads']} "
              f"(numpy's BLAS: 1; large blocks on glibc's heap; ONNX Runtime: the four graphs merged into one "
              f"session). "
              f"Repetitions: warm-up {c['reps']['warmup']}, at least {c['reps']['min_reps']} and "
              f"{c['reps']['min_seconds']} s per stage, {c['rounds']} rounds (a fresh process "
              f"per backend each; every figure pools all rounds' samples); batch 1; "
              f"{len(results['windows'])} input windows of {results['windows'][0]['frames']} frames "
              f"({results['windows'][0]['fps']:.0f} fps) rotated.", "",
              "Versions: " + ", ".join(f"{k} {v}" for k, v in results["versions"].items() if v), "",
              "## Targets", "", _targets_md(results), "",
              "## Perception (fast path)", "", "`preprocess` is the numpy frontend (temporal view, peak frame, "
              "log-mel of the window); `perception` runs the four graphs from runtime arrays; `fast_path` is one "
              "update end to end (preprocess + perception + head label).", "",
              _latency_md(results, "perception", ("preprocess", "image_encoder", "video_encoder", "audio_encoder",
                                                  "fusion", "perception", "fast_path")), "",
              "## LLM (slow path)", "", "`prefill`: the emotion prompt with the multimodal tokens; `ttft`: prefill + "
              "first token; `decode_per_token`: forced greedy steps; `answer`: a whole `reason` answer; `slow_path`: "
              "window -> perception -> reason answer (transformers with eager perception, llama.cpp with the bundle's "
              "ONNX Runtime perception).", "",
              _latency_md(results, "llm", ("prefill", "ttft", "decode_per_token", "answer", "slow_path")), ""]
    if results["unavailable"]:
        lines += ["Not run here:", ""] + [f"- {u['name']}: {u['reason']}" for u in results["unavailable"]] + [""]
    lines += ["## Token budget sweep", "", _sweep_md(results), ""]
    if ev:
        lines += [f"Head WAF on the first {ev['n_clips']} test clips: "
                  + ", ".join(f"{k} {v:.3f}" for k, v in ev["head_waf"].items())
                  + ". Budgets below the trained layout drop whole streams at inference time (their tokens are not "
                    "fed, as for a missing modality) from a checkpoint trained with all of them.", ""]
    lines += ["## Roofline (this machine)", "", _roofline_md(results), "",
              "## Where ONNX Runtime's kernel time goes", "", "ONNX Runtime's profiler on the merged perception "
              "(batch 1): the ops that bound what INT8 can gain.", "", _op_times_md(results), "",
              "## Projection onto Jetson (not measured)", "", _projection_md(results), "",
              "## ONNX Runtime's graph fusions", "", _fusions_md(results), "",
              "## Stability", "", results["stability"]["summary"], ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# plots
# ---------------------------------------------------------------------------------------------


def plot_latency(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    groups = {"perception": ("preprocess", "image_encoder", "video_encoder", "audio_encoder", "fusion", "perception",
                             "fast_path"),
              "llm": ("prefill", "ttft", "decode_per_token", "answer", "slow_path")}
    fig, axes = plt.subplots(1, 2, figsize=(15, 5.5))
    for ax, (kind, stages) in zip(axes, groups.items(), strict=True):
        bs = [b for b in results["backends"] if b["kind"] == kind]
        width = 0.8 / max(len(bs), 1)
        x = np.arange(len(stages))
        for i, b in enumerate(bs):
            p50 = [b["stages"][s]["p50_ms"] if s in b["stages"] else np.nan for s in stages]
            p95 = [b["stages"][s]["p95_ms"] if s in b["stages"] else np.nan for s in stages]
            err = np.array(p95) - np.array(p50)
            ax.bar(x + i * width, p50, width, yerr=[np.zeros_like(err), err], label=b["backend"], capsize=2)
        ax.set_xticks(x + width * (len(bs) - 1) / 2, stages, rotation=30, ha="right")
        ax.set_yscale("log")
        ax.set_ylabel("ms (bar p50, whisker p95)")
        ax.set_title(f"{kind} latency per stage and backend")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_budget_sweep(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep = sorted(results["budget_sweep"], key=lambda r: r["tokens"])
    llms = sorted({k for r in sweep for k in r["prefill_p50_ms"]})
    fig, ax = plt.subplots(figsize=(8, 5))
    toks = [r["tokens"] for r in sweep]
    for b in llms:
        ax.plot(toks, [r["prefill_p50_ms"].get(b) for r in sweep], marker="o", label=b)
    for r in sweep:
        waf = r.get("llm_waf")
        label = f"{r['budget']}\nWAF {waf:.3f}" if waf is not None else f"{r['budget']}\nWAF n/a"
        ax.annotate(label, (r["tokens"], max(r["prefill_p50_ms"].values(), default=1)), textcoords="offset points",
                    xytext=(0, 8), ha="center", fontsize=7)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("multimodal tokens in the prompt")
    ax.set_ylabel("prefill p50 ms")
    ax.set_title("token budget: prefill latency (lines) and LLM WAF (labels)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(results: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    results["plots"] = list(PLOTS)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    (out / "results.md").write_text(results_markdown(results))
    plot_latency(results, out / PLOTS[0])
    plot_budget_sweep(results, out / PLOTS[1])


def replay_markdown(replay: dict[str, Any]) -> str:
    """The "ROS 2 replay" section: end-to-end latency percentiles and message rates of a bag replay."""
    rows = []
    for source in ("head", "llm"):
        s = replay[f"{source}_states"]
        rows += [[f"{source} state: window end -> received (`state_e2e_ms`)", str(s["n"]), _ms3(s["state_e2e_ms"])],
                 [f"{source} state: window end -> published, node's `latency_ms` (`state_node_ms`)", str(s["n"]),
                  _ms3(s["state_node_ms"])]]
    for kind, what in (("head", "sliding-window"), ("head_utterance", "utterance-end, includes the VAD's hangover")):
        s = replay.get("head_states_split", {}).get(kind)
        if s is not None:
            rows.append([f"head state ({what}): window end -> received", str(s["n"]), _ms3(s["state_e2e_ms"])])
    r = replay["reasoning"]
    rows += [["reasoning: window end -> first message (`reasoning_first_ms`)", str(r["utterances"]),
              _ms3(r["reasoning_first_ms"])],
             ["reasoning: window end -> done (`reasoning_done_ms`)", str(r["finished"]), _ms3(r["reasoning_done_ms"])]]
    rates = [[k, _f(v)] for k, v in replay["rates_hz"].items()]
    return "\n".join([
        f"{replay['duration_s']:.1f} s of replay; states whose window ended in the first {replay['warmup_s']:g} s "
        f"are warm-up and not counted ({replay['states_in_warmup']}). Times are on the node's clock; `received` is "
        "when the recorder process got the message.", "",
        table(["latency", "n", "p50 / p95 / p99 ms"], rows), "",
        table(["rate", "Hz"], rates), "", _inputs_md(replay.get("inputs", {})), _utterances_md(replay)])


def _inputs_md(inputs: dict[str, Any]) -> str:
    """The bag's input against what the node's stream accepted ('' when the node reported no counts)."""
    if "audio_chunks_received" not in inputs:
        return ""
    rows = [[what, str(inputs.get(f"{key}_in_bag", "-")), str(inputs[f"{key}_received"])]
            for key, what in (("frames", "frames"), ("audio_chunks", "audio chunks"))]
    return (table(["input", "in the bag", "accepted by the node's stream"], rows) + "\n\n"
            f"Audio gaps filled with silence: {inputs['audio_gaps']} ({inputs['audio_gap_s']:.2f} s).\n")


UTTERANCE_ROWS = (("label_ms", "the first head label that stood (early, or final)"),
                  ("provisional_ms", "early (provisional, later confirmed) head label"),
                  ("final_ms", "final head state"), ("llm_label_ms", "LLM label that stood"),
                  ("reasoning_first_ms", "first reasoning message"), ("reasoning_done_ms", "reasoning done"))


def _utterances_md(replay: dict[str, Any]) -> str:
    """Per-utterance latency from the VAD's end of speech, and the head's freshness while reasoning streams."""
    u = replay.get("utterances")
    if u is None:
        return ""
    rows = [[f"speech end -> {what} (`{k}`)", str(u[k]["n"] if u[k] else 0), _ms3(u[k])] for k, what in UTTERANCE_ROWS]
    hw = replay["head_while_reasoning"]
    fresh = [[f"sliding head state, reasoning {k.replace('_', ' ')}", str(hw[k]["n"]), _ms3(hw[k]["state_e2e_ms"]),
              _f(hw[k]["rate_hz"])] for k in ("streaming", "not_streaming")]
    return "\n".join([
        f"### Utterances: {u['n']} answered, {u['answered_early']} early; {u['withdrawn']} provisional answers "
        f"withdrawn (in {u['utterances_with_withdrawals']} utterances); final states per utterance "
        f"{u['finals_per_utterance']} (head + LLM)", "",
        f"Human turn-taking gap for comparison: ~{u['turn_taking_gap_ms']:.0f} ms.", "",
        table(["from the VAD's end of speech", "n", "p50 / p95 / p99 ms"], rows), "",
        f"### Fast path while the LLM streams ({hw['streaming_s']:.1f} s of streaming)", "",
        table(["head states", "n", "window end -> received p50 / p95 / p99 ms", "rate Hz"], fresh)])


def plot_utterance_latency(replay: dict[str, Any], path: Path) -> None:
    """Per-utterance latencies from the end of speech (points per utterance, bar at the median) with the human
    turn-taking gap as a line, and the head's latency while reasoning streams vs. not."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    u, hw = replay["utterances"], replay["head_while_reasoning"]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(14, 5), gridspec_kw={"width_ratios": [3, 1]})
    for i, (k, _) in enumerate(UTTERANCE_ROWS):
        vals = [r[k] for r in u["per_utterance"] if r[k] is not None]
        ax.scatter(np.full(len(vals), i) + np.linspace(-0.2, 0.2, len(vals)), vals, s=14)
        if vals:
            ax.hlines(np.median(vals), i - 0.3, i + 0.3, color="k")
    gap = u["turn_taking_gap_ms"]
    ax.axhline(gap, color="r", ls="--", label=f"human turn-taking gap ~{gap:.0f} ms")
    ax.set_xticks(range(len(UTTERANCE_ROWS)), [k.removesuffix("_ms") for k, _ in UTTERANCE_ROWS], rotation=20)
    ax.set_yscale("log")
    ax.set_ylabel("ms after the VAD's end of speech (line: median)")
    ax.set_title(f"per utterance (n={u['n']}, {u['withdrawn']} provisional withdrawn)")
    ax.legend(fontsize=8)
    for i, k in enumerate(("streaming", "not_streaming")):
        s = hw[k]["state_e2e_ms"]
        if s is not None:
            bx.bar(i, s["p50_ms"], yerr=[[0], [s["p95_ms"] - s["p50_ms"]]], capsize=4)
    bx.set_xticks([0, 1], ["reasoning\nstreams", "no\nreasoning"])
    bx.set_ylabel("sliding head state: window end -> received, ms (p50, whisker p95)")
    bx.set_title("fast path freshness")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_replay_outputs(results: dict[str, Any], out: Path) -> None:
    """results.json, results.md and the per-utterance latency plot of `emo-edge bench --bag`."""
    out.mkdir(parents=True, exist_ok=True)
    if results["ros2_replay"].get("utterances", {}).get("n"):
        plot_utterance_latency(results["ros2_replay"], out / REPLAY_PLOT)
        results["plots"] = [REPLAY_PLOT]
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    m, c = results["machine"], results["config"]
    load = m["load_before"]["load_1min"]
    lines = [f"# emo-edge bench --bag: {results['bundle']['target']} bundle, {results['started']}", ""]
    if load / (m["logical_cpus"] or 1) > BUSY_LOAD:
        lines += [f"**Not final: the machine was busy (1-min load {load:.2f} on {m['logical_cpus']} logical CPUs "
                  "before the run)**; rerun on a quiet machine before quoting these timings.", ""]
    lines += [f"Machine: {m['cpu']} ({m['logical_cpus']} logical CPUs), {m['platform']}. Bag {c['bag']}, replayed "
              f"at its recorded rate through the node (threads {c['threads']}, fast_hz {c['stream']['fast_hz']}, "
              f"slow {c['stream']['slow']}).", "",
              "Versions: " + ", ".join(f"{k} {v}" for k, v in results["versions"].items() if v), "",
              "## ROS 2 replay", "", replay_markdown(results["ros2_replay"]), ""]
    (out / "results.md").write_text("\n".join(lines))


def docs_markdown(results: dict[str, Any]) -> str:
    """docs/benchmarks.md: how to reproduce, then the tables of `results`."""
    cmd = results.get("command") or "emo-edge bench ..."
    intro = ["# Benchmarks", "",
             "Generated from a `results.json` by `python -m emo_edge.bench.report RESULTS.json --docs "
             "docs/benchmarks.md`; do not edit by hand. Produced by:", "", f"    {cmd}", "",
             "Plots (`latency.png`, `budget_sweep.png`) and the full `results.json` are written next to "
             "`results.md` in the run's output directory.", ""]
    body = results_markdown(results).split("\n", 1)[1]  # the page has its own title
    return "\n".join(intro) + f"\n## Run of {results['started']}\n" + body


SECTION = "<!-- {} generated section: {} -->"  # markers around a named section of the docs page


def section_markdown(results: dict[str, Any], name: str) -> str:
    """`results` as a named section of the docs page (its headings one level down), between SECTION markers."""
    cmd = results.get("command") or "emo-edge bench ..."
    title, body = results_markdown(results).split("\n", 1)
    body = "\n".join("#" + line if line.startswith("#") else line for line in body.split("\n"))
    return "\n".join([SECTION.format("BEGIN", name), f"## {name}: {title.removeprefix('# emo-edge bench: ')}", "",
                      f"Produced by `{cmd}`.", body.rstrip("\n"), SECTION.format("END", name)])


def sections(text: str) -> dict[str, str]:
    """The named generated sections of a docs page, each with its markers."""
    out, pos = {}, 0
    head, tail = SECTION.split("{}", 1)[0] + "BEGIN", " -->"
    while (start := text.find(head, pos)) >= 0:
        name = text[start + len(head) + len(" generated section: "):text.index(tail, start)]
        end_marker = SECTION.format("END", name)
        end = text.index(end_marker, start) + len(end_marker)
        out[name], pos = text[start:end], end
    return out


def update_docs(path: Path, results: dict[str, Any], section: str | None = None) -> None:
    """Rewrite the docs page: the whole page from `results` keeping the other named sections, or only `section`."""
    old = path.read_text() if path.is_file() else ""
    kept = sections(old)
    if section is None:
        main_part = docs_markdown(results)
    else:
        main_part = old.split(SECTION.split("{}", 1)[0] + "BEGIN", 1)[0].rstrip("\n") if old else "# Benchmarks"
        kept[section] = section_markdown(results, section)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n\n".join([main_part.rstrip("\n"), *kept.values()]) + "\n")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", type=Path, help="a results.json written by emo-edge bench")
    ap.add_argument("--docs", type=Path, help="also write this docs page (e.g. docs/benchmarks.md)")
    ap.add_argument("--section", help="write the results as this named section of the docs page (e.g. edge-base), "
                                      "leaving the rest; without it the page is rewritten, its named sections kept")
    args = ap.parse_args(argv)
    results = json.loads(args.results.read_text())
    (args.results.parent / "results.md").write_text(results_markdown(results))
    if args.docs:
        update_docs(args.docs, results, args.section)


if __name__ == "__main__":
    main()
