"""`emo-edge`: one CLI, each subcommand a typed function whose signature and docstring are the help."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from emo_edge.data import SYNTH_DEFAULT_VERSION

if TYPE_CHECKING:
    from emo_edge.runtime.plan import ExecutionPlan

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
data_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Data sets: generate or prepare.")
app.add_typer(data_app, name="data")
engines_app = typer.Typer(add_completion=False, no_args_is_help=True,
                          help="TensorRT engines of a bundle, built on the device that runs them.")
app.add_typer(engines_app, name="engines")
console = Console()
FALLBACK_HELP = ("cpu: where this machine lacks the GPU / TensorRT / GPU llama.cpp the bundle's target needs, run on "
                 "the CPU instead (logged and shown in the plan); default: refuse")


ALL_VIEWS = "video,audio,text"  # the --modalities default; it means every view (see eval.evaluate.views)


def _fail(msg: str) -> None:
    console.print(f"[red]error:[/] {msg}")
    raise typer.Exit(2)


@data_app.command("synth")
def data_synth(
    out: Annotated[Path, typer.Option(help="output directory (gets <split>.jsonl and <split>/ clips)")],
    n: Annotated[int | None, typer.Option(help="clips per split (default: the standard 3000/600/600)")] = None,
    seed: Annotated[int, typer.Option(help="random seed; the same seed gives the same clips")] = 0,
    split: Annotated[str | None, typer.Option(help="train, val or test; default: all three")] = None,
    workers: Annotated[int, typer.Option(help="worker processes")] = 2,
    version: Annotated[int, typer.Option(help="SynthEmo version: 2 (per-clip label-independent attributes, "
                                              "temporal pair) or 1 (the original set: cues follow the label)")
                       ] = SYNTH_DEFAULT_VERSION,
    neutral_text: Annotated[bool, typer.Option(help="v2 only: emotion-neutral subtitles and speech only")] = False,
) -> None:
    """Generate SynthEmo: procedurally rendered faces + espeak-ng speech, with grounded targets."""
    from emo_edge.data.synth import STANDARD_SIZES, generate

    splits = [split] if split else list(STANDARD_SIZES)
    bad = [s for s in splits if s not in STANDARD_SIZES]
    if bad:
        _fail(f"--split {bad[0]!r}: choose one of {', '.join(STANDARD_SIZES)}")
    t0 = time.time()
    for s in splits:
        try:
            path = generate(out, n if n is not None else STANDARD_SIZES[s], seed, s, workers=workers,
                            version=version, neutral_text=neutral_text)
        except ValueError as e:
            _fail(str(e))
        console.print(f"wrote {path}")
    console.print(f"done in {time.time() - t0:.1f} s")


@data_app.command("prepare")
def data_prepare(
    source: Annotated[str, typer.Option(help="dataset: mer2023, mer2024, caer, dfew, mafw, mafw-m, meld, mc-eiu, "
                                             "iemocap, ch-sims, ch-sims-v2, cmu-mosi, cmu-mosei, bold, e3, ov-merd+")],
    root: Annotated[Path, typer.Option(help="the dataset's top directory, as distributed")],
    out: Annotated[Path, typer.Option(help="output directory (gets <split>.jsonl, media/ and prepare_report.json)")],
    workers: Annotated[int, typer.Option(help="parallel ffmpeg processes")] = 2,
) -> None:
    """Convert a licensed dataset's own layout to unified JSONL; unreadable or missing clips are reported."""
    from emo_edge.data.adapters import prepare

    try:
        report = prepare(source, root, out, workers)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        _fail(str(e))
    console.print(f"{source}: " + ", ".join(f"{k} {v}" for k, v in report["counts"].items()) + f" -> {out}")
    for b in report["bad"][:10]:
        console.print(f"[yellow]bad clip[/] {b['id']}: {b['reason']}")
    if report["n_bad"]:
        console.print(f"{report['n_bad']} clip(s) left out; all listed in {out / 'prepare_report.json'}")


