"""`emo-edge export`: a checkpoint -> a verified, self-describing bundle for one target profile.

Steps: merge LoRA -> perception to ONNX (parity vs eager) -> INT8 QDQ graphs where the profile
asks for them (accuracy vs fp32) -> LLM to GGUF f16 and the profile's quantisation (parity vs
PyTorch greedy) -> manifest.json with versions, sha256 of every file, shapes, labels, prompt
template, token layout and the parity report -> load the result through the torch-free runtime.
Everything is written into a hidden sibling directory and renamed into place only when complete
and verified; a failure removes it, so no half-written bundle is ever left at `out`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import platform
import shutil
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console

from emo_edge import __version__, resources
from emo_edge.config import STREAMS
from emo_edge.fileio import staging_dir
from emo_edge.labels import LABELS
from emo_edge.prompts import prompt_record
from emo_edge.runtime.bundle import file_table, load_bundle, write_manifest
from emo_edge.runtime.io_spec import build_io_spec
from emo_edge.runtime.manifest import (
    FORMAT_VERSION,
    AttributeInfo,
    BundleError,
    CheckpointInfo,
    LLMFiles,
    Manifest,
    ModelInfo,
    Parity,
    PerceptionEntry,
    TokenLayout,
)

console = Console(stderr=True)
DEFAULT_PARITY_CLIPS = 12
PARITY_SEED = 90210  # seed of the SynthEmo clips generated for parity when no data is given
DEFAULT_CALIBRATION = "synthemo-val"  # the INT8 calibration manifest used when none is given (emo_edge.resources)


def _parity_clips(cfg: Any, data: str | Path | None, n: int, work: Path) -> Any:
    """Real clips for the parity checks: the test split of `data`, or fresh SynthEmo clips."""
    from emo_edge.data.features import load_features
    from emo_edge.data.schema import find_split

    if data is None:
        from emo_edge.data.synth import generate

        data = work / "synth"
        generate(data, max(n, 6), seed=PARITY_SEED, split="test", workers=2, progress=False)
    return load_features(find_split(data, "test"), cfg.frontend, limit=n, progress=False, use_cache=False)


def _stage(msg: str) -> None:
    console.print(f"[bold cyan]export[/] {msg}")


def default_calibration() -> Path:
    """The shipped calibration manifest. Its SynthEmo split is generated (seeded, the manifest's clip count) when
    missing, as on a fresh clone, so `emo-edge export` needs no manual data step."""
    from emo_edge.export.quantize import load_manifest

    path = resources.find(resources.CALIBRATIONS, DEFAULT_CALIBRATION)
    m = load_manifest(path)
    data = Path(m.data)
    if not data.is_file() and not (data / f"{m.split}.jsonl").is_file():
        from emo_edge.data.synth import generate

        _stage(f"no {m.split}.jsonl in {data}: generating {m.n_clips} SynthEmo {m.split} clips (seed {m.seed}) for "
               "the INT8 calibration")
        generate(data, m.n_clips, seed=m.seed, split=m.split, workers=2, progress=False)
    return path


def build_bundle(
    checkpoint: str | Path, target: str | Path, out: str | Path, data: str | Path | None = None,
    llm_quants: tuple[str, ...] = (), calibration: str | Path | None = None, parity_clips: int = DEFAULT_PARITY_CLIPS,
    force: bool = False, threads: int = 2, llm_form: str = "merged", int8_layout: str | None = None,
) -> Manifest:
    """Export `checkpoint` for the `target` profile into the bundle directory `out`; returns the manifest.

    llm_form: "merged" (LoRA folded in, converted and quantised) or "base+lora" (the base model's GGUF -- the
    vendor's file when the backbone came from one -- and a GGUF LoRA adapter applied by llama.cpp at load).
    int8_layout: overrides the profile's `perception.int8_layout` (e.g. transformer for SigLIP/Whisper-sized
    encoders on cpu-x86); the manifest's target records the layout used.
    """
    from emo_edge.checkpoint import load_checkpoint, read_meta, resolve
    from emo_edge.export.gguf_export import FORMS
    from emo_edge.export.profiles import load_profile

    profile = load_profile(target)
    if int8_layout is not None:
        profile.perception = dataclasses.replace(profile.perception, int8_layout=int8_layout)  # checks the name
    out = Path(out)
    if out.exists() and not force:
        raise BundleError(f"{out} exists; pass --force to replace it")
    if llm_form not in FORMS:
        raise ValueError(f"unknown LLM form {llm_form!r}; choose from {', '.join(FORMS)}")
    ckpt = resolve(checkpoint)
    _stage(f"loading {ckpt} ({'LoRA merged' if llm_form == 'merged' else 'LoRA kept apart'})")
    model = load_checkpoint(ckpt, merge=llm_form == "merged")
    profile.check_model(model.cfg)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = staging_dir(out.parent, f".{out.name}.partial-")
    try:
        with tempfile.TemporaryDirectory() as work:
            clips = _parity_clips(model.cfg, data, parity_clips, Path(work))
            perception = _export_perception(model, profile, tmp, clips, calibration, threads)
            llm = _export_llm(model, profile, tmp, clips, llm_quants, threads, llm_form, read_meta(ckpt))
        manifest = _manifest(model, profile, ckpt, read_meta(ckpt), perception, llm, tmp, n_clips=len(clips))
        write_manifest(tmp, manifest)
        _stage("verifying the bundle through the torch-free runtime (on the CPU)")
        bundle = load_bundle(tmp, threads=threads, fallback="cpu")
        bundle.perception  # noqa: B018 - opens every session
        bundle.llm  # noqa: B018 - loads the GGUF
        bundle.close()
        _replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _stage(f"wrote {out}")
    return manifest


def _export_perception(model: Any, profile: Any, tmp: Path, clips: Any, calibration: Any, threads: int) -> dict:
    from emo_edge.export.onnx_export import export_perception

    _stage("perception -> ONNX (fp32), parity vs eager PyTorch")
    fp32 = export_perception(model, model.cfg, tmp / "perception" / "fp32", real_inputs=clips, threads=threads)
    graphs = [f["file"] for f in fp32["files"].values()]
    entries = {"fp32": {"dir": "perception/fp32", "graphs": graphs, "precision": dict.fromkeys(fp32["files"], "fp32"),
                        "parity": fp32["parity"], "opset": fp32["opset"]}}
    int8_graphs = profile.perception.graphs_at("int8")
    if int8_graphs:
        from emo_edge.export.quantize import QuantSettings, calibrate, compare_int8

        source = calibration or default_calibration()
        layout = profile.perception.quant_layout
        _stage(f"INT8 QDQ ({layout} layout) for {', '.join(int8_graphs)} from {source}")
        cal = calibrate(tmp / "perception" / "fp32", source, tmp / "perception" / "int8", frontend=model.cfg,
                        graphs=int8_graphs, threads=threads, settings=QuantSettings(layout=layout))
        check = compare_int8(tmp / "perception" / "fp32", tmp / "perception" / "int8", clips, threads=threads)
        precision = {g: ("int8" if g in int8_graphs else "fp32") for g in fp32["files"]}
        entries["int8"] = {"dir": "perception/int8", "graphs": graphs, "precision": precision,
                           "calibration": {k: cal[k] for k in cal if k in ("source", "n_clips", "settings")},
                           "parity_vs_fp32": check}
    return {"entries": entries, "versions": fp32["versions"]}


def _export_llm(model: Any, profile: Any, tmp: Path, clips: Any, extra: tuple[str, ...], threads: int, form: str,
                meta: dict) -> dict:
    from emo_edge.checkpoint import META_LLM_SOURCE
    from emo_edge.export.gguf_export import export_base_plus_lora, export_llm

    source = (meta.get(META_LLM_SOURCE) or {}).get("file")  # the GGUF the backbone came from, if any
    if form == "merged":
        quants = tuple(dict.fromkeys(("f16", profile.llm.quantization, *extra)))
        _stage(f"LLM -> GGUF {', '.join(quants)}, parity vs PyTorch greedy")
        report = export_llm(model, tmp / "llm", quants=quants, threads=threads, clips=clips, source_gguf=source)
    else:
        quants = tuple(dict.fromkeys((profile.llm.quantization, *extra)))
        _stage(f"LLM -> base GGUF ({'the source file' if source else ', '.join(quants)}) + LoRA adapter, parity "
               "vs PyTorch greedy")
        report = export_base_plus_lora(model, tmp / "llm", quants, threads, clips, source_gguf=source)
    report["tokenizer_file"] = _copy_tokenizer(model.tok, tmp / "llm")
    return report


def _copy_tokenizer(tok: Any, llm_dir: Path) -> str:
    """The tokenizer next to the GGUF files (the runtime tokenizes through llama.cpp; this is for reference)."""
    from emo_edge.model.tokenizer import SPM_FILE

    if getattr(tok, "_sp", None) is not None:
        shutil.copyfile(Path(tok.path) / SPM_FILE, llm_dir / SPM_FILE)
        return f"llm/{SPM_FILE}"
    tok._hf.save_pretrained(str(llm_dir / "tokenizer"))
    return "llm/tokenizer/tokenizer.json"


def _attributes(cfg: Any) -> list[AttributeInfo] | None:
    """The fusion graph's `attributes` columns: SynthEmo v2's attributes, each read as its first value in sorted
    order (the attribute head's training target 1, `emo_edge.train.data.attribute_targets`)."""
    if not cfg.head.attributes:
        return None
    from emo_edge.data.synth_v2 import ATTRIBUTES

    return [AttributeInfo(a.name, a.view, a.values, [a.phrases[v] for v in a.values], list(a.streams))
            for a in ATTRIBUTES]


def _manifest(model: Any, profile: Any, ckpt: Path, meta: dict, perception: dict, llm: dict, tmp: Path,
              n_clips: int) -> Manifest:
    from emo_edge.checkpoint import content_digest

    cfg = model.cfg
    width = model.llm.get_input_embeddings().embedding_dim
    entries = {k: PerceptionEntry(**v) for k, v in perception["entries"].items()}
    return Manifest(
        format_version=FORMAT_VERSION,
        created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        emo_edge_version=__version__,
        versions={**perception["versions"], **llm["versions"], "python": platform.python_version()},
        machine={"platform": platform.platform(), "processor": platform.machine()},
        target=profile,
        checkpoint=CheckpointInfo(str(ckpt), cfg.name, content_digest(ckpt),
                                  _trained(meta)),
        model=ModelInfo(cfg.frontend, llm["arch"], width),
        labels=list(LABELS),
        prompt=prompt_record(getattr(model, "chat", None), reads_evidence=cfg.llm.evidence),
        token_layout=TokenLayout(list(STREAMS), dataclasses.asdict(cfg.tokens),
                                 cfg.tokens.total),
        io_spec=build_io_spec(cfg, llm_width=width),
        perception=entries,
        llm=LLMFiles({q: f"llm/{f['file']}" for q, f in llm["files"].items()}, llm["tokenizer_file"],
                     llm["metadata"], llm["tokenizer"], **_form_record(profile, llm)),
        engines=[],  # TensorRT engines are built on the device: `emo-edge engines build BUNDLE`
        attributes=_attributes(cfg),
        parity=Parity(n_clips, entries["fp32"].parity or {},
                      entries["int8"].parity_vs_fp32 if "int8" in entries else None, llm["parity"]),
        files=file_table(tmp),
    )


def _trained(meta: dict) -> dict[str, Any]:
    """The checkpoint's preset and seed, and `random_weights: true` for an untrained one (`emo-edge init`)."""
    from emo_edge.checkpoint import META_RANDOM

    return {"preset": meta.get("preset"), "seed": meta.get("seed"), **({META_RANDOM: True} if meta.get(META_RANDOM)
                                                                        else {})}


def _default_quant(profile: Any, llm: dict) -> str:
    """The profile's quantisation, or the one the vendor's base file has (base+lora from a GGUF backbone)."""
    q = profile.llm.quantization
    return q if q in llm["files"] else next(iter(llm["files"]))


def _form_record(profile: Any, llm: dict) -> dict[str, Any]:
    """llm.form, and for base+lora the base file (sha256, source) and the adapter file."""
    if llm.get("form") != "base+lora":
        return {"form": "merged"}
    base = llm["files"][_default_quant(profile, llm)]
    return {"form": "base+lora", "adapter": f"llm/{llm['adapter']['file']}",
            "base": {"file": f"llm/{base['file']}", "sha256": base["sha256"], "source": base.get("source")},
            "lora": {k: llm["adapter"][k] for k in ("alpha", "rank", "n_adapted", "sha256")}}


def _replace(tmp: Path, out: Path) -> None:
    """Move the finished bundle into place; an existing one is swapped out only after that succeeds."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
    try:
        tmp.rename(out)
    except OSError:
        if old is not None:
            old.rename(out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
