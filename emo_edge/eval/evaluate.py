"""Evaluate a checkpoint (PyTorch) or a bundle (torch-free runtime) on a unified-format split:
the label from the LLM's answer or the fast head, the metric report, cue recall of the `reason`
answers, LLM/head agreement and a confusion PNG. Both paths fill the same report."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emo_edge.config import MODALITIES
from emo_edge.eval.metrics import agreement, classification_report, mean_cue_recall, plot_confusion
from emo_edge.labels import LABELS, parse_label

ANSWER_SOURCES = ("llm", "head")


def parse_modalities(text: str) -> tuple[str, ...]:
    mods = tuple(m.strip() for m in text.split(",") if m.strip())
    bad = [m for m in mods if m not in MODALITIES]
    if bad or not mods:
        raise ValueError(f"--modalities: unknown {bad or 'empty list'}; choose from {', '.join(MODALITIES)}")
    if "video" not in mods and "audio" not in mods:
        raise ValueError("--modalities: keep at least one of video or audio (text alone gives no perception input)")
    return mods


@dataclass
class Predictions:
    head: list[str] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)  # the LLM's raw emotion answers
    reasons: list[str] = field(default_factory=list)

    @property
    def llm(self) -> list[str | None]:
        return [parse_label(a) for a in self.answers]


@dataclass
class EvalSet:
    """A split's features with the modality switches applied, served in batches."""

    fs: Any
    modalities: tuple[str, ...]

    def batches(self, size: int, progress: bool) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, list]]:
        from rich.progress import track

        n = len(self.fs)
        for s in track(range(0, n, size), description="evaluating", disable=not progress):
            idx = np.arange(s, min(s + size, n))
            v = np.full(len(idx), "video" in self.modalities)
            a = np.full(len(idx), "audio" in self.modalities)
            subs = [self.fs.records[i].subtitle if "text" in self.modalities else None for i in idx]
            yield idx, v, a, subs


def _collect(
    load: Callable[[], tuple[Any, Any]], data: str | Path, answer_from: str, modalities: tuple[str, ...],
    split: str, limit: int | None, progress: bool, predict: Callable[[Any, EvalSet, Predictions], None],
) -> tuple[Any, Predictions]:
    """The split's features and the model's predictions on them."""
    from emo_edge.data.features import load_features
    from emo_edge.data.schema import find_split

    if answer_from not in ANSWER_SOURCES:
        raise ValueError(f"--answer-from must be one of {', '.join(ANSWER_SOURCES)}, got {answer_from!r}")
    runner, frontend = load()
    fs = load_features(find_split(data, split), frontend, limit=limit, progress=progress)
    preds = Predictions()
    predict(runner, EvalSet(fs, modalities), preds)
    return fs, preds


def _run(
    load: Callable[[], tuple[Any, Any]], data: str | Path, answer_from: str, modalities: tuple[str, ...],
    split: str, limit: int | None, progress: bool,
    predict: Callable[[Any, EvalSet, Predictions], None], source: dict[str, Any],
) -> dict[str, Any]:
    fs, preds = _collect(load, data, answer_from, modalities, split, limit, progress, predict)
    report = build_report(fs, preds, answer_from, modalities)
    report.update({**source, "data": str(data), "split": split})
    return report


def build_report(fs: Any, preds: Predictions, answer_from: str, modalities: tuple[str, ...]) -> dict[str, Any]:
    truth = [r.label for r in fs.records]
    report = classification_report(truth, preds.llm if answer_from == "llm" else preds.head, LABELS)
    report.update({
        "answer_from": answer_from, "modalities": list(modalities), "n_bad": len(fs.bad), "bad": fs.bad,
        "cue_recall": mean_cue_recall(preds.reasons, [r.cues for r in fs.records]) if preds.reasons else None,
        "llm_head_agreement": agreement(preds.llm, preds.head) if preds.llm else None,
        "head_acc": float(np.mean([h == t for h, t in zip(preds.head, truth, strict=True)])),
    })
    if preds.reasons:
        pairs = zip(fs.records[:3], preds.reasons[:3], strict=True)
        report["examples"] = [{"id": r.id, "label": r.label, "reason": a} for r, a in pairs]
    # per clip, so two runs (e.g. a checkpoint and its bundle) can be compared clip by clip
    report["predictions"] = [
        {"id": r.id, "label": r.label, "head": preds.head[i],
         **({"answer": preds.answers[i]} if preds.answers else {}),
         **({"reason": preds.reasons[i]} if preds.reasons else {})}
        for i, r in enumerate(fs.records)]
    return report


def write_report(report: dict[str, Any], json_out: Path) -> None:
    json_out.parent.mkdir(parents=True, exist_ok=True)
    png = json_out.with_suffix(".confusion.png")
    title = f"{report['answer_from']} answers, modalities={','.join(report['modalities'])}, WAF={report['waf']:.3f}"
    plot_confusion(np.array(report["confusion"]), LABELS, png, title=title)
    report["confusion_png"] = str(png)
    json_out.write_text(json.dumps(report, indent=2))