@data_app.command("shard")
def data_shard(
    data: Annotated[Path, typer.Option(help="directory with <split>.jsonl files (unified format) and their media")],
    out: Annotated[str, typer.Option(help="shard directory: a local path, or a URL when fsspec is installed")],
    shard_size: Annotated[int, typer.Option(help="clips per shard")] = 1000,
    preset: Annotated[str, typer.Option(help="preset whose frontend preprocesses the clips")] = "edge-small",
    splits: Annotated[str, typer.Option(help="comma-separated splits to shard (those present)")] = "train,val",
    seed: Annotated[int, typer.Option(help="seed of the record shuffle before sharding")] = 0,
    workers: Annotated[int, typer.Option(help="decoding processes")] = 2,
) -> None:
    """Preprocess JSONL splits into shards for streaming training; bad clips are reported and skipped."""
    from emo_edge.config import load_preset
    from emo_edge.data.schema import find_split
    from emo_edge.data.shards import write_shards

    try:
        fe = load_preset(preset).model.frontend
        for split in [s.strip() for s in splits.split(",") if s.strip()]:
            index = write_shards(find_split(data, split), out, split, fe, shard_size, workers, seed)
            console.print(f"{split}: {index.n_clips} clips in {len(index.shards)} shard(s) under {index.root}")
            for b in index.bad:
                console.print(f"[yellow]bad clip[/] {b}")
    except (FileNotFoundError, ValueError) as e:
        _fail(str(e))


@app.command()
def train(
    data: Annotated[str, typer.Option(help="directory with train.jsonl and val.jsonl, or a shard directory/URL")],
    out: Annotated[Path, typer.Option(help="checkpoint directory to write")],
    preset: Annotated[str, typer.Option(help="tiny, edge-small, paper, or a YAML path")] = "edge-small",
    stages: Annotated[str, typer.Option(help="comma-separated: 0 LM pretraining, 1 perception, 2 cognition")] = "0,1,2",
    resume: Annotated[bool, typer.Option(help="continue from the checkpoint's saved state")] = False,
    seed: Annotated[int | None, typer.Option(help="override the preset's seed")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="train overrides KEY=VALUE, e.g. lm_steps=10")] = None,
) -> None:
    """Train a checkpoint: stage 0 (LM), then the perception-to-cognition curriculum. Runs under torchrun too."""
    from emo_edge.train.loop import _num
    from emo_edge.train.loop import train as run

    overrides = {k: _num(v) for k, v in (s.split("=", 1) for s in (set_ or []))}
    try:
        path = run(preset, data, out, tuple(int(s) for s in stages.split(",")), resume, seed, overrides=overrides)
    except (FileNotFoundError, ValueError) as e:
        _fail(str(e))
    console.print(f"checkpoint: {path}")


@app.command("init")
def init(
    out: Annotated[Path, typer.Option(help="checkpoint directory to write (must not exist)")],
    preset: Annotated[str, typer.Option(help="edge-base, edge-small, paper, tiny, or a YAML path")] = "edge-base",
    random_weights: Annotated[bool, typer.Option(help="required: the perception gets random weights (recorded in "
                                                      "meta.json and any bundle's manifest); for timing and export")]
    = False,
    llm_from: Annotated[str, typer.Option(help="checkpoint whose LLM and LoRA are taken: 'default' (the toy LLM), "
                                               "'edge-gemma' (Gemma 3 270M from its package) or a directory; "
                                               "ignored when the preset's llm.path names a backbone")] = "default",
    seed: Annotated[int, typer.Option(help="seed of the random weights")] = 0,
) -> None:
    """Build an untrained checkpoint of a preset's architecture (real-size graphs without their weights)."""
    from emo_edge.checkpoint import init_checkpoint

    try:
        path = init_checkpoint(preset, out, random_weights, llm_from, seed)
    except (FileNotFoundError, ValueError) as e:
        _fail(str(e))
    console.print(f"checkpoint: {path} [yellow](random weights: costs only, not accuracies)[/]")


