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
from emo_edge.eval.metrics import (
    agreement,
    answer_reason_consistency,
    classification_report,
    cue_recall_by_group,
    mean_cue_precision,
    mean_cue_recall,
    plot_confusion,
    reason_conclusion,
    reason_fluency,
)
from emo_edge.labels import LABELS, parse_label
from emo_edge.prompts import LABEL_TOKENS, REASON_TOKENS

# llm: the emotion task's short answer; head: the fast head; reason: the label read from the reason's
# conclusion, one generation for both, so label and reason cannot disagree (see `Predictions`)
ANSWER_SOURCES = ("llm", "head", "reason")


VIEWS: tuple[str, ...] = ("image", "video", "audio", "text")  # peak frame, temporal frames, audio, subtitle
LEGACY_ALL = frozenset(MODALITIES)  # "video,audio,text", the flag's default before the views split: all views


def views(mods: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The views a modality list switches on, in VIEWS order.

    `image` is the peak frame and `video` the temporal view (T low-resolution frames). The list
    `video,audio,text` (the default, from before the two visual views were separable) keeps meaning
    every view, so existing commands and reports read as before; name `image,video,audio,text` or a
    smaller list to switch views off one by one.
    """
    chosen = set(mods)
    if chosen == LEGACY_ALL:
        chosen.add("image")
    return tuple(v for v in VIEWS if v in chosen)


def parse_modalities(text: str) -> tuple[str, ...]:
    """`--modalities`: a comma list of image, video, audio, text (any non-empty subset) -> views."""
    mods = tuple(m.strip() for m in text.split(",") if m.strip())
    bad = [m for m in mods if m not in VIEWS]
    if bad or not mods:
        raise ValueError(f"--modalities: unknown {bad or 'empty list'}; choose a comma list of {', '.join(VIEWS)} "
                         "(image = peak frame, video = temporal frames)")
    return views(mods)


def check_views(mods: tuple[str, ...], answer_from: str) -> None:
    """The fast head reads perception only: it needs a perceived view (text alone reaches only the LLM)."""
    if answer_from == "head" and not set(views(mods)) & {"image", "video", "audio"}:
        raise ValueError(f"--modalities {','.join(mods)} with --answer-from head: the head needs image, video or "
                         "audio; text alone is answered by the LLM only (--answer-from llm)")


@dataclass
class Predictions:
    """Raw predictions. With `from_reason` the answers ARE the reasons and each label is its reason's
    conclusion (`reason_conclusion`), so answer and reason agree by construction; otherwise the
    answers come from a separate emotion-task generation and may disagree with the reasons."""

    head: list[str] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)  # the LLM's raw emotion answers (or the reasons)
    reasons: list[str] = field(default_factory=list)
    from_reason: bool = False
    # per clip, the attribute head's likelier value of each attribute in `synth_v2.ATTRIBUTES` order (empty: a model
    # without an attribute head)
    attributes: list[list[str]] = field(default_factory=list)

    @property
    def llm(self) -> list[str | None]:
        read = reason_conclusion if self.from_reason else parse_label
        return [read(a) for a in self.answers]


@dataclass
class EvalSet:
    """A split's features with the modality switches applied, served in batches."""

    fs: Any
    modalities: tuple[str, ...]

    def batches(self, size: int, progress: bool) -> Iterator[tuple[np.ndarray, np.ndarray, list]]:
        """(clip indices, present (B, 3) over image/video/audio as 0/1 float32, subtitles or None)."""
        from rich.progress import track

        on = views(self.modalities)
        flags = np.array([v in on for v in ("image", "video", "audio")], dtype=np.float32)
        n = len(self.fs)
        for s in track(range(0, n, size), description="evaluating", disable=not progress):
            idx = np.arange(s, min(s + size, n))
            subs = [self.fs.records[i].subtitle if "text" in on else None for i in idx]
            yield idx, np.tile(flags, (len(idx), 1)), subs


def _collect(
    load: Callable[[], tuple[Any, Any]], data: str | Path, answer_from: str, modalities: tuple[str, ...],
    split: str, limit: int | None, progress: bool, predict: Callable[[Any, EvalSet, Predictions], None],
) -> tuple[Any, Predictions]:
    """The split's features and the model's predictions on them."""
    from emo_edge.data.features import load_features
    from emo_edge.data.schema import find_split

    if answer_from not in ANSWER_SOURCES:
        raise ValueError(f"--answer-from must be one of {', '.join(ANSWER_SOURCES)}, got {answer_from!r}")
    check_views(modalities, answer_from)
    runner, frontend = load()
    fs = load_features(find_split(data, split), frontend, limit=limit, progress=progress)
    preds = Predictions(from_reason=answer_from == "reason")
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


def reason_scores(records: list, preds: Predictions) -> dict[str, Any]:
    """Cue recall/precision of the reasons and their agreement with the answers (None without reasons).

    `cue_recall` counts each record's `cues`; SynthEmo v2 records keep there only the clip's own
    label-independent attributes and list every attribute phrase in meta["cue_options"] (so
    `cue_precision` can count hallucinated ones) and the label-derived cues in meta["label_cues"]
    (`label_cue_recall`). v1 records have only `cues` (label-derived): no precision, no label recall.
    `cue_recall_by_attribute` splits `cue_recall` by v2 attribute (name -> share of the clips whose reason names
    their own value), so a view that is not read shows as the attributes it carries.
    `reason_fluency`: the share of reasons that are grammatical English sentences naming a visual and a vocal
    cue (`emo_edge.eval.fluency`).
    `reason_follows_head_by_attribute` (and its mean, `reason_follows_head`): per attribute, the share of clips whose
    reason names the value the attribute head read, right or wrong: how far the reasons say what perception saw.
    """
    if not preds.reasons:
        return {"cue_recall": None, "cue_precision": None, "label_cue_recall": None, "cue_recall_by_attribute": None,
                "reason_fluency": None, "answer_reason_consistency": None, "reason_follows_head": None,
                "reason_follows_head_by_attribute": None}
    options = [r.meta.get("cue_options") for r in records]
    has_options = all(o is not None for o in options)
    label_cues = [r.meta.get("label_cues") for r in records]
    values = [r.meta.get("attributes") for r in records]
    by_attribute, follows = None, None
    if all(v is not None for v in values):  # SynthEmo v2: which attributes the reasons get right
        from emo_edge.data.synth_v2 import ATTRIBUTES, own_cues_by_attribute

        own = [own_cues_by_attribute(r.label, v) for r, v in zip(records, values, strict=True)]
        by_attribute = cue_recall_by_group(preds.reasons, own)
        if preds.attributes:  # the head's values, worded as the reasons word them
            read = [own_cues_by_attribute(r.label, {a.name: got[j] for j, a in enumerate(ATTRIBUTES)})
                    for r, got in zip(records, preds.attributes, strict=True)]
            follows = cue_recall_by_group(preds.reasons, read)
    return {
        "cue_recall": mean_cue_recall(preds.reasons, [r.cues for r in records]),
        "cue_precision": mean_cue_precision(preds.reasons, [r.cues for r in records], options) if has_options else None,
        "label_cue_recall": (mean_cue_recall(preds.reasons, label_cues)
                             if all(c is not None for c in label_cues) else None),
        "cue_recall_by_attribute": by_attribute,
        "reason_fluency": reason_fluency(preds.reasons),
        "answer_reason_consistency": answer_reason_consistency(preds.llm, preds.reasons) if preds.answers else None,
        "reason_follows_head": float(np.mean(list(follows.values()))) if follows else None,
        "reason_follows_head_by_attribute": follows,
    }


def attribute_accuracy(records: list, attributes: list[list[str]]) -> dict[str, float] | None:
    """Per attribute, the share of clips whose attribute-head value is the clip's own (SynthEmo v2 records); what
    perception reads, next to `cue_recall_by_attribute`, what the reasons say. None without both."""
    from emo_edge.data.synth_v2 import ATTRIBUTES

    values = [r.meta.get("attributes") for r in records]
    if not attributes or any(v is None for v in values):
        return None
    return {a.name: float(np.mean([got[j] == v[a.name] for got, v in zip(attributes, values, strict=True)]))
            for j, a in enumerate(ATTRIBUTES)}


def build_report(fs: Any, preds: Predictions, answer_from: str, modalities: tuple[str, ...]) -> dict[str, Any]:
    truth = [r.label for r in fs.records]
    report = classification_report(truth, preds.head if answer_from == "head" else preds.llm, LABELS)
    report.update({
        "answer_from": answer_from, "modalities": list(views(modalities)), "n_bad": len(fs.bad), "bad": fs.bad,
        **reason_scores(fs.records, preds),
        "llm_head_agreement": agreement(preds.llm, preds.head) if preds.llm else None,
        "head_acc": float(np.mean([h == t for h, t in zip(preds.head, truth, strict=True)])),
        "head_attribute_accuracy": attribute_accuracy(fs.records, preds.attributes),
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
        for idx, on, subs in es.batches(batch_size, progress):
            i, v, a = on.T
            batch = to_batch(fs.frames[idx], fs.image[idx], fs.mel[idx], v, a, ["emotion"] * len(idx), subs, image_on=i)
            p = model.perception(batch.image, batch.frames, batch.mel, batch.present)
            preds.head += [LABELS[i] for i in p["logits"].argmax(-1).tolist()]
            if "attributes" in p:
                preds.attributes += attribute_values(p["attributes"].float().numpy() > 0)
            if answer_from == "llm":
                preds.answers += model.generate(batch, max_new_tokens=LABEL_TOKENS, perception=p)
            if answer_from == "reason" or (answer_from == "llm" and reason):
                rb = to_batch(fs.frames[idx], fs.image[idx], fs.mel[idx], v, a, ["reason"] * len(idx), subs,
                              image_on=i)
                preds.reasons += model.generate(rb, max_new_tokens=REASON_TOKENS, perception=p)
            if answer_from == "reason":
                preds.answers = preds.reasons

    return load, predict


def attribute_values(first: np.ndarray) -> list[list[str]]:
    """(B, A) booleans, True where the head reads an attribute's first value in sorted order, as value names."""
    from emo_edge.data.synth_v2 import ATTRIBUTES

    return [[a.values[0] if f else a.values[1] for f, a in zip(row, ATTRIBUTES, strict=True)] for row in first]


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
        for idx, present, subs in es.batches(batch_size, progress):
            out = rt.perceive(fs.image[idx], fs.frames[idx], fs.mel[idx], present)
            preds.head += out["labels"]
            preds.attributes += [[value for _, value, _ in clip] for clip in out.get("readings", [])]
            if answer_from == "head":
                continue
            for j, sub in enumerate(subs):
                tok, mask, said = out["tokens"][j], out["token_mask"][j], out["evidence"][j]
                if answer_from == "llm":
                    preds.answers.append(rt.answer(tok, mask, "emotion", sub, max_new_tokens=LABEL_TOKENS,
                                                   evidence=said))
                if answer_from == "reason" or reason:
                    preds.reasons.append(rt.answer(tok, mask, "reason", sub, max_new_tokens=REASON_TOKENS,
                                                   evidence=said))
            if answer_from == "reason":
                preds.answers = preds.reasons

    report = _run(load, data, answer_from, modalities, split, limit, progress, predict,
                  {"bundle": str(bundle)})
    b = opened["bundle"]
    report.update({"precision": b.precision, "quant": b.quant, "plan": b.plan.to_dict(),
                   "perception_graph_precision": b.plan.perception.precision})
    if json_out:
        write_report(report, Path(json_out))
    b.close()
    return report
