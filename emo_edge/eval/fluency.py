"""Reason fluency: is a reason grammatical English sentences naming at least one visual and one vocal cue?

A deterministic check (no LLM, no network), so the share it reports is repeatable and testable. It is a shallow
grammar, not a parser of all English: it knows the closed word classes (determiners, prepositions, conjunctions,
pronouns, auxiliaries) and a lexicon of the verbs reasons about faces and voices use, and finds what degenerate
generation produces. A reason is fluent when

- it ends a sentence (., ! or ?) -- a reason cut by the token limit does not;
- every sentence starts with a capital, has at least 3 words, only word tokens (letters, digits, inner hyphens
  and apostrophes) and the punctuation , ; : ( ), and a finite verb -- or is a heading and a list, as
  "Visual cues: a broad smile and raised cheeks.";
- no determiner stands before another determiner, a preposition, a conjunction, an auxiliary or punctuation;
  "a"/"an" agrees with the next word's first sound (by spelling, with the usual exceptions); no sentence ends in
  a determiner, a preposition, a conjunction or a bare auxiliary ("The voice has a.", "The answer is.");
- nothing repeats: no word or phrase of up to 8 words twice in a row ("a loud voice, a loud voice"), no
  7-word phrase twice anywhere, no sentence twice, no cue phrase named twice;
- it names at least one visual cue and one vocal cue of SynthEmo's vocabularies (the v1 family cues, v2's
  family cues and its observable attributes; `cue_vocabularies`), as whole words after normalisation.

`fluency_problems(text)` lists what is wrong (empty: fluent); `reason_fluency(reasons)` is the fluent share.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from functools import lru_cache

DETERMINERS = frozenset("a an the this these those its his her their my your our each every some any no another "
                        "both either neither".split())
PREPOSITIONS = frozenset("of with in on at by for from to into onto about over under through without within like "
                         "than between during after before across along around toward towards behind".split())
CONJUNCTIONS = frozenset("and or but nor because while although though whereas if when whether".split())
RELATIVES = frozenset("which that who whose whom where".split())
PRONOUNS = frozenset("i you he she it we they there this that these those one".split())
# auxiliaries and copulas: finite verbs that need a complement, so a sentence cannot end in one
AUXILIARIES = frozenset("is are was were be been being am has have had do does did can could may might must shall "
                        "should will would".split())
# lexical verbs reasons use (base forms); the -s, -es, -ies, -ed and -d forms are derived
VERB_BASES = frozenset(
    "show suggest point fit indicate reveal agree sound look seem appear speak talk make give mean reflect signal "
    "convey express display tell feel hear see notice tremble rise fall grow trail match support come remain stay "
    "become sit tilt avert blink build smile frown raise lower narrow furrow open press bare squint pause slow "
    "speed change shift move stare gaze hold keep carry lead add confirm contradict say read sense rest start end "
    "begin turn drop lift widen soften tighten pitch tense calm quiet louden fade".split())
IRREGULAR_VERBS = frozenset("said saw heard felt made gave kept held began rose fell grew came led read told "
                            "meant sat shown seen".split())
# "an" before these consonant-spelled words, "a" before these vowel-spelled ones
AN_EXCEPTIONS = frozenset("hour hours honest honestly honour honor heir".split())
A_EXCEPTIONS = frozenset("one once unique unit united university uniform usual usually user useful european "
                         "eulogy".split())
NO_END = DETERMINERS | PREPOSITIONS | CONJUNCTIONS | RELATIVES | AUXILIARIES
NOT_AFTER_DETERMINER = DETERMINERS | PREPOSITIONS | CONJUNCTIONS | AUXILIARIES | {"which", "who", "whose"}
WORD = re.compile(r"[A-Za-z0-9]+(?:['’-][A-Za-z0-9]+)*")
PUNCT = frozenset(",;:()")
SENTENCE_END = re.compile(r"[.!?]['\")\]]*(?=\s|$)")
HEADING_WORDS = 3  # "Visual cues:" -- a heading before a list, at most this many words
REPEAT_SPAN = 8  # longest phrase checked for an immediate repetition
REPEAT_NGRAM = 7  # a phrase this long may not occur twice anywhere


@lru_cache(maxsize=1)
def cue_vocabularies() -> dict[str, tuple[str, ...]]:
    """{"visual": phrases, "vocal": phrases}: every cue phrase SynthEmo can name, articles dropped."""
    from emo_edge.data import synth_text as t1
    from emo_edge.data import synth_v2 as v2

    visual = [c for cues in t1.VISUAL_CUES.values() for c in cues] + list(t1.FROWN_MOUTH_CUES.values())
    vocal = [c for family in (t1.AUDIO_CUES, v2.AUDIO_CUES) for cues in family.values() for c in cues]
    for a in v2.ATTRIBUTES:
        (visual if a.view == "visual" else vocal).extend(a.phrases.values())
    visual.extend(v2.ONSET_PHRASES.values())
    return {view: tuple(dict.fromkeys(map(t1.phrase, cues))) for view, cues in (("visual", visual), ("vocal", vocal))}


def _norm(text: str) -> str:
    """Lower case, apostrophes dropped, other punctuation and hyphens as spaces (as cue_recall matches)."""
    return " ".join(re.sub(r"[^\w\s]|_", " ", re.sub(r"['’`]", "", text.lower())).split())


def _count(phrase: str, text_norm: str) -> int:
    return f" {text_norm} ".count(f" {_norm(phrase)} ")


def sentences(text: str) -> tuple[list[str], str]:
    """(the complete sentences, text left after the last sentence end)."""
    out, start = [], 0
    for m in SENTENCE_END.finditer(text):
        out.append(text[start:m.start()].strip())
        start = m.end()
    return out, text[start:].strip()


def tokens(sentence: str) -> list[str] | None:
    """Words (lower case) and the allowed punctuation in order; None when something else is in it."""
    out, i = [], 0
    while i < len(sentence):
        ch = sentence[i]
        if ch.isspace():
            i += 1
        elif ch in PUNCT:
            out.append(ch)
            i += 1
        elif m := WORD.match(sentence, i):
            out.append(m.group().lower().replace("’", "'"))
            i = m.end()
        else:
            return None
    return out


def is_verb(word: str) -> bool:
    if word in AUXILIARIES or word in VERB_BASES or word in IRREGULAR_VERBS:
        return True
    for suffix in ("ies", "es", "ed", "s", "d"):  # not -ing: a participle alone makes no sentence
        if word.endswith(suffix) and len(word) > len(suffix) + 2:
            stem = word[: -len(suffix)]
            if stem in VERB_BASES or stem + "e" in VERB_BASES or (suffix == "ies" and stem + "y" in VERB_BASES):
                return True
            if suffix == "ed" and len(stem) > 2 and stem[-1] == stem[-2] and stem[:-1] in VERB_BASES:
                return True
    return False


def has_finite_verb(sentence: str) -> bool:
    """A verb outside the cue phrases: "raised" in "raised cheeks" is an adjective, not the sentence's verb."""
    words = _norm(sentence).split()
    in_cue = [False] * len(words)
    for phrases in cue_vocabularies().values():
        for p in phrases:
            p_words = _norm(p).split()
            for i in range(len(words) - len(p_words) + 1):
                if words[i:i + len(p_words)] == p_words:
                    in_cue[i:i + len(p_words)] = [True] * len(p_words)
    return any(is_verb(w) for w, cue in zip(words, in_cue, strict=True) if not cue)


