"""SynthEmo v2: per-clip observable attributes independent of the label, and a temporal cue.

v1 (`synth.py`) writes a clip's cues from its label's families, so naming them restates the
label. v2 keeps the families (they still make each view alone ambiguous) and adds, per clip,
attributes drawn independently of the label and rendered from the drawn values:

    visual  intensity (mild / strong), mouth (lopsided / even), head (tilted / upright),
            gaze (averted / direct), blinking (frequent / none), onset (sudden / slow build-up)
    vocal   pitch contour (rising / falling), pause (a long pause / fluent), speech rate
            (fast / slow), loudness (growing louder / trailing off)

The `reason` target names the clip's own attribute values; `Record.cues` holds exactly those
(the ground truth cue recall and precision count), meta["cue_options"] every phrase an attribute
could have had (naming one the clip lacks is a hallucinated cue) and meta["label_cues"] the
label-derived family cues, reported apart.

The temporal pair: worried and surprise share the raised face AND, in v2, the high voice family,
so only the expression's onset decides between them (surprise: sudden, within 2 frames; worried:
a slow build-up over about half the clip). For those two labels the onset is label-derived (in
label_cues); for the other four it is one more label-independent attribute.

`neutral_text=True` is the controlled-text variant: every subtitle (and so the speech) is an
emotion-neutral sentence. Clip i of (seed, split) depends only on (seed, split, i) and is
independent of v1's clip i (its own seed stream).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import cv2
import numpy as np
import soundfile as sf

from emo_edge.data import synth as s1
from emo_edge.data import synth_text as txt
from emo_edge.data.schema import Record
from emo_edge.labels import LABELS

VERSION = 2
VERSION_KEY = 2  # mixed into the seed sequence: v2 clip i never shares random streams with v1 clip i
# the render ranges' revision, recorded in <split>.synth.json: 2 drew the gaze and the lopsided mouth larger than 1
# (same random draws, so the same attribute values and text); scripts regenerate a split written by another
RENDER = 2

VISUAL_FAMILY = s1.VISUAL_FAMILY
AUDIO_FAMILY: dict[str, str] = {
    "neutral": "flat",
    "sad": "low",
    "worried": "high",
    "surprise": "high",
    "happy": "aroused",
    "angry": "aroused",
}
TEMPORAL_PAIR: dict[str, str] = {"surprise": "sudden", "worried": "slow"}  # onset decides within (raised, high)
PAIR_LABEL: dict[str, str] = {onset: label for label, onset in TEMPORAL_PAIR.items()}  # the pair's label by onset
assert len({(VISUAL_FAMILY[lab], AUDIO_FAMILY[lab], TEMPORAL_PAIR.get(lab)) for lab in LABELS}) == len(LABELS)

# v2 prosody families: no rate or loudness *cue* is label-derived any more (those are attributes);
# the families differ in pitch, pitch range, tremble and base amplitude.
PROSODY: dict[str, s1.Prosody] = {
    "aroused": s1.Prosody((60, 75), (170, 190), (120, 140), ("high",), "!", tremble=False, rise=False),
    "low": s1.Prosody((15, 30), (150, 170), (55, 70), ("low",), ".", tremble=True, rise=False),
    "flat": s1.Prosody((40, 52), (150, 170), (85, 100), ("x-low",), ".", tremble=False, rise=False),
    "high": s1.Prosody((85, 99), (150, 170), (95, 115), ("x-high",), ".", tremble=False, rise=False),
}
AUDIO_CUES: dict[str, tuple[str, ...]] = {
    "aroused": ("raised pitch", "a loud voice"),
    "low": ("low pitch", "a trembling voice"),
    "flat": ("medium pitch", "a calm voice"),
    "high": ("very high pitch", "a tense voice"),
}
ONSET_PHRASES: dict[str, str] = {"sudden": "a sudden onset", "slow": "a slow build-up"}


@dataclass(frozen=True)
class Attribute:
    """One label-independent attribute: its values (drawn uniformly) and the cue phrase of each."""

    name: str
    view: str  # "visual" or "vocal"
    phrases: dict[str, str]
    temporal: bool = False  # it changes over the clip: one peak frame cannot show it

    @property
    def streams(self) -> tuple[str, ...]:
        """The inputs (of image, video, audio) any of which shows the attribute: the temporal view for one that
        changes over the clip, the peak frame or the temporal view for the other visual ones, audio for the vocal."""
        if self.view == "vocal":
            return ("audio",)
        return ("video",) if self.temporal else ("image", "video")

    @property
    def values(self) -> list[str]:
        """The two values in sorted order: the first is what the attribute head's target 1 and the exported
        probability stand for."""
        return sorted(self.phrases)


ATTRIBUTES: tuple[Attribute, ...] = (
    Attribute("intensity", "visual", {"mild": "a mild expression", "strong": "a strong expression"}),
    Attribute("mouth", "visual", {"lopsided": "a lopsided mouth", "even": "an even mouth"}),
    Attribute("head", "visual", {"tilted": "a tilted head", "upright": "an upright head"}),
    Attribute("gaze", "visual", {"averted": "averted gaze", "direct": "direct gaze"}),
    Attribute("blinking", "visual", {"frequent": "frequent blinking", "none": "steady eyes"}, temporal=True),
    Attribute("onset", "visual", ONSET_PHRASES, temporal=True),
    Attribute("contour", "vocal", {"rising": "rising pitch", "falling": "falling pitch"}),
    Attribute("pause", "vocal", {"pause": "a long pause", "fluent": "fluent speech"}),
    Attribute("rate", "vocal", {"fast": "fast speech", "slow": "slow speech"}),
    Attribute("loudness", "vocal", {"louder": "a voice growing louder", "quieter": "a voice trailing off"}),
)
ATTRIBUTE = {a.name: a for a in ATTRIBUTES}

# Render ranges of each attribute value (units in the comments).
INTENSITY = {"mild": (0.45, 0.6), "strong": (0.85, 1.0)}  # expression strength at the apex
SKEW = (0.06, 0.09)  # face units: one mouth corner this much above the centre line, the other below
TILT = {"tilted": (14.0, 24.0), "upright": (0.0, 3.0)}  # |roll|, degrees
GAZE = (0.075, 0.09)  # face units of iris shift sideways (the eye half-width less the iris radius is 0.09)
BLINK_GAP = (0.55, 0.85)  # seconds between blinks when "frequent"
ONSET = {"sudden": (1.0, 2.0), "slow": (0.45, 0.6)}  # frames (sudden) or share of the clip (slow)
CONTOUR = {"rising": (0.5, 0.6), "falling": (-0.3, -0.22)}  # relative pitch change over the utterance
CONTOUR_PUNCT = {"rising": "?", "falling": "."}  # espeak's question / statement intonation under the glide
PAUSE_MS = (450, 650)
RATE = {"fast": (1.25, 1.35), "slow": (0.8, 0.88)}  # times the family's words per minute
LOUDNESS = (0.35, 0.5)  # gain at the quiet end of the ramp (the loud end is 1)


def sample_attributes(rng: np.random.Generator, label: str) -> dict[str, str]:
    """The clip's attribute values: each uniform over its values whatever the label, except the onset
    of worried / surprise, which is the label's (the temporal cue that decides that pair)."""
    if label not in LABELS:
        raise ValueError(f"unknown label {label!r}; expected one of {', '.join(LABELS)}")
    values = {a.name: str(rng.choice(sorted(a.phrases))) for a in ATTRIBUTES}
    if label in TEMPORAL_PAIR:
        values["onset"] = TEMPORAL_PAIR[label]
    return values