@app.command("eval")
def eval_(
    data: Annotated[Path | None, typer.Option(help="directory with <split>.jsonl, or a JSONL file")] = None,
    benchmark: Annotated[str | None, typer.Option(help="score one of the 18 benchmarks instead (needs --root "
                                                       "or a prepared --work)")] = None,
    root: Annotated[Path | None, typer.Option(help="with --benchmark: the source dataset's top directory")] = None,
    work: Annotated[Path | None, typer.Option(help="with --benchmark: prepared data directory "
                                                   "(default runs/benchmarks/<source>)")] = None,
    checkpoint: Annotated[str, typer.Option(help="checkpoint directory, 'default' or 'edge-gemma'")] = "default",
    bundle: Annotated[Path | None, typer.Option(help="evaluate an exported bundle (torch-free) instead")] = None,
    quant: Annotated[str | None, typer.Option(help="with --bundle: GGUF quantisation to use")] = None,
    precision: Annotated[str | None, typer.Option(help="with --bundle: perception precision fp32|int8")] = None,
    answer_from: Annotated[str, typer.Option(help="llm (parse the generated answer), head (fast head) or reason "
                                                  "(the reason's conclusion: one generation)")] = "llm",
    modalities: Annotated[str, typer.Option(help="views, a comma list of image (peak frame), video (temporal "
                                                 "frames), audio, text; video,audio,text means all")] = ALL_VIEWS,
    split: Annotated[str, typer.Option(help="split name when --data is a directory")] = "test",
    json_out: Annotated[Path | None, typer.Option("--json", help="write the report here (+ a confusion PNG)")] = None,
    limit: Annotated[int | None, typer.Option(help="evaluate only the first N clips")] = None,
    reason: Annotated[bool, typer.Option(help="also generate reasons and score cue recall (LLM only)")] = True,
    fallback: Annotated[str | None, typer.Option(help=f"with --bundle: {FALLBACK_HELP}")] = None,
) -> None:
    """Evaluate: accuracy, WAF, UAR, WAR, per-class scores, cue recall, LLM/head agreement; or a benchmark's metrics."""
    from emo_edge.eval.evaluate import evaluate_bundle, evaluate_checkpoint, parse_modalities

    if (data is None) == (benchmark is None):
        _fail("give exactly one of --data or --benchmark")
    if benchmark is not None and bundle is not None:
        _fail("--benchmark evaluates a checkpoint; --bundle is not supported with it yet")
    try:
        mods = parse_modalities(modalities)
        if benchmark is not None:
            from emo_edge.eval.benchmarks import evaluate_benchmark

            _print_benchmark(evaluate_benchmark(benchmark, root, work, checkpoint, answer_from, mods, json_out, limit))
            return
        if bundle is not None:
            report = evaluate_bundle(bundle, data, answer_from, mods, json_out, split, reason=reason, limit=limit,
                                     precision=precision, quant=quant, fallback=fallback)
        else:
            report = evaluate_checkpoint(checkpoint, data, answer_from, mods, json_out, split, reason=reason,
                                         limit=limit)
    except (FileNotFoundError, ValueError) as e:
        _fail(str(e))
    _print_report(report)


def _print_benchmark(r: dict) -> None:
    b = r["benchmark"]
    t = Table(title=f"{b['name']} ({b['task']}, {b['source']}/{b['split']}), {r['answer_from']} answers, n={r['n']}")
    for k in (*b["metrics"], "n_bad"):
        t.add_column(k)
    t.add_row(*[f"{r[k]:.4f}" if isinstance(r[k], float) else str(r[k]) for k in (*b["metrics"], "n_bad")])
    console.print(t)
    for bad in r["bad"][:10]:
        console.print(f"[yellow]left out:[/] {bad}")


def _print_report(r: dict) -> None:
    t = Table(title=f"{r['answer_from']} answers, modalities {','.join(r['modalities'])}, n={r['n']}")
    keys = ("acc", "waf", "uar", "war", "cue_recall", "cue_precision", "reason_fluency", "answer_reason_consistency",
            "llm_head_agreement", "head_acc", "n_unparsed", "n_bad")
    for k in keys:
        t.add_column(k)
    t.add_row(*[("-" if r.get(k) is None else f"{r[k]:.4f}" if isinstance(r[k], float) else str(r[k])) for k in keys])
    console.print(t)
    for b in r.get("bad", [])[:10]:
        console.print(f"[yellow]bad clip[/] {b}")