def _article_ok(article: str, nxt: str) -> bool:
    vowel = nxt[0] in "aeiou"
    if nxt in AN_EXCEPTIONS or (nxt.split("-")[0] in AN_EXCEPTIONS):
        vowel = True
    if nxt in A_EXCEPTIONS or nxt.split("-")[0] in A_EXCEPTIONS:
        vowel = False
    return vowel == (article == "an") if nxt[0].isalpha() else True


def sentence_problems(sentence: str) -> list[str]:
    """What keeps one sentence (without its final punctuation) from being a grammatical English sentence."""
    toks = tokens(sentence)
    if toks is None:
        return [f"non-word characters in {sentence!r}"]
    words = [t for t in toks if t not in PUNCT]
    if len(words) < 3:
        return [f"not a sentence (under 3 words): {sentence!r}"]
    problems = []
    if not sentence[0].isupper() and not sentence[0].isdigit():
        problems.append(f"sentence starts in lower case: {sentence!r}")
    head, _, rest = sentence.partition(":")
    heading = bool(rest.strip()) and len(head.split()) <= HEADING_WORDS
    if not heading and not has_finite_verb(sentence):
        problems.append(f"no finite verb: {sentence!r}")
    if toks[0] in PUNCT or any(a in PUNCT and b in PUNCT and b != "(" for a, b in zip(toks, toks[1:], strict=False)):
        problems.append(f"misplaced punctuation: {sentence!r}")
    for a, b in zip(toks, [*toks[1:], "."], strict=True):
        if a in DETERMINERS and not (a in PRONOUNS and b in PUNCT | {"."} | AUXILIARIES | PREPOSITIONS):
            if b in NOT_AFTER_DETERMINER or b in PUNCT or b == ".":
                problems.append(f"{a!r} before {b!r}: {sentence!r}")
        if a in ("a", "an") and b not in PUNCT and b != "." and not _article_ok(a, b):
            problems.append(f"{a!r} before {b!r}: {sentence!r}")
    if words[-1] in NO_END and not (words[-1] in PRONOUNS and len(words) > 3):
        problems.append(f"ends in {words[-1]!r}: {sentence!r}")
    return problems


