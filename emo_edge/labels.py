"""The shared label set (MER2023's six) and per-label affect anchors.

Everything that needs to know the label set imports it from here: data generators, the model's
fast head, answer parsing and metrics. No torch here: the runtime uses it too.
"""

from __future__ import annotations

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
