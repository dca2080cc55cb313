"""Our emotion vocabulary (emo_edge/data/emotion_vocab.yaml): synonyms, a two-level emotion wheel
and the polarity of each wheel family. It reads emotion words out of free-form answers for the
benchmarks: a dataset's labels in an answer, the wheel families it names (hit rate, open-vocabulary
F-score) and the sentiment it expresses. No torch.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import yaml

from emo_edge.labels import canonical_word, names_in

VOCAB_FILE = Path(__file__).resolve().parents[1] / "data" / "emotion_vocab.yaml"
SENTIMENTS = ("negative", "neutral", "positive")
_SENTIMENT_WORDS = {"positive": "positive", "negative": "negative", "neutral": "neutral", "mixed": "neutral"}


@functools.cache
def _table() -> dict:
    return yaml.safe_load(VOCAB_FILE.read_text(encoding="utf-8"))


@functools.cache
def synonyms() -> dict[str, str]:
    """Word or phrase (canonical form) -> canonical term; each term also names itself.

    A word listed under two terms is an error in the table and raises, naming both.
    """
    out: dict[str, str] = {}
    for term, words in _table()["synonyms"].items():
        for w in [term, *words]:
            key = canonical_word(w)
            if out.get(key, term) != term:
                raise ValueError(f"{VOCAB_FILE.name}: {w!r} is listed under both {out[key]!r} and {term!r}")
            out[key] = term
    return out


@functools.cache
def wheel() -> dict[str, str]:
    """Canonical term -> its wheel family (a family also maps to itself)."""
    out = {fam: fam for fam in _table()["wheel"]}
    for fam, terms in _table()["wheel"].items():
        out.update({t: fam for t in terms})
    missing = set(synonyms().values()) - set(out)
    assert not missing, f"{VOCAB_FILE.name}: terms without a wheel family: {sorted(missing)}"
    return out


def canonical_term(word: str) -> str | None:
    """The canonical term of one emotion word or phrase, or None if the vocabulary lacks it."""
    key = canonical_word(word)
    found = synonyms().get(key) or (key if key in wheel() else None)
    if found is None and "/" in key:  # "doubt/confusion": the first part the vocabulary knows
        found = next(filter(None, map(canonical_term, key.split("/"))), None)
    return found


def families(text: str) -> set[str]:
    """Wheel families named anywhere in `text` (synonym then wheel normalisation)."""
    words = {**synonyms(), **{f: f for f in _table()["wheel"]}}
    return {wheel()[t] for t in names_in(text, words)}


def family_normaliser() -> Callable[[str], set[str]]:
    """`families` as the `normalise` argument of metrics.hit_rate."""
    return families


def label_vocabulary(labels: Sequence[str]) -> dict[str, str]:
    """Word -> dataset label for every vocabulary word whose canonical term is that of a label.

    "joyful" reads as MELD's "joy" and as MAFW's "happiness" (both are the term "happy"). A label
    the vocabulary does not know still names itself.
    """
    by_term: dict[str, str] = {}
    for label in labels:
        term = canonical_term(label)
        if term is not None:
            by_term.setdefault(term, label)
    vocab = {w: by_term[t] for w, t in synonyms().items() if t in by_term}
    return {**vocab, **{label: label for label in labels}}


def polarity(family: str) -> str:
    return _table()["polarity"][family]


def sentiment_of(text: str, emotion_synonyms: Mapping[str, str] | None = None) -> str | None:
    """The sentiment an answer expresses: a sentiment word if it names one, else the polarity of
    the first emotion it names; None when it names neither."""
    named = names_in(text, _SENTIMENT_WORDS)
    if named:
        return named[0]
    terms = names_in(text, emotion_synonyms or synonyms())
    return polarity(wheel()[terms[0]]) if terms else None
