"""`emo-edge`: one CLI, each subcommand a typed function whose signature and docstring are the help."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
data_app = typer.Typer(add_completion=False, no_args_is_help=True, help="Data sets: generate or prepare.")
app.add_typer(data_app, name="data")
console = Console()


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
) -> None:
    """Generate SynthEmo: procedurally rendered faces + espeak-ng speech, with grounded targets."""
    from emo_edge.data.synth import STANDARD_SIZES, generate

    splits = [split] if split else list(STANDARD_SIZES)
    bad = [s for s in splits if s not in STANDARD_SIZES]
    if bad:
        _fail(f"--split {bad[0]!r}: choose one of {', '.join(STANDARD_SIZES)}")
    t0 = time.time()
    for s in splits:
        path = generate(out, n if n is not None else STANDARD_SIZES[s], seed, s, workers=workers)
        console.print(f"wrote {path}")
    console.print(f"done in {time.time() - t0:.1f} s")


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


@app.command("eval")
def eval_(
    data: Annotated[Path, typer.Option(help="directory with <split>.jsonl, or a JSONL file")],
    checkpoint: Annotated[str, typer.Option(help="checkpoint directory, or 'default'")] = "default",
    bundle: Annotated[Path | None, typer.Option(help="evaluate an exported bundle (torch-free) instead")] = None,
    quant: Annotated[str | None, typer.Option(help="with --bundle: GGUF quantisation to use")] = None,
    precision: Annotated[str | None, typer.Option(help="with --bundle: perception precision fp32|int8")] = None,
    answer_from: Annotated[str, typer.Option(help="llm (parse the generated answer) or head (fast head)")] = "llm",
    modalities: Annotated[str, typer.Option(help="comma-separated subset of video,audio,text")] = "video,audio,text",
    split: Annotated[str, typer.Option(help="split name when --data is a directory")] = "test",
    json_out: Annotated[Path | None, typer.Option("--json", help="write the report here (+ a confusion PNG)")] = None,
    limit: Annotated[int | None, typer.Option(help="evaluate only the first N clips")] = None,
    reason: Annotated[bool, typer.Option(help="also generate reasons and score cue recall (LLM only)")] = True,
) -> None:
    """Evaluate: accuracy, WAF, UAR, WAR, per-class scores, cue recall, LLM/head agreement."""
    from emo_edge.eval.evaluate import evaluate_bundle, evaluate_checkpoint, parse_modalities

    try:
        mods = parse_modalities(modalities)
        if bundle is not None:
            report = evaluate_bundle(bundle, data, answer_from, mods, json_out, split, reason=reason, limit=limit,
                                     precision=precision, quant=quant)
        else:
            report = evaluate_checkpoint(checkpoint, data, answer_from, mods, json_out, split, reason=reason,
                                         limit=limit)
    except (FileNotFoundError, ValueError) as e:
        _fail(str(e))
    _print_report(report)


def _print_report(r: dict) -> None:
    t = Table(title=f"{r['answer_from']} answers, modalities {','.join(r['modalities'])}, n={r['n']}")
    for k in ("acc", "waf", "uar", "war", "cue_recall", "llm_head_agreement", "head_acc", "n_unparsed", "n_bad"):
        t.add_column(k)
    t.add_row(*[("-" if r[k] is None else f"{r[k]:.4f}" if isinstance(r[k], float) else str(r[k]))
                for k in ("acc", "waf", "uar", "war", "cue_recall", "llm_head_agreement", "head_acc", "n_unparsed",
                          "n_bad")])
    console.print(t)
    for b in r.get("bad", [])[:10]:
        console.print(f"[yellow]bad clip[/] {b}")


@app.command()
def export(
    out: Annotated[Path, typer.Option(help="bundle directory to write (written elsewhere, moved in when verified)")],
    checkpoint: Annotated[str, typer.Option(help="checkpoint directory, or 'default'")] = "default",
    target: Annotated[str, typer.Option(help="cpu-x86, jetson-orin-agx, jetson-orin-nano, or a YAML")] = "cpu-x86",
    llm_quant: Annotated[list[str] | None, typer.Option(help="extra GGUF quantisations: f16, q8_0, q4_k_m")] = None,
    data: Annotated[Path | None, typer.Option(help="parity clips (a test split); default: fresh SynthEmo")] = None,
    parity_clips: Annotated[int, typer.Option(help="clips used by the parity checks")] = 12,
    calibration: Annotated[Path | None, typer.Option(help="calibration manifest for INT8 graphs")] = None,
    force: Annotated[bool, typer.Option(help="replace an existing bundle")] = False,
) -> None:
    """Export a checkpoint to a bundle: ONNX perception (+ INT8 QDQ), GGUF LLM, manifest with parity numbers."""
    from emo_edge.export.bundle import build_bundle

    try:
        manifest = build_bundle(checkpoint, target, out, data, tuple(llm_quant or ()), calibration, parity_clips,
                                force)
    except (FileNotFoundError, ValueError) as e:
        _fail(str(e))
    _print_parity(manifest["parity"])


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


@app.command()
def info(
    preset: Annotated[str | None, typer.Option(help="parameter counts of a preset (built on the meta device)")] = None,
    checkpoint: Annotated[str | None, typer.Option(help="a checkpoint's training record and counts")] = None,
) -> None:
    """Parameter counts per component and the token layout (no weights are loaded or downloaded for a preset)."""
    from emo_edge.model.summary import checkpoint_summary, preset_summary

    if (preset is None) == (checkpoint is None):
        _fail("give exactly one of --preset or --checkpoint")
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


if __name__ == "__main__":
    app()