@app.command()
def export(
    out: Annotated[Path, typer.Option(help="bundle directory to write (written elsewhere, moved in when verified)")],
    checkpoint: Annotated[str, typer.Option(help="checkpoint directory, 'default' or 'edge-gemma'")] = "default",
    target: Annotated[str, typer.Option(help="cpu-x86, jetson-orin-agx, jetson-orin-nano, or a YAML")] = "cpu-x86",
    llm_quant: Annotated[list[str] | None, typer.Option(help="extra GGUF quantisations: f16, q8_0, q4_k_m")] = None,
    data: Annotated[Path | None, typer.Option(help="parity clips (a test split); default: fresh SynthEmo")] = None,
    parity_clips: Annotated[int, typer.Option(help="clips used by the parity checks")] = 12,
    calibration: Annotated[Path | None, typer.Option(help="calibration manifest for INT8 graphs")] = None,
    force: Annotated[bool, typer.Option(help="replace an existing bundle")] = False,
    llm_form: Annotated[str, typer.Option(help="merged (LoRA folded in, quantised) or base+lora (the base GGUF "
                                               "untouched + a GGUF LoRA adapter applied at load)")] = "merged",
    int8_layout: Annotated[str | None, typer.Option(help="override the target's INT8 QDQ layout: tensorrt, cpu, "
                                                         "transformer (CPU kernels for transformer encoders' "
                                                         "MatMuls), auto")] = None,
) -> None:
    """Export a checkpoint to a bundle: ONNX perception (+ INT8 QDQ), GGUF LLM, manifest with parity numbers."""
    from emo_edge.export.bundle import build_bundle

    try:
        manifest = build_bundle(checkpoint, target, out, data, tuple(llm_quant or ()), calibration, parity_clips,
                                force, llm_form=llm_form, int8_layout=int8_layout)
    except (FileNotFoundError, ValueError) as e:
        _fail(str(e))
    _print_parity(dataclasses.asdict(manifest.parity))


def _print_parity(parity: dict) -> None:
    t = Table(title=f"parity on {parity['clips']} clips")
    t.add_column("check")
    t.add_column("result")
    worst = parity["perception_fp32_vs_torch"].get("worst", {})
    t.add_row("ONNX fp32 vs eager", ", ".join(f"{k}={v:.3g}" for k, v in worst.items()))
    int8 = parity.get("perception_int8_vs_fp32")
    if int8:
        t.add_row("INT8 vs fp32", f"label agreement {int8['label_agreement']:.3f}")
    for q, r in parity["llm_vs_torch"].get("quants", {}).items():
        t.add_row(f"GGUF {q} vs torch",
                  f"identical answers {r['identical_answers']:.3f}, same label {r['same_label']:.3f}")
    console.print(t)


def stream_options(fn: Callable[..., None]) -> Callable[..., None]:
    """fn(..., **stream) as a command with one option per stream setting, generated from StreamConfig's table
    (emo_edge.runtime.settings: the same names, defaults and help as the ROS 2 node's parameters)."""
    import inspect
    import typing

    from emo_edge.runtime.settings import SETTINGS

    hints = typing.get_type_hints(fn, include_extras=True)
    own = [p.replace(annotation=hints[p.name]) for p in inspect.signature(fn).parameters.values()
           if p.kind is not inspect.Parameter.VAR_KEYWORD]
    extra = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=s.default,
                               annotation=Annotated[s.type, typer.Option(help=s.description)])
             for name, s in SETTINGS.items()]

    def command(**kwargs: Any) -> None:
        fn(**{k: v for k, v in kwargs.items() if k not in SETTINGS}, **{k: kwargs[k] for k in SETTINGS})

    command.__signature__ = inspect.Signature(own + extra)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in own + extra}
    command.__name__, command.__doc__ = fn.__name__, fn.__doc__
    return command