# ---------------------------------------------------------------------------------------------
# checkpoint (PyTorch)
# ---------------------------------------------------------------------------------------------


def _checkpoint_runner(
    checkpoint: str | Path, answer_from: str, batch_size: int, reason: bool, progress: bool,
) -> tuple[Callable[[], tuple[Any, Any]], Callable[[Any, EvalSet, Predictions], None]]:
    """`load` and `predict` for a PyTorch checkpoint (see `_collect`)."""
    from emo_edge.checkpoint import load_checkpoint
    from emo_edge.model.inputs import to_batch

    def load() -> tuple[Any, Any]:
        model = load_checkpoint(checkpoint)
        return model, model.cfg.frontend

    def predict(model: Any, es: EvalSet, preds: Predictions) -> None:
        fs = es.fs
        for idx, v, a, subs in es.batches(batch_size, progress):
            batch = to_batch(fs.frames[idx], fs.image[idx], fs.mel[idx], v, a, ["emotion"] * len(idx), subs)
            p = model.perception(batch.image, batch.frames, batch.mel, batch.present)
            preds.head += [LABELS[i] for i in p["logits"].argmax(-1).tolist()]
            if answer_from == "llm":
                preds.answers += model.generate(batch, max_new_tokens=8, perception=p)
                if reason:
                    rb = to_batch(fs.frames[idx], fs.image[idx], fs.mel[idx], v, a, ["reason"] * len(idx), subs)
                    preds.reasons += model.generate(rb, max_new_tokens=96, perception=p)

    return load, predict


def evaluate_checkpoint(
    checkpoint: str | Path, data: str | Path, answer_from: str = "llm", modalities: tuple[str, ...] = MODALITIES,
    json_out: str | Path | None = None, split: str = "test", batch_size: int = 32, reason: bool = True,
    limit: int | None = None, progress: bool = True,
) -> dict[str, Any]:
    import torch

    from emo_edge.checkpoint import resolve

    load, predict = _checkpoint_runner(checkpoint, answer_from, batch_size, reason, progress)
    torch.set_num_threads(2)
    with torch.inference_mode():
        report = _run(load, data, answer_from, modalities, split, limit, progress, predict,
                      {"checkpoint": str(resolve(checkpoint))})
    if json_out:
        write_report(report, Path(json_out))
    return report


def predict_checkpoint(
    checkpoint: str | Path, data: str | Path, answer_from: str = "llm", modalities: tuple[str, ...] = MODALITIES,
    split: str = "test", batch_size: int = 32, reason: bool = False, limit: int | None = None, progress: bool = True,
) -> tuple[Any, Predictions]:
    """A split's FeatureSet (records, skipped clips) and a checkpoint's raw predictions, unscored:
    for label sets other than the shared one (emo_edge.eval.benchmarks)."""
    import torch

    load, predict = _checkpoint_runner(checkpoint, answer_from, batch_size, reason, progress)
    torch.set_num_threads(2)
    with torch.inference_mode():
        return _collect(load, data, answer_from, modalities, split, limit, progress, predict)


# ---------------------------------------------------------------------------------------------
# bundle (torch-free runtime: ONNX Runtime + llama.cpp)
# ---------------------------------------------------------------------------------------------


def evaluate_bundle(
    bundle: str | Path, data: str | Path, answer_from: str = "llm", modalities: tuple[str, ...] = MODALITIES,
    json_out: str | Path | None = None, split: str = "test", batch_size: int = 16, reason: bool = True,
    limit: int | None = None, progress: bool = True, precision: str | None = None, quant: str | None = None,
    fallback: str | None = None,
) -> dict[str, Any]:
    from emo_edge.runtime.bundle import load_bundle
    from emo_edge.runtime.pipeline import EmotionRuntime

    opened: dict[str, Any] = {}

    def load() -> tuple[Any, Any]:
        b = opened["bundle"] = load_bundle(bundle, precision=precision, quant=quant, fallback=fallback)
        return EmotionRuntime(b), b.frontend

    def predict(rt: Any, es: EvalSet, preds: Predictions) -> None:
        fs = es.fs
        for idx, v, a, subs in es.batches(batch_size, progress):
            present = np.stack([v, v, a], axis=1).astype(np.float32)
            out = rt.perceive(fs.image[idx], fs.frames[idx], fs.mel[idx], present)
            preds.head += out["labels"]
            if answer_from != "llm":
                continue
            for j, sub in enumerate(subs):
                tok, mask = out["tokens"][j], out["token_mask"][j]
                preds.answers.append(rt.answer(tok, mask, "emotion", sub, max_new_tokens=8))
                if reason:
                    preds.reasons.append(rt.answer(tok, mask, "reason", sub, max_new_tokens=96))

    report = _run(load, data, answer_from, modalities, split, limit, progress, predict,
                  {"bundle": str(bundle)})
    b = opened["bundle"]
    report.update({"precision": b.precision, "quant": b.quant, "plan": b.plan.to_dict(),
                   "perception_graph_precision": b.plan.perception.precision})
    if json_out:
        write_report(report, Path(json_out))
    b.close()
    return report
