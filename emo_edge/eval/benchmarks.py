"""The 18 evaluation benchmarks of Emotion-LLaMAv2 / MMEVerse-Bench and their metrics.

Each benchmark scores one split of one prepared source dataset (emo_edge.data.adapters) in that
dataset's own label space ("dataset-native" protocol: no label is forced onto another set):

    basic emotion      mer2023 mer2024 meld-e iemocap caer e3 dfew mafw mc-eiu   acc, WAF (+ hit rate)
    sentiment          cmu-mosi cmu-mosei ch-sims ch-sims-v2 meld-s              acc, WAF, neutral truths dropped
    multi-label        mafw-m bold                                               micro/samples F1, Jaccard, mAP
    open vocabulary    ov-merd+                                                  OV precision/recall/F-score, hit rate
    intent             mc-eiu-i                                                  acc, WAF

Scoring (`score`) is pure and torch-free: it takes the records and the model's answers (or fast-head
labels) and reads each answer in the benchmark's label space through our vocabulary
(emo_edge.eval.vocabulary). `evaluate_benchmark` prepares the data if needed, runs a checkpoint
through evaluate.py's machinery and scores it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emo_edge.eval import vocabulary as vocab
from emo_edge.eval.metrics import (
    _check_pair,
    classification_report,
    hit_rate,
    mean_average_precision,
    multilabel_scores,
    parse_label,
    sentiment_scores,
)
from emo_edge.labels import names_in

TASKS = ("emotion", "sentiment", "intent", "multilabel", "open")
SENTIMENT_SOURCES = ("cmu-mosi", "cmu-mosei", "ch-sims", "ch-sims-v2")


@dataclass(frozen=True)
class Benchmark:
    name: str
    source: str  # adapter name (emo_edge.data.adapters.SOURCES)
    split: str  # split of the prepared source that is scored
    task: str  # one of TASKS: what is read from the record and from the answer
    labelmap: str  # label set scored (a key of emo_edge/data/labelmaps.yaml)
    metrics: tuple[str, ...]


_ACC = ("acc", "waf", "uar", "war")
_HIT = (*_ACC, "hit_rate")
_SENT = ("acc", "waf")
_MULTI = ("micro_f1", "samples_f1", "jaccard", "map")
_OPEN = ("ov_precision", "ov_recall", "ov_fscore", "hit_rate")

BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (
    Benchmark("mer2023", "mer2023", "test1", "emotion", "mer2023", _HIT),
    Benchmark("mer2024", "mer2024", "test", "emotion", "mer2024", _HIT),
    Benchmark("meld-e", "meld", "test", "emotion", "meld", _HIT),
    Benchmark("iemocap", "iemocap", "test", "emotion", "iemocap", _HIT),
    Benchmark("caer", "caer", "test", "emotion", "caer", _ACC),
    Benchmark("e3", "e3", "test", "emotion", "e3", _ACC),
    Benchmark("dfew", "dfew", "test", "emotion", "dfew", _ACC),
    Benchmark("mafw", "mafw", "test", "emotion", "mafw", _ACC),
    Benchmark("mc-eiu", "mc-eiu", "test", "emotion", "mc-eiu", _ACC),
    Benchmark("cmu-mosi", "cmu-mosi", "test", "sentiment", "sentiment", _SENT),
    Benchmark("cmu-mosei", "cmu-mosei", "test", "sentiment", "sentiment", _SENT),
    Benchmark("ch-sims", "ch-sims", "test", "sentiment", "sentiment", _SENT),
    Benchmark("ch-sims-v2", "ch-sims-v2", "test", "sentiment", "sentiment", _SENT),
    Benchmark("meld-s", "meld", "test", "sentiment", "sentiment", _SENT),
    Benchmark("mafw-m", "mafw-m", "test", "multilabel", "mafw", _MULTI),
    Benchmark("bold", "bold", "val", "multilabel", "bold", _MULTI),  # BOLD's test labels are not public
    Benchmark("ov-merd+", "ov-merd+", "test", "open", "ov-merd+", _OPEN),
    Benchmark("mc-eiu-i", "mc-eiu", "test", "intent", "mc-eiu-intent", _ACC),
)}
assert len(BENCHMARKS) == 18


def get_benchmark(name: str) -> Benchmark:
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; choose one of {', '.join(BENCHMARKS)}")
    return BENCHMARKS[name]


# ---------------------------------------------------------------------------------------------
# metrics that metrics.py does not already have
# ---------------------------------------------------------------------------------------------


def open_vocabulary_scores(y_true: Sequence[set[str]], y_pred: Sequence[set[str]]) -> dict[str, float | int]:
    """Set-level precision, recall and F-score of open-vocabulary predictions (normalised sets).

    Per clip: precision |T∩P|/|P| (0 when P is empty), recall |T∩P|/|T|; both are averaged over
    the clips with a non-empty truth (others are skipped) and F = 2PR/(P+R) of the averages, as
    the OV-MER evaluation defines it. Keys: n (clips scored), ov_precision, ov_recall, ov_fscore.
    """
    _check_pair(y_true, y_pred)
    pairs = [(t, p) for t, p in zip(y_true, y_pred, strict=True) if t]
    if not pairs:
        raise ValueError("no clip has a non-empty ground-truth set: nothing to score")
    prec = float(np.mean([len(t & p) / len(p) if p else 0.0 for t, p in pairs]))
    rec = float(np.mean([len(t & p) / len(t) for t, p in pairs]))
    f = 2 * prec * rec / (prec + rec) if prec + rec > 0 else 0.0
    return {"n": len(pairs), "ov_precision": prec, "ov_recall": rec, "ov_fscore": f}


# ---------------------------------------------------------------------------------------------
# truths from records, predictions from answers
# ---------------------------------------------------------------------------------------------


def truth(b: Benchmark, record: Any) -> Any:
    """The ground truth of one record for benchmark `b` (a label, or a set for multi-label/open)."""
    if b.task == "sentiment":
        return record.label if b.source in SENTIMENT_SOURCES else record.meta["sentiment"]
    if b.task == "intent":
        return record.meta["intent"]
    if b.task == "multilabel":
        return set(record.meta["labels"])
    if b.task == "open":
        return vocab_families(record.meta["labels"])
    return record.label


def vocab_families(words: Sequence[str]) -> set[str]:
    """Wheel families of a list of emotion words (words the vocabulary lacks are dropped)."""
    return {vocab.wheel()[t] for t in (vocab.canonical_term(w) for w in words) if t}


def read_answer(b: Benchmark, labels: Sequence[str], answer: str) -> Any:
    """An answer read in the benchmark's label space: a label (or None) or a set of labels/families."""
    words = vocab.label_vocabulary(labels)
    if b.task == "sentiment":
        return vocab.sentiment_of(answer)
    if b.task == "multilabel":
        return set(names_in(answer, words))
    if b.task == "open":
        return vocab.families(answer)
    if b.task == "intent":
        return parse_label(answer, labels, _intent_words(labels))
    return parse_label(answer, labels, words)