@app.command("run")
@stream_options
def run(
    bundle: Annotated[Path, typer.Option(help="exported bundle directory")],
    video: Annotated[Path | None, typer.Option(help="a video file, played once at its real rate")] = None,
    audio: Annotated[Path | None, typer.Option(help="with --video: a 16 kHz wav (default: its own track)")] = None,
    camera: Annotated[str | None, typer.Option(help="camera index, video file or stream URL (OpenCV)")] = None,
    mic: Annotated[str | None, typer.Option(help="PortAudio input device name or index, or 'default'")] = None,
    transcript: Annotated[Path | None, typer.Option(help="timed transcript for the text modality: lines "
                                                         "'SECONDS TEXT', seconds from the start")] = None,
    jsonl: Annotated[Path | None, typer.Option(help="write every state and reasoning update here (JSON lines)")] = None,
    seconds: Annotated[float | None, typer.Option(help="stop after this many seconds (live input)")] = None,
    view: Annotated[str, typer.Option(help="live: a compact live view (label, scores, latency, the reason "
                                           "streaming in; lines when not on a terminal); lines: one line per "
                                           "update")] = "lines",
    title: Annotated[str, typer.Option(help="a heading for the live view, e.g. the clip and its true label")] = "",
    fallback: Annotated[str | None, typer.Option(help=FALLBACK_HELP)] = None,
    **stream: Any,
) -> None:
    """Live emotion perception: camera + microphone (or a file at real rate) in, states and reasoning out.
    The stream settings below are the ROS 2 node's parameters of the same names."""
    from emo_edge.live_view import make_view
    from emo_edge.runtime.bundle import BundleError, load_bundle
    from emo_edge.runtime.live import JsonlSink, read_transcript, run_live
    from emo_edge.runtime.pipeline import EmotionRuntime
    from emo_edge.runtime.settings import from_flat

    try:
        config = from_flat(stream)
        lines = read_transcript(transcript) if transcript is not None else None
        shown = make_view(view, console, title)
        b = load_bundle(bundle, fallback=fallback)
    except (BundleError, ValueError, FileNotFoundError) as e:
        _fail(str(e))
    _print_plan(b.plan)
    out = jsonl.open("w") if jsonl else None
    sink = JsonlSink(out)

    def state(u: Any) -> None:
        sink.write("state", u.to_dict())
        shown.state(u)

    def reasoning(r: Any) -> None:
        sink.write("reasoning", r.to_dict())
        shown.reasoning(r)

    try:
        with shown:
            stats = run_live(EmotionRuntime(b), b.frontend, config, video, audio, camera, mic, seconds, state,
                             reasoning, say=lambda m: console.print(f"[yellow]{m}[/]"), transcript=lines)
        sink.write("stats", stats)
    except (FileNotFoundError, ValueError, ImportError) as e:
        _fail(str(e))
    finally:
        if out is not None:
            out.close()
        b.close()
    counts = stats["counts"]
    console.print(f"head updates {counts.get('head_updates', 0)}, llm answers {counts.get('llm_updates', 0)}, "
                  f"utterances {counts.get('utterances', 0)} ({counts.get('confirmed', 0)} answered early, "
                  f"{counts.get('withdrawn', 0)} early answers withdrawn); faults {stats['faults']}; "
                  f"errors {stats['errors']}")
    for kind, what in (("head", "sliding window"), ("head_utterance", "utterance"), ("llm", "llm label"),
                       ("speech_label", "speech end -> label")):
        lat = stats["latency_ms"][kind]
        if lat["n"]:
            console.print(f"  latency {what}: median {_round(lat['median_ms'])} ms, p95 {_round(lat['p95_ms'])} ms "
                          f"(n {lat['n']})")