def free_attributes(label: str) -> list[Attribute]:
    """The attributes independent of this label: all but the onset of worried / surprise (label-derived there,
    counted with the label cues)."""
    return [a for a in ATTRIBUTES if not (a.name == "onset" and label in TEMPORAL_PAIR)]


def own_cues_by_attribute(label: str, values: dict[str, str]) -> dict[str, str]:
    """The clip's own cue phrase of each label-independent attribute, as the reason writes it, by attribute name."""
    return {a.name: txt.phrase(a.phrases[values[a.name]]) for a in free_attributes(label)}


def attribute_cues(label: str, values: dict[str, str]) -> tuple[list[str], list[str]]:
    """(the clip's own label-independent cue phrases, every phrase those attributes could have had)."""
    free = free_attributes(label)
    return [a.phrases[values[a.name]] for a in free], [p for a in free for p in a.phrases.values()]


# ---------------------------------------------------------------------------------------------
# audio
# ---------------------------------------------------------------------------------------------


def _ssml_with_pause(text: str, pause: bool, ms: int) -> str:
    """Escaped SSML body; with `pause`, a <break> of `ms` at the middle word boundary."""
    words = text.split()
    if not pause or len(words) < 2:
        return escape(text)
    k = len(words) // 2
    return f'{escape(" ".join(words[:k]))} <break time="{ms}ms"/> {escape(" ".join(words[k:]))}'