def _intent_words(labels: Sequence[str]) -> dict[str, str]:
    """Intent labels and their word stems ("question" for "questioning", "suggest" for "suggesting")."""
    stems = {label.removesuffix("ing"): label for label in labels if label.endswith("ing")}
    return {**stems, **{label: label for label in labels}}


def head_answer(b: Benchmark, shared_label: str, to_shared: dict[str, str | None]) -> str:
    """A fast-head label (shared set) as an answer text in the benchmark's label space.

    The dataset label that maps to the shared label (first in the label map), else the shared
    label itself; read_answer then reads it like any answer.
    """
    if b.task in ("open", "sentiment"):
        return shared_label
    own = [k for k, v in to_shared.items() if v == shared_label]
    return own[0] if own else shared_label


def score(b: Benchmark, labels: Sequence[str], truths: Sequence[Any], answers: Sequence[str]) -> dict[str, Any]:
    """The benchmark's metrics for answers against truths (see the module docstring)."""
    preds = [read_answer(b, labels, a) for a in answers]
    out: dict[str, Any] = {"n": _check_pair(truths, answers, "truths, answers")}
    if b.task in ("emotion", "intent"):
        rep = classification_report(truths, preds, labels)
        out.update({k: rep[k] for k in ("acc", "waf", "uar", "war", "n_unparsed", "per_class", "confusion")})
    elif b.task == "sentiment":
        out.update(sentiment_scores(truths, preds))
        out["n_neutral_dropped"] = sum(t == "neutral" for t in truths)
    elif b.task == "multilabel":
        out.update(multilabel_scores(truths, preds, labels))
        indicator = np.array([[name in p for name in labels] for p in preds], dtype=float)
        out["map"] = mean_average_precision(truths, indicator, labels)  # answers give no scores: 0/1 ranks
    else:
        out.update(open_vocabulary_scores(truths, preds))
    if "hit_rate" in b.metrics:
        names = [", ".join(sorted(t)) if isinstance(t, set) else t for t in truths]
        out["hit_rate"] = hit_rate(answers, names, vocab.family_normaliser())
    out["predictions"] = [sorted(p) if isinstance(p, set) else p for p in preds]
    return out