@app.command()
def info(
    preset: Annotated[str | None, typer.Option(help="parameter counts of a preset (built on the meta device)")] = None,
    checkpoint: Annotated[str | None, typer.Option(help="a checkpoint's training record and counts")] = None,
    bundle: Annotated[Path | None, typer.Option(help="a bundle's target and its execution plan here")] = None,
    fallback: Annotated[str | None, typer.Option(help=f"with --bundle: {FALLBACK_HELP}")] = None,
) -> None:
    """Parameter counts per component and the token layout (no weights are loaded or downloaded for a preset);
    for a bundle, its target and how it would run here."""
    if sum(x is not None for x in (preset, checkpoint, bundle)) != 1:
        _fail("give exactly one of --preset, --checkpoint or --bundle")
    if bundle is not None:
        _info_bundle(bundle, fallback)
        return
    from emo_edge.model.summary import checkpoint_summary, preset_summary

    try:
        summary = preset_summary(preset) if preset else checkpoint_summary(checkpoint)
    except (FileNotFoundError, ValueError) as e:
        _fail(str(e))
    t = Table(title=f"{summary['name']}: parameters")
    t.add_column("component")
    t.add_column("parameters", justify="right")
    for k, v in summary["params"].items():
        t.add_row(k, f"{v:,}")
    console.print(t)
    console.print("tokens: " + json.dumps(summary["tokens"]))
    if summary.get("meta"):
        console.print("trained: " + json.dumps(summary["meta"]))


@app.command()
def bench(
    bundle: Annotated[Path, typer.Option(help="an exported bundle (emo-edge export)")],
    out: Annotated[Path, typer.Option(help="output directory: results.json, results.md, latency/budget PNGs")],
    data: Annotated[Path | None, typer.Option(help="recorded clips: a directory with test.jsonl (SynthEmo)")] = None,
    bag: Annotated[Path | None, typer.Option(help="instead: a ROS 2 bag (MCAP) of image + audio replayed through "
                                                  "the ROS 2 node at real rate, timed end to end")] = None,
    checkpoint: Annotated[str | None, typer.Option(help="checkpoint for the PyTorch/transformers reference, "
                                                        "or 'default'")] = None,
    threads: Annotated[int, typer.Option(help="threads of every backend")] = 2,
    reps: Annotated[int, typer.Option(help="at least this many timed repetitions per stage")] = 30,
    min_seconds: Annotated[float, typer.Option(help="and at least this many seconds of them")] = 2.0,
    warmup: Annotated[int, typer.Option(help="untimed calls before timing")] = 3,
    rounds: Annotated[int, typer.Option(help="timing rounds, a fresh process per backend each; figures pool them, "
                                              "the stability spread compares odd vs even rounds")] = 6,
    clips: Annotated[int, typer.Option(help="input windows the timings rotate over")] = 4,
    eval_clips: Annotated[int, typer.Option(help="test clips for the WAF per budget/precision (0: skip)")] = 120,
    isolate: Annotated[bool, typer.Option(help="time each backend in its own process (own peak RSS)")] = True,
    fast_hz: Annotated[float | None, typer.Option(help="--bag: the node's sliding-window update rate, Hz "
                                                       "(default: the stream setting's)")] = None,
    warmup_s: Annotated[float, typer.Option(help="--bag: s of replay at the start not counted")] = 2.0,
    ros_setup: Annotated[Path | None, typer.Option(help="--bag: setup.bash of the built ros2_ws "
                                                        "(default ros2_ws/install/setup.bash)")] = None,
    fallback: Annotated[str | None, typer.Option(help=FALLBACK_HELP)] = None,
) -> None:
    """Time every stage on every available backend, sweep the token budget, place stages under the roofline;
    or, with --bag, replay a ROS 2 bag through the node and time its outputs end to end."""
    import sys

    from emo_edge.bench.runner import BenchConfig, run_bench
    from emo_edge.bench.stats import Reps

    command = " ".join(["emo-edge", *sys.argv[1:]])
    if (data is None) == (bag is None):
        _fail("give exactly one of --data (a directory with test.jsonl) or --bag (an MCAP bag)")
    if bag is not None:
        _bench_bag(bag, bundle, out, threads, fast_hz, warmup_s, ros_setup, command)
        return
    try:
        cfg = BenchConfig(bundle, data, out, checkpoint, threads, Reps(warmup, reps, min_seconds, max(1000, reps)),
                          rounds, clips, eval_clips, isolate=isolate, fallback=fallback)
        results = run_bench(cfg, command=command)
    except (FileNotFoundError, ValueError) as e:
        _fail(str(e))
    for t in results["targets"]:
        mark = {True: "[green]met[/]", False: "[red]unmet[/]", None: "[yellow]not measured[/]"}[t["met"]]
        console.print(f"{mark}  {t['target']}: {t['detail']}")
    console.print(f"wrote {out / 'results.json'}, {out / 'results.md'} and plots")


