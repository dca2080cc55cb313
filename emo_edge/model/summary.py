"""Parameter counts of a preset (on the meta device: nothing allocated, nothing downloaded) or a checkpoint."""

from __future__ import annotations

from typing import Any

import torch

from emo_edge.config import ModelConfig, load_preset


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def lora_params(cfg: ModelConfig, llm: torch.nn.Module) -> int:
    """r * (in + out) for every targeted linear layer."""
    total = 0
    for name, mod in llm.named_modules():
        if isinstance(mod, torch.nn.Linear) and name.split(".")[-1] in cfg.lora.targets:
            total += cfg.lora.r * (mod.in_features + mod.out_features)
    return total


def component_counts(cfg: ModelConfig, perception: torch.nn.Module, llm: torch.nn.Module) -> dict[str, int]:
    counts = {
        "image_encoder": _count(perception.image_encoder),
        "video_encoder": _count(perception.video_encoder),
        "audio_encoder": _count(perception.audio_encoder),
        "fusion": _count(perception.fusion),
        "fast_head": _count(perception.head),
        "adapters": _count(perception.adapters),
        "llm (frozen)": _count(llm),
        "lora (trainable)": lora_params(cfg, llm),
    }
    counts["total"] = sum(counts.values())
    return counts


def preset_summary(name: str) -> dict[str, Any]:
    from emo_edge.model.mllm import build_llm
    from emo_edge.model.perception import Perception

    cfg = load_preset(name).model
    with torch.device("meta"):
        llm = build_llm(cfg.llm)
        perception = Perception(cfg, cfg.llm.hidden, allow_random=True)  # meta tensors: shapes only, no weights
    return {"name": cfg.name, "params": component_counts(cfg, perception, llm), "tokens": cfg.tokens.__dict__}


def checkpoint_summary(path: str) -> dict[str, Any]:
    from emo_edge.checkpoint import load_checkpoint, read_meta

    model = load_checkpoint(path)
    base = model.llm.get_base_model() if hasattr(model.llm, "get_base_model") else model.llm
    counts = component_counts(model.cfg, model.perception, base)
    counts["llm (frozen)"] = sum(p.numel() for n, p in base.named_parameters() if "lora_" not in n)
    meta = read_meta(path)
    return {"name": model.cfg.name, "params": counts, "tokens": model.cfg.tokens.__dict__,
            "meta": {k: meta[k] for k in ("preset", "seed", "wall_s", "data", "random_weights") if k in meta}}
