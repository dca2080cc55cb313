"""Text banks and target templates for SynthEmo (see `synth.py`).

Everything a SynthEmo record says in words comes from here: the subtitle sentences (which are
also what the TTS speaks), the canonical cue phrases of each expression / prosody family, and the
few sentence templates that turn a clip's render parameters into its `image`, `audio`, `reason`
and `think` targets. The vocabulary is kept small on purpose: it trains a tiny language model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from emo_edge.labels import LABELS

# Everyday sentences without emotional words (~70 % of subtitles). Short (4-7 words) so that even
# the slowest speech rate stays under the 4 s clip limit.
NEUTRAL_SENTENCES: tuple[str, ...] = (
    "The bus was late again.",
    "I put the keys on the table.",
    "We need more milk and bread.",
    "The meeting starts at nine.",
    "She moved to a new flat.",
    "The shop closes at six.",
    "He called me this morning.",
    "Our train is on time.",
    "I left my bag in the car.",
    "They painted the fence blue.",
    "The package came on Monday.",
    "We walked to the station.",
    "My phone needs a new charger.",
    "The report is on your desk.",
    "It rained for most of the day.",
    "I will take the early train.",
    "The door to the garden is open.",
    "He reads the paper every day.",
    "The printer is out of paper.",
    "We ordered soup and salad.",
    "The lift is on the third floor.",
    "She wrote the number down.",
    "The cafe is next to the bank.",
    "I need to wash the dishes.",
    "The class ends at noon.",
    "They sold the old bike.",
    "The light in the hall is on.",
    "He parked behind the school.",
    "We have a test on Friday.",
    "The window faces the street.",
    "I found a pen under the chair.",
    "The cat sleeps by the window.",
    "The plan is on the board.",
    "She takes the bus to work.",
    "The water is in the kitchen.",
    "We met at the corner shop.",
    "The film starts in ten minutes.",
    "He fixed the kitchen sink.",
    "The letter is in the drawer.",
    "I bought a new lamp.",
    "The road is closed today.",
    "They moved the desk upstairs.",
    "The clock in the hall is slow.",
    "We need two more chairs.",
    "The box is by the door.",
    "She brought the maps along.",
    "The tea is still warm.",
    "He sent the file last night.",
    "The store has fresh apples.",
    "I will call you after lunch.",
    "The bridge was built last year.",
    "We share the car on Mondays.",
    "The shirt is in the wash.",
    "The boat leaves at ten.",
    "He plays chess on Sundays.",
    "The menu is on the wall.",
    "I set the alarm for seven.",
    "The park is down the road.",
    "We took the stairs today.",
    "The dog needs a walk.",
    "The coffee machine is new.",
    "She checks her mail at noon.",
    "The tickets are in my coat.",
    "They planted trees in the yard.",
    "The room has two windows.",
    "I counted the boxes twice.",
)

# Sentences with emotional words, per label (~20 % matching the label, ~10 % another label's).
EMOTION_SENTENCES: dict[str, tuple[str, ...]] = {
    "neutral": (
        "It is just a normal day.",
        "Nothing special happened today.",
        "I feel fine about it.",
        "It is all the same to me.",
        "Things are calm and ordinary.",
        "I have no strong feelings here.",
        "It was an ordinary week.",
        "That is fine with me.",
    ),
    "happy": (
        "I am so happy about this.",
        "This is the best day ever.",
        "What a wonderful surprise party.",
        "I love this so much.",
        "We won the match today.",
        "That is great news for us.",
        "I am glad you came.",
        "This makes me really happy.",
    ),
    "sad": (
        "I miss her so much.",
        "Nobody came to my party.",
        "I lost my old dog today.",
        "I feel so alone tonight.",
        "Everything went wrong again.",
        "I am sad that you left.",
        "It hurts to say goodbye.",
        "I cried all night long.",
    ),
    "angry": (
        "This is completely unfair.",
        "Stop touching my things.",
        "I am so angry with you.",
        "You broke your promise again.",
        "I am sick of this mess.",
        "Do not lie to me again.",
        "That was a stupid mistake.",
        "I hate waiting like this.",
    ),
    "worried": (
        "What if something goes wrong?",
        "I am worried about the test.",
        "I hope she is safe.",
        "I am afraid we will fail.",
        "He still has not called back.",
        "I am nervous about tomorrow.",
        "What if they find out?",
        "I fear the worst tonight.",
    ),
    "surprise": (
        "I did not expect that.",
        "Wow, you are here already?",
        "No way, is that real?",
        "What a shock that was.",
        "I cannot believe my eyes.",
        "You did all this for me?",
        "That came out of nowhere.",
        "Really, you won the prize?",
    ),
}

SUBTITLE_KINDS: tuple[str, ...] = ("neutral", "matching", "contradicting")
SUBTITLE_KIND_P: tuple[float, ...] = (0.7, 0.2, 0.1)

# Canonical cue phrases per family. A clip's `cues` are these (plus one subtitle cue when the
# subtitle is emotional); every one appears verbatim in its `reason`.
VISUAL_CUES: dict[str, tuple[str, ...]] = {
    "downcast": ("a flat mouth", "level eyebrows", "lowered eyelids"),
    "raised": ("raised eyebrows", "wide-open eyes", "an open mouth"),
    "smile": ("a broad smile", "raised cheeks", "squinting eyes"),
    "frown": ("furrowed brows", "narrowed eyes"),  # + "pressed lips" or "bared teeth" per clip
}
FROWN_MOUTH_CUES: dict[str, str] = {"pressed": "pressed lips", "teeth": "bared teeth"}
AUDIO_CUES: dict[str, tuple[str, ...]] = {
    "aroused": ("raised pitch", "fast speech", "a loud voice", "lively intonation"),
    "low": ("low pitch", "slow speech", "a quiet voice", "a trembling voice"),
    "flat": ("medium pitch", "a steady pace", "flat intonation"),
    "exclaim": ("very high pitch", "rising intonation", "a brisk pace"),
}
SUBTITLE_CUES: dict[str, str] = {"matching": "emotional words", "contradicting": "contradicting words"}

_ARTICLES = ("a ", "an ")


def phrase(cue: str) -> str:
    """The canonical cue phrase of a cue as written in a sentence ("an open mouth" -> "open mouth")."""
    for art in _ARTICLES:
        if cue.startswith(art):
            return cue[len(art) :]
    return cue


def join(items: Sequence[str], last: str = "and") -> str:
    """'a', 'a and b', 'a, b and c'."""
    items = list(items)
    if len(items) == 1:
        return items[0]
    return f"{', '.join(items[:-1])} {last} {items[-1]}"


def intensity_word(intensity: float) -> str:
    return "mild" if intensity < 0.72 else "clear" if intensity < 0.86 else "strong"


_IMAGE_TEMPLATES = (
    "The face shows {cues}; the expression is {strength}.",
    "A {strength} expression with {cues}.",
    "The person has {cues}, a {strength} expression.",
)
_DISTRACTOR_SENTENCE = " A second, smaller face in the background looks neutral."
_AUDIO_TEMPLATES = (
    "The voice has {cues}.",
    "The speaker talks with {cues}.",
    "The speech has {cues}.",
)
_REASON_TEMPLATES = (
    "The face shows {v}, which fit {vl}. The voice has {a}, which fit {al}. {sub}Both point to {label}.",
    "Visual cues: {v}, typical of {vl}. Vocal cues: {a}, typical of {al}. {sub}Together they point to {label}.",
    "I see {v}, which suggest {vl}, and hear {a}, which suggest {al}. {sub}The answer is {label}.",
)
_SUBTITLE_NOTES = {
    "matching": "The emotional words agree. ",
    "contradicting": "The contradicting words sound {other}. ",
}


def family_labels(family: str, family_of: dict[str, str]) -> str:
    """'worried or surprise': the labels that a family's cues fit, in LABELS order."""
    return join([lab for lab in LABELS if family_of[lab] == family], last="or")


