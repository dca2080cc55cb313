"""The shared label set (MER2023's six) and per-label affect anchors.

Everything that needs to know the label set imports it from here: data generators, the model's
fast head, answer parsing (`parse_label`, shared by evaluation and the runtime's slow path) and metrics.
No torch here: the runtime uses it too.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence

LABELS: tuple[str, ...] = ("neutral", "happy", "sad", "angry", "worried", "surprise")
LABEL_TO_ID: dict[str, int] = {name: i for i, name in enumerate(LABELS)}

# Prototype (valence, arousal) per label, both in [-1, 1]; a clip's targets scale these by its
# expression intensity. Values follow the usual circumplex placement of these categories.
VALENCE_AROUSAL: dict[str, tuple[float, float]] = {
    "neutral": (0.0, 0.0),
    "happy": (0.8, 0.5),
    "sad": (-0.7, -0.4),
    "angry": (-0.7, 0.8),
    "worried": (-0.5, 0.4),
    "surprise": (0.2, 0.8),
}

# Words that name a label in free text, mapped to the label (lower case). Used to read the label
# out of an open answer; the first label word found wins.
SYNONYMS: dict[str, str] = {
    **{name: name for name in LABELS},
    "calm": "neutral",
    "joy": "happy",
    "joyful": "happy",
    "happiness": "happy",
    "sadness": "sad",
    "unhappy": "sad",
    "anger": "angry",
    "annoyed": "angry",
    "worry": "worried",
    "anxious": "worried",
    "fear": "worried",
    "afraid": "worried",
    "surprised": "surprise",
    "astonished": "surprise",
}


def label_id(name: str) -> int:
    """Index of `name` in LABELS; ValueError naming the valid labels otherwise."""
    try:
        return LABEL_TO_ID[name]
    except KeyError:
        raise ValueError(f"unknown emotion label {name!r}; expected one of {', '.join(LABELS)}") from None


_ANSWER_TAG = re.compile(r"<answer>(.*?)(?:</answer>|\Z)", re.IGNORECASE | re.DOTALL)
_SEPARATOR = re.compile(r"[\s\-]+")  # inside a vocabulary word, spaces and hyphens are interchangeable


def canonical_word(word: str) -> str:
    """Lower case, trimmed, runs of spaces or hyphens as one space: the form vocabulary lookups use."""
    return _SEPARATOR.sub(" ", word.strip().lower())


@functools.lru_cache(maxsize=32)
def _word_pattern(words: tuple[str, ...]) -> re.Pattern[str]:
    """Regex matching any of the canonical `words` as whole words, case-insensitively."""
    # Longest first so a multi-word phrase wins over its own first word.
    alts = [r"[\s\-]+".join(map(re.escape, w.split(" "))) for w in sorted(words, key=len, reverse=True)]
    return re.compile(r"(?<![a-z0-9])(?:" + "|".join(alts) + r")(?![a-z0-9])", re.IGNORECASE)


def names_in(text: str, synonyms: Mapping[str, str]) -> list[str]:
    """Canonical names of the synonym words in `text`, in order of appearance."""
    lookup = {canonical_word(w): name for w, name in synonyms.items() if w.strip()}
    if not lookup:
        return []
    return [lookup[canonical_word(m.group(0))] for m in _word_pattern(tuple(sorted(lookup))).finditer(text)]


def parse_label(answer: str, labels: Sequence[str] = LABELS, synonyms: Mapping[str, str] = SYNONYMS) -> str | None:
    """The label named by a generated answer, or None.

    With `<answer>…</answer>` present only its content counts (the last such tag; an unclosed tag
    at the end, as in a truncated generation, runs to the end of the text). Otherwise the first
    label or synonym found as a whole word wins, case-insensitively: "unhappy" reads as sad (it is
    a synonym), "sadly" reads as nothing. Negation is not understood ("not happy" reads happy).
    """
    tagged = _ANSWER_TAG.findall(answer)
    text = tagged[-1] if tagged else answer
    vocab = {**{name: name for name in labels}, **synonyms}
    for name in names_in(text, vocab):
        if name in labels:
            return name
    return None


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def reason_conclusion(
    reason: str, labels: Sequence[str] = LABELS, synonyms: Mapping[str, str] = SYNONYMS
) -> str | None:
    """The label a reason concludes with: the last label named in its last sentence that names one.

    Reasons first say which labels each cue fits ("... which fit worried or surprise") and end with
    the conclusion ("The answer is surprise."), so the last label-naming sentence is the verdict.
    An `<answer>` tag, when present, is the conclusion.
    """
    if _ANSWER_TAG.search(reason):
        return parse_label(reason, labels, synonyms)
    vocab = {**{name: name for name in labels}, **synonyms}
    for sentence in reversed(_SENTENCE_END.split(reason.strip())):
        names = [n for n in names_in(sentence, vocab) if n in labels]
        if names:
            return names[-1]
    return None