# ---------------------------------------------------------------------------------------------
# end to end: prepare (if needed) -> checkpoint answers -> score
# ---------------------------------------------------------------------------------------------


def prepared_data(b: Benchmark, root: Path | None, work: Path) -> tuple[Path, list[dict[str, str]]]:
    """Directory holding `<split>.jsonl` for the benchmark (prepared from `root` when absent) and the
    clips of that split that preparing left out."""
    jsonl = work / f"{b.split}.jsonl"
    report = work / "prepare_report.json"
    if not jsonl.is_file():
        if root is None:
            raise FileNotFoundError(f"{jsonl} does not exist; give --root (the {b.source} dataset) to prepare it")
        from emo_edge.data.adapters import prepare

        prepare(b.source, root, work)
        if not jsonl.is_file():
            raise FileNotFoundError(f"preparing {b.source} from {root} gave no {b.split} split (see {report})")
    bad = json.loads(report.read_text())["bad"] if report.is_file() else []
    return work, [x for x in bad if x.get("split") == b.split]


def evaluate_benchmark(
    name: str, root: str | Path | None = None, work: str | Path | None = None, checkpoint: str | Path = "default",
    answer_from: str = "llm", modalities: tuple[str, ...] = ("video", "audio", "text"),
    json_out: str | Path | None = None, limit: int | None = None, progress: bool = True,
) -> dict[str, Any]:
    """Score a checkpoint on one benchmark; `work` holds (or receives) the prepared source dataset."""
    from emo_edge.data.adapters.base import labelmap
    from emo_edge.eval.evaluate import predict_checkpoint

    if answer_from not in ("llm", "head"):
        raise ValueError(f"--answer-from {answer_from!r}: a benchmark reads llm or head answers")
    b = get_benchmark(name)
    work = Path(work) if work is not None else Path("runs") / "benchmarks" / b.source
    data, prepare_bad = prepared_data(b, Path(root) if root is not None else None, work)
    fs, preds = predict_checkpoint(checkpoint, data, answer_from, modalities, split=b.split, limit=limit,
                                   progress=progress)
    lm = labelmap(b.labelmap)
    answers = preds.answers if answer_from == "llm" else [head_answer(b, h, lm.to_shared) for h in preds.head]
    report = score(b, lm.labels, [truth(b, r) for r in fs.records], answers)
    report["predictions"] = [
        {"id": r.id, "truth": sorted(t) if isinstance(t, set) else t, "answer": a, "read": p, "head": h}
        for r, t, a, p, h in zip(fs.records, [truth(b, r) for r in fs.records], answers, report["predictions"],
                                 preds.head, strict=True)]
    report.update({"benchmark": asdict(b), "checkpoint": str(checkpoint), "answer_from": answer_from,
                   "modalities": list(modalities), "data": str(data), "n_bad": len(fs.bad) + len(prepare_bad),
                   "bad": [*fs.bad, *(f"clip {x['id']}: {x['reason']}" for x in prepare_bad)]})
    if json_out:
        Path(json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(json_out).write_text(json.dumps(report, indent=2, ensure_ascii=False))
    return report