def image_target(rng: np.random.Generator, vcues: Sequence[str], intensity: float, distractor: bool) -> str:
    text = str(rng.choice(_IMAGE_TEMPLATES)).format(cues=join(vcues), strength=intensity_word(intensity))
    return text + (_DISTRACTOR_SENTENCE if distractor else "")


def audio_target(rng: np.random.Generator, acues: Sequence[str]) -> str:
    return str(rng.choice(_AUDIO_TEMPLATES)).format(cues=join(acues))


def reason_target(
    rng: np.random.Generator,
    label: str,
    vcues: Sequence[str],
    vl: str,
    acues: Sequence[str],
    al: str,
    subtitle_kind: str,
    other: str | None,
) -> str:
    sub = _SUBTITLE_NOTES.get(subtitle_kind, "").format(other=other)
    text = str(rng.choice(_REASON_TEMPLATES)).format(v=join(vcues), vl=vl, a=join(acues), al=al, sub=sub, label=label)
    return text


def think_target(label: str, vcues: Sequence[str], vl: str, acues: Sequence[str], al: str) -> str:
    v = ", ".join(phrase(c) for c in vcues)
    a = ", ".join(phrase(c) for c in acues)
    return f"<think>Face: {v}, so {vl}. Voice: {a}, so {al}. Both fit {label}.</think><answer>{label}</answer>"