def _active_span(x: np.ndarray) -> tuple[int, int]:
    """First and last sample above -26 dB of the peak."""
    active = np.flatnonzero(np.abs(x) > 0.05 * np.abs(x).max())
    return int(active[0]), int(active[-1])


def _contour(x: np.ndarray, change: float) -> np.ndarray:
    """Glide the pitch linearly by `change` (relative) over the active speech: a time-varying resampling."""
    t0, t1 = _active_span(x)
    k = np.clip((np.arange(x.size) - t0) / max(1.0, t1 - t0), 0, 1)
    src = np.cumsum(1.0 + change * k) - 1.0  # playback rate = pitch factor
    src = src[src <= x.size - 1]
    return np.interp(src, np.arange(x.size), x).astype(np.float32)


def _loudness_ramp(x: np.ndarray, quiet: float, louder: bool) -> np.ndarray:
    """Gain ramp over the active speech from `quiet` to 1 (louder) or 1 to `quiet` (trailing off)."""
    t0, t1 = _active_span(x)
    k = np.clip((np.arange(x.size) - t0) / max(1.0, t1 - t0), 0, 1)
    gain = quiet + (1 - quiet) * (k if louder else 1 - k)
    return (x * gain).astype(np.float32)


def render_audio(rng: np.random.Generator, family: str, text: str, attrs: dict[str, str]) -> tuple[np.ndarray, dict]:
    """Clean speech of `text` in v2 prosody `family` carrying the vocal attributes, and its parameters."""
    fam = PROSODY[family]
    rate = rng.uniform(*RATE[attrs["rate"]])
    p: dict[str, Any] = {
        "voice": f"{rng.choice(s1.VOICES)}+{rng.choice(s1.VARIANTS)}",
        "pitch": int(rng.integers(fam.pitch[0], fam.pitch[1] + 1)),
        "wpm": int(round(rng.integers(fam.wpm[0], fam.wpm[1] + 1) * rate)),
        "amplitude": int(rng.integers(fam.amplitude[0], fam.amplitude[1] + 1)),
        "pitch_range": str(rng.choice(fam.ranges)),
        "pause_ms": int(rng.integers(*PAUSE_MS)) if attrs["pause"] == "pause" else 0,
        "contour": round(float(rng.uniform(*CONTOUR[attrs["contour"]])), 3),
        "loudness_quiet": round(float(rng.uniform(*LOUDNESS)), 3),
    }
    spoken = text.rstrip(".!?") + CONTOUR_PUNCT[attrs["contour"]]
    body = _ssml_with_pause(spoken, p["pause_ms"] > 0, p["pause_ms"])
    x = s1.speak_ssml(body, spoken, p["voice"], p["pitch"], p["wpm"], p["amplitude"], p["pitch_range"])
    from scipy.signal import resample_poly  # here: scipy.stats, imported with it, breaks where torch is blocked

    x = resample_poly(x, *s1.RESAMPLE).astype(np.float32)
    x = _contour(x, p["contour"])
    if fam.tremble:
        x, trem = s1._tremble(x, rng)
        p.update(trem)
    x = _loudness_ramp(x, p["loudness_quiet"], attrs["loudness"] == "louder")
    limit = int(s1.MAX_SECONDS * s1.SAMPLE_RATE)
    p["trimmed"] = bool(x.size > limit)
    if p["trimmed"]:
        x = x[:limit] * np.minimum(1.0, np.arange(limit, 0, -1) / (0.05 * s1.SAMPLE_RATE)).astype(np.float32)
    return x, p


# ---------------------------------------------------------------------------------------------
# video
# ---------------------------------------------------------------------------------------------