def repetition_problems(text: str) -> list[str]:
    """Repeated words, phrases, sentences and cues over the whole reason."""
    words = _norm(text).split()
    problems = []
    for n in range(1, REPEAT_SPAN + 1):
        for i in range(len(words) - 2 * n + 1):
            if words[i:i + n] == words[i + n:i + 2 * n]:
                problems.append(f"repeated {' '.join(words[i:i + n])!r} twice in a row")
                break
    grams = [tuple(words[i:i + REPEAT_NGRAM]) for i in range(len(words) - REPEAT_NGRAM + 1)]
    if len(set(grams)) < len(grams):
        problems.append(f"a {REPEAT_NGRAM}-word phrase occurs twice")
    sents = [_norm(s) for s in sentences(text)[0] if s.strip()]
    if len(set(sents)) < len(sents):
        problems.append("a sentence occurs twice")
    norm = " ".join(words)
    for view, phrases in cue_vocabularies().items():
        twice = [p for p in phrases if _count(p, norm) > 1]
        if twice:
            problems.append(f"{view} cue named twice: {twice[0]!r}")
    return problems


def cue_problems(text: str) -> list[str]:
    norm = _norm(text)
    return [f"names no {view} cue" for view, phrases in cue_vocabularies().items()
            if not any(_count(p, norm) for p in phrases)]


def fluency_problems(text: str) -> list[str]:
    """Everything that keeps `text` from being a fluent reason (see the module doc); [] when it is one."""
    text = text.strip()
    if not text:
        return ["empty"]
    sents, tail = sentences(text)
    problems = [f"truncated: {tail!r} ends no sentence"] if tail else []
    for s in sents:
        problems += sentence_problems(s)
    return problems + repetition_problems(text) + cue_problems(text)


def is_fluent(text: str) -> bool:
    return not fluency_problems(text)


def reason_fluency(reasons: Sequence[str]) -> float:
    """Share of `reasons` that are fluent (`fluency_problems` finds nothing); nan for no reasons."""
    if not reasons:
        return math.nan
    return sum(map(is_fluent, reasons)) / len(reasons)