def _print_plan(plan: ExecutionPlan) -> None:
    style = "yellow" if plan.fallback else "green"
    console.print(f"[{style}]plan[/] " + "\n     ".join(plan.describe()))


def _info_bundle(bundle: Path, fallback: str | None) -> None:
    from emo_edge.runtime.bundle import BundleError, load_bundle

    try:
        b = load_bundle(bundle, fallback=fallback)
    except (BundleError, ValueError) as e:
        _fail(str(e))
    m = b.manifest
    console.print(f"bundle {bundle}: target {m.target.name} ({m.target.description}); checkpoint {m.checkpoint.name} "
                  f"({m.checkpoint.sha256[:12]}); format {m.format_version}; engines {len(m.engines)}")
    _print_plan(b.plan)


@engines_app.command("build")
def engines_build(
    bundle: Annotated[Path, typer.Argument(help="the bundle to add engines to (replaced only when all are built)")],
) -> None:
    """Build the bundle's TensorRT engines on this device (FP16 from the ONNX graphs, INT8 from the QDQ graphs, as
    its target profile says), record TensorRT, GPU and flags per engine, and add them to the bundle atomically."""
    from emo_edge.export.engines import build_engines
    from emo_edge.runtime.bundle import BundleError

    try:
        manifest = build_engines(bundle)
    except (BundleError, FileNotFoundError, ValueError, RuntimeError) as e:
        _fail(str(e))
    for e in manifest.engines:
        console.print(f"{e.file}: {e.graph} {e.precision}, TensorRT {e.meta.tensorrt} on {e.meta.gpu} "
                      f"(sm {e.meta.compute_capability}), flags {','.join(e.meta.flags) or '-'}")


def _bench_bag(bag: Path, bundle: Path, out: Path, threads: int, fast_hz: float | None, warmup_s: float,
               ros_setup: Path | None, command: str) -> None:
    from emo_edge.bench.replay import ReplayConfig, run_replay
    from emo_edge.runtime.settings import from_flat

    try:
        stream = from_flat({} if fast_hz is None else {"fast_hz": fast_hz})
        cfg = ReplayConfig(bag, bundle, out, threads=threads, stream=stream, warmup_s=warmup_s, ros_setup=ros_setup)
        r = run_replay(cfg, command=command)["ros2_replay"]
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        _fail(str(e))
    shown = {"head (sliding window)": r["head_states_split"]["head"],
             "head (utterance end)": r["head_states_split"]["head_utterance"], "llm": r["llm_states"]}
    for what, s in shown.items():
        if s["state_e2e_ms"]:
            console.print(f"{what} states: {s['n']}, window end -> received p50 {s['state_e2e_ms']['p50_ms']:.0f} ms,"
                          f" p95 {s['state_e2e_ms']['p95_ms']:.0f} ms")
    u = r["utterances"]
    console.print(f"utterances: {u['n']} ({u['answered_early']} answered early), {u['withdrawn']} provisional "
                  f"answers withdrawn; from the end of speech (turn-taking gap ~{u['turn_taking_gap_ms']:.0f} ms):")
    for key in ("label_ms", "llm_label_ms", "reasoning_first_ms", "reasoning_done_ms"):
        if u[key]:
            s = u[key]
            console.print(f"  -> {key.removesuffix('_ms')}: p50 {s['p50_ms']:.0f} ms, p95 {s['p95_ms']:.0f} ms")
    for k, hw in r["head_while_reasoning"].items():
        if isinstance(hw, dict) and hw["state_e2e_ms"]:
            console.print(f"sliding head states, reasoning {k.replace('_', ' ')}: {hw['n']}, p95 "
                          f"{hw['state_e2e_ms']['p95_ms']:.0f} ms, rate {_round(hw['rate_hz'])} Hz")
    console.print(f"wrote {out / 'results.json'}, {out / 'results.md'} and plots (replay logs under {out / 'replay'})")


def _round(x: float | None, nd: int = 1) -> str:
    return "-" if x is None else f"{x:.{nd}f}"


if __name__ == "__main__":
    app()
