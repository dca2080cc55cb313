"""Evaluate a checkpoint on a unified-format split: label from the LLM's answer or the fast head,
the metric report, cue recall of the `reason` answers, LLM/head agreement and a confusion PNG."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from emo_edge.config import MODALITIES
from emo_edge.eval.metrics import agreement, classification_report, mean_cue_recall, parse_label, plot_confusion
from emo_edge.labels import LABELS

ANSWER_SOURCES = ("llm", "head")


def parse_modalities(text: str) -> tuple[str, ...]:
    mods = tuple(m.strip() for m in text.split(",") if m.strip())
    bad = [m for m in mods if m not in MODALITIES]
    if bad or not mods:
        raise ValueError(f"--modalities: unknown {bad or 'empty list'}; choose from {', '.join(MODALITIES)}")
    if "video" not in mods and "audio" not in mods:
        raise ValueError("--modalities: keep at least one of video or audio (text alone gives no perception input)")
    return mods


def evaluate_checkpoint(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """Evaluate a checkpoint on a split; see `_evaluate` for the arguments."""
    import torch

    with torch.inference_mode():
        return _evaluate(*args, **kwargs)


def _evaluate(
    checkpoint: str | Path, data: str | Path, answer_from: str = "llm", modalities: tuple[str, ...] = MODALITIES,
    json_out: str | Path | None = None, split: str = "test", batch_size: int = 32, reason: bool = True,
    limit: int | None = None, progress: bool = True,
) -> dict[str, Any]:
    import torch
    from rich.progress import track

    from emo_edge.checkpoint import load_checkpoint, resolve
    from emo_edge.data.features import load_features
    from emo_edge.data.schema import find_split
    from emo_edge.model.inputs import to_batch

    if answer_from not in ANSWER_SOURCES:
        raise ValueError(f"--answer-from must be one of {', '.join(ANSWER_SOURCES)}, got {answer_from!r}")
    model = load_checkpoint(checkpoint)
    torch.set_num_threads(2)
    fs = load_features(find_split(data, split), model.cfg.frontend, limit=limit, progress=progress)
    n = len(fs)
    v_on, a_on = np.full(n, "video" in modalities), np.full(n, "audio" in modalities)
    subs = [r.subtitle if "text" in modalities else None for r in fs.records]
    head_pred, llm_pred, reasons = [], [], []
    for s in track(range(0, n, batch_size), description="evaluating", disable=not progress):
        idx = np.arange(s, min(s + batch_size, n))
        sub = [subs[i] for i in idx]
        batch = to_batch(fs.frames[idx], fs.image[idx], fs.mel[idx], v_on[idx], a_on[idx], ["emotion"] * len(idx), sub)
        p = model.perception(batch.image, batch.frames, batch.mel, batch.present)
        head_pred += [LABELS[i] for i in p["logits"].argmax(-1).tolist()]
        if answer_from == "llm":
            llm_pred += [parse_label(a) for a in model.generate(batch, max_new_tokens=8, perception=p)]
            if reason:
                rb = to_batch(fs.frames[idx], fs.image[idx], fs.mel[idx], v_on[idx], a_on[idx],
                              ["reason"] * len(idx), sub)
                reasons += model.generate(rb, max_new_tokens=96, perception=p)
    truth = [r.label for r in fs.records]
    pred = llm_pred if answer_from == "llm" else head_pred
    report = classification_report(truth, pred, LABELS)
    report.update({
        "answer_from": answer_from, "modalities": list(modalities), "checkpoint": str(resolve(checkpoint)),
        "data": str(data), "split": split, "n_bad": len(fs.bad), "bad": fs.bad,
        "cue_recall": mean_cue_recall(reasons, [r.cues for r in fs.records]) if reasons else None,
        "llm_head_agreement": agreement(llm_pred, head_pred) if llm_pred else None,
        "head_acc": float(np.mean([h == t for h, t in zip(head_pred, truth, strict=True)])),
    })
    if reasons:
        pairs = zip(fs.records[:3], reasons[:3], strict=True)
        report["examples"] = [{"id": r.id, "label": r.label, "reason": a} for r, a in pairs]
    if json_out:
        json_out = Path(json_out)
        json_out.parent.mkdir(parents=True, exist_ok=True)
        png = json_out.with_suffix(".confusion.png")
        plot_confusion(np.array(report["confusion"]), LABELS, png,
                       title=f"{answer_from} answers, modalities={','.join(modalities)}, WAF={report['waf']:.3f}")
        report["confusion_png"] = str(png)
        json_out.write_text(json.dumps(report, indent=2))
    return report