def onset_profile(n: int, rng: np.random.Generator, onset: str) -> tuple[np.ndarray, int, int]:
    """Per-frame expression strength in [0, 1] (neutral, onset, then held), the apex frame and onset frames.

    "sudden" reaches full strength within 1-2 frames; "slow" rises linearly over 45-60 % of the clip.
    """
    start = int(round(rng.uniform(0.1, 0.2) * n))
    frames = rng.uniform(*ONSET[onset]) * (1 if onset == "sudden" else n)
    length = max(1, int(round(frames)))
    t = np.arange(n, dtype=np.float64)
    e = np.clip((t - start + 1) / length, 0, 1)
    apex = int(min(n - 1, start + length + max(1, (n - start - length) // 3)))
    return e, apex, length


def blink_frames(n: int, rng: np.random.Generator, blinking: str, apex: int) -> tuple[np.ndarray, int]:
    """Eye-opening factor per frame (0 closed, 2-frame blinks) and the number of blinks.

    "frequent": a blink every 0.55-0.85 s, the gaps shrunk on short clips so that even the shortest
    (about 1.2 s) shows at least two; never within 2 frames of the apex (the peak frame has open eyes).
    """
    f = np.ones(n)
    if blinking == "none":
        return f, 0
    scale = min(1.0, (n - 2) / (2.5 * BLINK_GAP[1] * s1.FPS))
    count, t = 0, rng.uniform(0.15, 0.4) * s1.FPS * scale
    while t < n - 2:
        i = int(t)
        if abs(i - apex) <= 2 or abs(i + 1 - apex) <= 2:
            t = apex + 3.0
            continue
        f[i : i + 2] = 0.0
        count += 1
        t += max(3.0, rng.uniform(*BLINK_GAP) * s1.FPS * scale)
    for i in range(n - 1):  # a short clip: add blinks wherever they fit until it has two
        if count >= 2:
            break
        if f[max(0, i - 1) : i + 3].all() and abs(i - apex) > 2 and abs(i + 1 - apex) > 2:
            f[i : i + 2] = 0.0
            count += 1
    return f, count


def face_track(rng: np.random.Generator, n: int, attrs: dict[str, str]) -> tuple[list[s1.Pose], float]:
    """Head poses over the clip with the drawn tilt (roll sign random) and the base roll, degrees."""
    pose = s1.random_pose(rng, (0.5, 0.85))
    roll = rng.uniform(*TILT[attrs["head"]]) * rng.choice([-1.0, 1.0])
    pose = replace(pose, roll=float(roll))
    poses = s1.pose_track(pose, n, rng)
    return [replace(q, roll=pose.roll + 0.25 * (q.roll - pose.roll)) for q in poses], float(roll)  # small sway


@dataclass(frozen=True)
class Scene:
    """Everything that draws the clip's frames, drawn before any pixel: rendering is a pure function of it."""

    family_state: s1.FaceState
    style: str
    look: s1.Look
    poses: list
    blinks: np.ndarray
    profile: np.ndarray
    apex: int
    canvas: np.ndarray
    pan: np.ndarray
    light: np.ndarray
    intensity: float
    skew: float
    gaze: float


def draw_scene(rng: np.random.Generator, family: str, attrs: dict[str, str], n: int) -> tuple[Scene, dict]:
    target, style = s1.expression_target(family, rng)
    look = s1.random_look(rng)
    poses, roll = face_track(rng, n, attrs)
    profile, apex, onset_frames = onset_profile(n, rng, attrs["onset"])
    blinks, n_blinks = blink_frames(n, rng, attrs["blinking"], apex)
    canvas, pan = s1.make_background(rng)
    light = s1.make_lighting(rng)
    intensity = float(rng.uniform(*INTENSITY[attrs["intensity"]]))
    skew = float(rng.uniform(*SKEW) * rng.choice([-1.0, 1.0])) if attrs["mouth"] == "lopsided" else 0.0
    gaze = float(rng.uniform(*GAZE) * rng.choice([-1.0, 1.0])) if attrs["gaze"] == "averted" else 0.0
    scene = Scene(target, style, look, poses, blinks, profile, apex, canvas, pan, light, intensity, skew, gaze)
    meta = {"apex_frame": apex, "onset_frames": onset_frames, "blinks": n_blinks, "roll": round(roll, 2),
            "intensity": round(intensity, 3), "mouth_skew": round(skew, 3), "gaze_dx": round(gaze, 3),
            "mouth_style": style}
    return scene, meta


def frame_at(scene: Scene, i: int) -> np.ndarray:
    """(SIZE, SIZE, 3) uint8 BGR frame i of a scene."""
    n = len(scene.poses)
    off = (s1.BG_MARGIN + scene.pan * (i / max(1, n - 1) - 0.5)).round().astype(int)
    frame = scene.canvas[off[1] : off[1] + s1.SIZE, off[0] : off[0] + s1.SIZE].copy()
    state = s1._lerp(s1.NEUTRAL, scene.family_state, float(scene.profile[i]) * scene.intensity)
    state = replace(state, gaze_dx=scene.gaze, mouth_skew=scene.skew)
    s1.draw_face(frame, scene.poses[i], scene.look, state, scene.style, scene.blinks[i])
    return np.clip(frame * scene.light, 0, 255).astype(np.uint8)


def write_video(path: Path, scene: Scene) -> None:
    n = len(scene.poses)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), s1.FPS, (s1.SIZE, s1.SIZE))
    if not writer.isOpened():
        raise RuntimeError(f"cv2.VideoWriter could not open {path} (mp4v)")
    try:
        for i in range(n):
            writer.write(frame_at(scene, i))
    finally:
        writer.release()


# ---------------------------------------------------------------------------------------------
# targets and the record
# ---------------------------------------------------------------------------------------------

_REASON = ("The face shows {v}, which fit {vl}, with {va}. The voice has {a}, which fit {al}, with {aa}. "
           "{onset}{sub}The answer is {label}.")


def visual_cues(label: str, mouth_style: str) -> list[str]:
    """The label family's visual cues, with the frown family's mouth style."""
    vfam = VISUAL_FAMILY[label]
    return list(txt.VISUAL_CUES[vfam]) + ([txt.FROWN_MOUTH_CUES[mouth_style]] if vfam == "frown" else [])


def face_phrases(attrs: dict[str, str]) -> list[str]:
    """The phrases of the face's static attributes and blinking, in the order the targets name them."""
    return [ATTRIBUTE[k].phrases[attrs[k]] for k in ("intensity", "mouth", "head", "gaze", "blinking")]


def voice_phrases(attrs: dict[str, str]) -> list[str]:
    """The phrases of the vocal attributes, in the order the targets name them."""
    return [ATTRIBUTE[k].phrases[attrs[k]] for k in ("contour", "pause", "rate", "loudness")]


def reason_target(label: str, attrs: dict[str, str], mouth_style: str, note: str = "") -> str:
    """The reason: the label family's cues, the clip's own attribute phrases, for worried / surprise the onset
    sentence that decides the pair, the subtitle's `note`, then the label."""
    vfam, afam = VISUAL_FAMILY[label], AUDIO_FAMILY[label]
    va, aa = face_phrases(attrs), voice_phrases(attrs)
    if label not in TEMPORAL_PAIR:
        va.append(ONSET_PHRASES[attrs["onset"]])
    vl, al = txt.family_labels(vfam, VISUAL_FAMILY), txt.family_labels(afam, AUDIO_FAMILY)
    onset = f"{ONSET_PHRASES[attrs['onset']].capitalize()} points to {label}. " if label in TEMPORAL_PAIR else ""
    return _REASON.format(v=txt.join(visual_cues(label, mouth_style)), vl=vl, va=txt.join(va),
                          a=txt.join(AUDIO_CUES[afam]), al=al, aa=txt.join(aa), onset=onset, sub=note, label=label)


def think_target(reason: str, label: str) -> str:
    """The think task's target: the reason up to its conclusion, then the label."""
    return f"<think>{reason[: reason.rindex('The answer is')].strip()}</think><answer>{label}</answer>"


def write_targets(label: str, attrs: dict[str, str], vmeta: dict, sub: tuple, rng: np.random.Generator) -> dict:
    """Targets, the clip's own cues, every option and the label cues, from the drawn values."""
    vcues = visual_cues(label, vmeta["mouth_style"])
    acues = list(AUDIO_CUES[AUDIO_FAMILY[label]])
    own, options = attribute_cues(label, attrs)
    va, aa = face_phrases(attrs), voice_phrases(attrs)
    _, kind, other = sub
    reason = reason_target(label, attrs, vmeta["mouth_style"], txt._SUBTITLE_NOTES.get(kind, "").format(other=other))
    label_cues = vcues + acues + ([ONSET_PHRASES[attrs["onset"]]] if label in TEMPORAL_PAIR else [])
    targets = {
        "emotion": label,
        "image": txt.image_target(rng, vcues + va[1:5], vmeta["intensity"], False),
        "audio": txt.audio_target(rng, acues + aa),
        "reason": reason,
        "think": think_target(reason, label),
    }
    subtitle_cue = [txt.SUBTITLE_CUES[kind]] if kind in txt.SUBTITLE_CUES else []
    return {"targets": targets, "cues": [txt.phrase(c) for c in own],
            "cue_options": [txt.phrase(c) for c in options],
            "label_cues": [txt.phrase(c) for c in label_cues + subtitle_cue]}


COUNTERFACTUAL_TASKS = ("emotion", "reason", "think")  # the tasks whose answer the attributes decide or name


def counterfactual(label: str, mouth_style: str, rng: np.random.Generator) -> tuple[str, dict[str, str], dict]:
    """A clip of the same face and voice family with every attribute redrawn uniformly, the onset of worried /
    surprise included (the label is then the pair's one with that onset): its label, its values and the targets
    of `COUNTERFACTUAL_TASKS`, the reason with no subtitle note (such a clip is described without a subtitle).

    Nothing but the attribute words of a prompt can tell these values, so a language model trained on prompts
    that say them learns to take its reason's attributes, and the temporal pair's label, from those words."""
    values = {a.name: str(rng.choice(sorted(a.phrases))) for a in ATTRIBUTES}
    if label in TEMPORAL_PAIR:
        label = PAIR_LABEL[values["onset"]]
    reason = reason_target(label, values, mouth_style)
    return label, values, {"emotion": label, "reason": reason, "think": think_target(reason, label)}


def choose_subtitle(rng: np.random.Generator, label: str, neutral_text: bool) -> tuple[str, str, str | None]:
    if neutral_text:
        return str(rng.choice(txt.NEUTRAL_SENTENCES)), "neutral", None
    return s1.choose_subtitle(rng, label)


def clip_streams(seed: int, split: str, index: int) -> list[np.random.Generator]:
    """The clip's independent random streams: attributes, text, face, audio, targets."""
    seq = np.random.SeedSequence([seed, s1._split_key(split), index, VERSION_KEY])
    return [np.random.default_rng(s) for s in seq.spawn(5)]


def render_clip(out: Path, seed: int, split: str, index: int, neutral_text: bool = False) -> Record:
    """Render v2 clip `index` of (seed, split) into out/<split>/ and return its record."""
    cid, label = s1.clip_id(split, index), s1.label_for(seed, split, index)
    r_attr, r_text, r_face, r_audio, r_targets = clip_streams(seed, split, index)
    attrs = sample_attributes(r_attr, label)
    sub = choose_subtitle(r_text, label, neutral_text)
    speech, ameta = render_audio(r_audio, AUDIO_FAMILY[label], sub[0], attrs)
    n_frames = min(s1.MAX_FRAMES, math.ceil(speech.size / s1.SAMPLE_RATE * s1.FPS))
    audio, nmeta = s1.finish_audio(speech, n_frames * s1.SAMPLE_RATE // s1.FPS, r_audio)
    scene, vmeta = draw_scene(r_face, VISUAL_FAMILY[label], attrs, n_frames)
    media = out / split
    tmp_video, tmp_audio = media / f"{cid}.part.mp4", media / f"{cid}.part.wav"
    write_video(tmp_video, scene)
    sf.write(tmp_audio, audio, s1.SAMPLE_RATE, subtype="PCM_16")
    os.replace(tmp_video, media / f"{cid}.mp4")
    os.replace(tmp_audio, media / f"{cid}.wav")
    vmeta.update(n_frames=n_frames, fps=s1.FPS, size=s1.SIZE, face_box=s1.face_box(scene.poses[scene.apex]),
                 visual_family=VISUAL_FAMILY[label], distractor=False)
    ameta.update(nmeta, audio_family=AUDIO_FAMILY[label], seconds=round(audio.size / s1.SAMPLE_RATE, 4))
    t = write_targets(label, attrs, vmeta, sub, r_targets)
    valence, arousal = s1._valence_arousal(r_targets, label, vmeta["intensity"])
    meta = {**vmeta, **ameta, "synth_version": VERSION, "neutral_text": neutral_text, "attributes": attrs,
            "cue_options": t["cue_options"], "label_cues": t["label_cues"],
            "families": [VISUAL_FAMILY[label], AUDIO_FAMILY[label]], "subtitle_kind": sub[1],
            "subtitle_source": sub[2], "seed": seed, "index": index}
    return Record(id=cid, dataset=s1.DATASET, video=f"{split}/{cid}.mp4", audio=f"{split}/{cid}.wav",
                  subtitle=sub[0], label=label, targets=t["targets"], cues=t["cues"], valence=valence,
                  arousal=arousal, split=split, meta=meta)
