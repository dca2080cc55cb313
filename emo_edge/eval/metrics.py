"""Answer parsing and metrics for the paper's benchmark families (DESIGN §4). No torch: the runtime uses it.

Conventions, chosen to match scikit-learn's defaults so numbers compare with published ones:

- A prediction that is None or outside `labels` is always wrong. `confusion_matrix` keeps it in an
  extra last column, "none", so each row sums to that class's support.
- Precision of a class never predicted is 0; F1 is 0 when precision and recall are both 0.
- WAF weights F1 by support, so classes absent from y_true contribute 0; UAR averages recall over
  the classes present in y_true only (sklearn's `balanced_accuracy_score`); WAR equals accuracy.
- Empty inputs raise ValueError; so do length mismatches, naming both lengths.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from emo_edge.eval.fluency import reason_fluency  # noqa: F401 - re-exported next to cue_recall
from emo_edge.labels import (  # noqa: F401 - parse_label and reason_conclusion are re-exported
    LABELS,
    SYNONYMS,
    names_in,
    parse_label,
    reason_conclusion,
)

NONE_COLUMN = "none"  # name of confusion_matrix's extra column of unparsed predictions

def _check_pair(a: Sequence, b: Sequence, names: str = "y_true, y_pred") -> int:
    """Length shared by `a` and `b`; ValueError when empty or mismatched."""
    if len(a) != len(b):
        raise ValueError(f"length mismatch: {names} have {len(a)} and {len(b)} items")
    if len(a) == 0:
        raise ValueError(f"empty input: {names} hold no items")
    return len(a)


def confusion_matrix(
    y_true: Sequence[str], y_pred: Sequence[str | None], labels: Sequence[str] = LABELS
) -> np.ndarray:
    """Counts, int64 of shape (L, L + 1): rows true label, columns predicted label then "none".

    The last column counts predictions that are None or outside `labels` (unparsed answers).
    A true label outside `labels` raises ValueError.
    """
    _check_pair(y_true, y_pred)
    index = {name: i for i, name in enumerate(labels)}
    cm = np.zeros((len(labels), len(labels) + 1), dtype=np.int64)
    for t, p in zip(y_true, y_pred, strict=True):
        if t not in index:
            raise ValueError(f"unknown true label {t!r}; expected one of {', '.join(labels)}")
        cm[index[t], index.get(p, len(labels))] += 1
    return cm


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den elementwise, 0 where den is 0 (sklearn's zero_division default)."""
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def _scores_from_confusion(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class precision, recall, F1 and support from an (L, L + 1) confusion matrix."""
    labelled = cm[:, : cm.shape[0]]  # drop the "none" column: unparsed answers predict no class
    tp = np.diag(labelled)
    support = cm.sum(axis=1)
    precision = _safe_div(tp, labelled.sum(axis=0))
    recall = _safe_div(tp, support)
    f1 = _safe_div(2 * precision * recall, precision + recall)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support}


def classification_report(
    y_true: Sequence[str], y_pred: Sequence[str | None], labels: Sequence[str] = LABELS
) -> dict:
    """Accuracy, WAF, UAR, WAR, per-class scores and the confusion matrix (with its "none" column).

    Keys: n, acc, waf, uar, war, per_class {label: {precision, recall, f1, support}}, n_unparsed,
    confusion (list of lists, rows true, columns `labels` then "none"), labels.
    """
    cm = confusion_matrix(y_true, y_pred, labels)
    s = _scores_from_confusion(cm)
    n = int(cm.sum())
    present = s["support"] > 0
    return {
        "n": n,
        "acc": float(np.trace(cm[:, : len(labels)]) / n),
        "waf": float((s["f1"] * s["support"]).sum() / n),
        "uar": float(s["recall"][present].mean()),
        "war": float((s["recall"] * s["support"]).sum() / n),
        "per_class": {
            name: {"precision": float(s["precision"][i]), "recall": float(s["recall"][i]),
                   "f1": float(s["f1"][i]), "support": int(s["support"][i])}
            for i, name in enumerate(labels)
        },
        "n_unparsed": int(cm[:, -1].sum()),
        "confusion": cm.tolist(),
        "labels": list(labels),
    }


def _normalise_text(text: str) -> str:
    """Lower case, apostrophes dropped, hyphens and other punctuation as spaces, whitespace collapsed."""
    text = re.sub(r"['’`]", "", text.lower())
    return " ".join(re.sub(r"[^\w\s]|_", " ", text).split())


def _names_verbatim(text: str, phrase: str) -> bool:
    """Whether `phrase` appears in `text` as whole words, both normalised by `_normalise_text`."""
    phrase = _normalise_text(phrase)
    return bool(phrase) and f" {phrase} " in f" {_normalise_text(text)} "


def cue_recall(answer: str, cues: Sequence[str]) -> float:
    """Share of `cues` the answer names, each as whole words after normalisation; nan without cues.

    Normalisation lower-cases, ignores punctuation and treats hyphens as spaces, so "wide-eyed"
    matches "wide eyed". Matching is whole-word: "smile" does not match "smiles". Cues that
    normalise to nothing are ignored.
    """
    wanted = [c for c in map(_normalise_text, cues) if c]
    if not wanted:
        return math.nan
    return sum(_names_verbatim(answer, c) for c in wanted) / len(wanted)


def mean_cue_recall(answers: Sequence[str], cues: Sequence[Sequence[str]]) -> float:
    """Mean `cue_recall` over clips, skipping clips without cues; nan when no clip has any."""
    _check_pair(answers, cues, "answers, cues")
    values = [v for v in map(cue_recall, answers, cues) if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


def cue_precision(answer: str, cues: Sequence[str], options: Sequence[str]) -> float:
    """Share of the cue `options` the answer names that are among the clip's own `cues`; nan if it names none.

    `options` are every cue phrase the clip could have had (e.g. both "rising pitch" and "falling
    pitch"); naming one the clip does not have is a hallucinated cue. Matching as in `cue_recall`.
    """
    own = {c for c in map(_normalise_text, cues) if c}
    named = [c for c in dict.fromkeys(map(_normalise_text, options)) if c and _names_verbatim(answer, c)]
    if not named:
        return math.nan
    return sum(c in own for c in named) / len(named)


def mean_cue_precision(
    answers: Sequence[str], cues: Sequence[Sequence[str]], options: Sequence[Sequence[str]]
) -> float:
    """Mean `cue_precision` over clips that name at least one option; nan when none does.

    A clip whose reason names no option has no precision to average (its recall shows the miss).
    """
    _check_pair(answers, cues, "answers, cues")
    _check_pair(answers, options, "answers, options")
    values = [v for v in map(cue_precision, answers, cues, options) if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


def cue_recall_by_group(answers: Sequence[str], cues: Sequence[Mapping[str, str]]) -> dict[str, float]:
    """Per group (e.g. an attribute: its name -> the clip's own phrase), the share of the clips having that group
    whose answer names the phrase (matching as in `cue_recall`); groups in first-seen order."""
    _check_pair(answers, cues, "answers, cues")
    hits: dict[str, list[bool]] = {}
    for answer, groups in zip(answers, cues, strict=True):
        for name, phrase in groups.items():
            hits.setdefault(name, []).append(_names_verbatim(answer, phrase))
    return {name: float(np.mean(v)) for name, v in hits.items()}


def answer_reason_consistency(answers: Sequence[str | None], reasons: Sequence[str]) -> float:
    """Share of clips whose answer label equals its reason's conclusion; a missing side counts as a disagreement."""
    n = _check_pair(answers, reasons, "answers, reasons")
    return sum(a is not None and a == reason_conclusion(r) for a, r in zip(answers, reasons, strict=True)) / n


def sentiment_scores(y_true: Sequence[str], y_pred: Sequence[str | None], neutral: str = "neutral") -> dict:
    """Accuracy and weighted F1 over the clips whose ground truth is not `neutral` (e.g. Acc-2 / F1).

    Predicting `neutral` (or nothing) for a kept clip counts as wrong. Keys: n (clips kept), acc, waf.
    """
    _check_pair(y_true, y_pred)
    kept = [(t, p) for t, p in zip(y_true, y_pred, strict=True) if t != neutral]
    if not kept:
        raise ValueError(f"every ground truth is {neutral!r}: nothing left to score")
    true, pred = zip(*kept, strict=True)
    report = classification_report(true, pred, sorted(set(true)))
    return {"n": report["n"], "acc": report["acc"], "waf": report["waf"]}


def _binarise(sets: Sequence[set[str]], labels: Sequence[str]) -> np.ndarray:
    """(N, L) bool indicator matrix; names outside `labels` are ignored."""
    return np.array([[name in s for name in labels] for s in sets], dtype=bool).reshape(len(sets), len(labels))


def multilabel_scores(y_true: Sequence[set[str]], y_pred: Sequence[set[str]], labels: Sequence[str]) -> dict:
    """Micro F1, samples F1 and samples Jaccard of multi-label predictions.

    Names outside `labels` are ignored. A clip with empty truth and empty prediction scores 0 on
    the per-sample metrics (sklearn's zero_division default). Keys: n, micro_f1, samples_f1, jaccard.
    """
    n = _check_pair(y_true, y_pred)
    t, p = _binarise(y_true, labels), _binarise(y_pred, labels)
    inter = (t & p).sum(axis=1)
    sizes = t.sum(axis=1) + p.sum(axis=1)
    tp, fp, fn = inter.sum(), (p & ~t).sum(), (t & ~p).sum()
    return {
        "n": n,
        "micro_f1": float(_safe_div(2 * tp, 2 * tp + fp + fn)),
        "samples_f1": float(_safe_div(2 * inter, sizes).mean()),
        "jaccard": float(_safe_div(inter, (t | p).sum(axis=1)).mean()),
    }


def _average_precision(positive: np.ndarray, score: np.ndarray) -> float:
    """AP = sum over distinct thresholds of (R_k - R_{k-1}) * P_k, as sklearn computes it (ties grouped)."""
    order = np.argsort(-score, kind="stable")
    score, hits = score[order], np.cumsum(positive[order])
    last = np.r_[np.flatnonzero(np.diff(score)), len(score) - 1]  # last index of each tie group
    precision = hits[last] / (last + 1)
    recall = hits[last] / hits[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def mean_average_precision(y_true: Sequence[set[str]], scores: np.ndarray, labels: Sequence[str]) -> float:
    """Mean over labels of average precision; scores is (N, L), columns in `labels` order.

    Labels with no positive clip have undefined AP and are left out of the mean.
    """
    scores = np.asarray(scores, dtype=float)
    _check_pair(y_true, scores, "y_true, scores")
    if scores.shape != (len(y_true), len(labels)):
        raise ValueError(f"scores must have shape (N, L) = ({len(y_true)}, {len(labels)}), got {scores.shape}")
    t = _binarise(y_true, labels)
    aps = [_average_precision(t[:, j], scores[:, j]) for j in range(len(labels)) if t[:, j].any()]
    if not aps:
        raise ValueError("no label has a positive clip: mean average precision is undefined")
    return float(np.mean(aps))


def _vocabulary_reader(synonyms: Mapping[str, str]) -> Callable[[str], set[str]]:
    """Text -> set of canonical labels it names, by whole-word lookup in `synonyms`."""
    vocab = {**{name: name for name in synonyms.values()}, **synonyms}
    return lambda text: set(names_in(text, vocab))


def hit_rate(
    answers: Sequence[str],
    truths: Sequence[str],
    normalise: Callable[[str], set[str]] | Mapping[str, str] = SYNONYMS,
) -> float:
    """Share of open-vocabulary answers that name their ground-truth label, after synonym normalisation.

    `normalise` is either a word -> canonical-label mapping (words matched whole, case-insensitive,
    every occurrence counted; canonical labels match themselves) or a function from text to the set
    of canonical labels it names. A truth is normalised the same way; one the vocabulary does not
    know is looked for verbatim, as whole words after `cue_recall`'s normalisation.
    """
    _check_pair(answers, truths, "answers, truths")
    names = _vocabulary_reader(normalise) if isinstance(normalise, Mapping) else normalise
    hits = 0
    for answer, truth in zip(answers, truths, strict=True):
        wanted = names(truth)
        hits += bool(wanted & names(answer)) if wanted else _names_verbatim(answer, truth)
    return hits / len(answers)


def agreement(a: Sequence, b: Sequence) -> float:
    """Share of positions where `a` and `b` hold equal items."""
    n = _check_pair(a, b, "a, b")
    return sum(x == y for x, y in zip(a, b, strict=True)) / n


def plot_confusion(cm: np.ndarray, labels: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Write a PNG of `cm`: counts as text, colours normalised per row (share of the true class).

    `cm` is (L, L) or, from `confusion_matrix`, (L, L + 1) with the "none" column last.
    """
    # Imported here: matplotlib is slow to import and only reports need it. Figure without pyplot
    # renders through Agg and leaves the global backend alone.
    from matplotlib.figure import Figure

    cm = np.asarray(cm)
    if cm.shape[0] != len(labels) or cm.shape[1] not in (len(labels), len(labels) + 1):
        raise ValueError(f"cm of shape {cm.shape} does not fit {len(labels)} labels (expected L x L or L x L+1)")
    cols = list(labels) + [NONE_COLUMN] * (cm.shape[1] - len(labels))
    shares = _safe_div(cm, cm.sum(axis=1, keepdims=True))
    size = 1.0 + 0.6 * max(cm.shape)
    fig = Figure(figsize=(size + 1.5, size), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    for (i, j), count in np.ndenumerate(cm):
        ax.text(j, i, str(count), ha="center", va="center", color="white" if shares[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="share of true class")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path
