"""SynthEmo: a generated audio-visual emotion data set where the fusion of face and voice is needed.

Each clip is a procedurally drawn face (OpenCV) over a cluttered background, anywhere in the
frame and at any size (no face detector can be assumed), plus real TTS speech (espeak-ng) with
family-dependent prosody and noise. The six labels are split over expression families and prosody
families such that each modality alone is ambiguous for some label pairs but the pair decides:

    label     face family                          voice family
    neutral   downcast (flat mouth, level brows)   flat     (medium pitch, steady pace)
    sad       downcast                             low      (low pitch, slow, quiet, trembling)
    worried   raised   (raised brows, wide eyes)   low
    surprise  raised                               exclaim  (very high pitch, rising)
    happy     smile    (broad smile)               aroused  (raised pitch, fast, loud)
    angry     frown    (V brows, narrowed eyes)    aroused

Within a family the render parameters are drawn from the same distribution whatever the label,
so e.g. a neutral and a sad face are indistinguishable. Every text target is written from the
parameters that rendered the clip (see `synth_text.py`).

Layout: `out/<split>/<id>.mp4`, `out/<split>/<id>.wav` and `out/<split>.jsonl`, paths relative
to `out`. Clip i of (seed, split) depends only on (seed, split, i), so runs are deterministic
whatever the number of workers.
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import struct
import subprocess
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import cv2
import numpy as np
import soundfile as sf
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from emo_edge.audio import SAMPLE_RATE  # Hz, of the written wav
from emo_edge.data import SYNTH_DEFAULT_VERSION, SYNTH_VERSIONS
from emo_edge.data import synth_text as txt
from emo_edge.data.schema import Record, write_jsonl
from emo_edge.labels import LABELS, VALENCE_AROUSAL

DATASET = "SynthEmo"
STANDARD_SIZES: dict[str, int] = {"train": 3000, "val": 600, "test": 600}

SIZE = 160  # video frame side, px
FPS = 15
ESPEAK_RATE = 22_050  # Hz, espeak-ng output
RESAMPLE = (320, 441)  # 22050 * 320 / 441 = 16000
MAX_SECONDS = 4.0
MAX_FRAMES = int(MAX_SECONDS * FPS)
assert ESPEAK_RATE * RESAMPLE[0] == SAMPLE_RATE * RESAMPLE[1]

VISUAL_FAMILY: dict[str, str] = {
    "neutral": "downcast",
    "sad": "downcast",
    "worried": "raised",
    "surprise": "raised",
    "happy": "smile",
    "angry": "frown",
}
AUDIO_FAMILY: dict[str, str] = {
    "neutral": "flat",
    "sad": "low",
    "worried": "low",
    "surprise": "exclaim",
    "happy": "aroused",
    "angry": "aroused",
}
assert len({(VISUAL_FAMILY[lab], AUDIO_FAMILY[lab]) for lab in LABELS}) == len(LABELS), "families must decide the label"

# ---------------------------------------------------------------------------------------------
# Audio: espeak-ng speech with family prosody, tremble, noise, gain
# ---------------------------------------------------------------------------------------------

VOICES: tuple[str, ...] = ("en", "en-us", "en-gb-scotland", "en-029", "en-us-nyc")
VARIANTS: tuple[str, ...] = (*(f"m{i}" for i in range(1, 8)), *(f"f{i}" for i in range(1, 6)))
NOISES: tuple[str, ...] = ("white", "pink", "brown", "hum")


@dataclass(frozen=True)
class Prosody:
    """One prosody family: uniform ranges of espeak-ng settings (-p 0-99, -s wpm, -a 0-200)."""

    pitch: tuple[float, float]
    wpm: tuple[float, float]
    amplitude: tuple[float, float]
    ranges: tuple[str, ...]  # SSML <prosody range=...> choices (pitch excursion)
    punct: str  # sentence end spoken: "?" gives espeak's rising contour
    tremble: bool  # shaky voice (post-processing)
    rise: bool  # pitch glide up over the end of the utterance (post-processing)


PROSODY: dict[str, Prosody] = {
    "aroused": Prosody((60, 78), (190, 225), (115, 140), ("high",), "!", tremble=False, rise=False),
    "low": Prosody((15, 35), (105, 135), (45, 65), ("low", "medium"), ".", tremble=True, rise=False),
    "flat": Prosody((40, 55), (150, 170), (80, 100), ("x-low",), ".", tremble=False, rise=False),
    "exclaim": Prosody((85, 99), (160, 182), (95, 115), ("x-high",), "?", tremble=False, rise=True),
}
SNR_DB = (10.0, 30.0)
GAIN_DB = (-3.0, 3.0)
BASE_GAIN = 0.7  # headroom: loud espeak speech peaks near full scale


def _pcm_from_wav_bytes(data: bytes) -> np.ndarray:
    """Float samples of a 16-bit mono RIFF stream; espeak's --stdout leaves the sizes unset."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("espeak-ng did not write a WAV stream")
    pos = 12
    while pos + 8 <= len(data):
        chunk, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        if chunk == b"data":
            pcm = np.frombuffer(data[pos + 8 : len(data) - (len(data) - pos - 8) % 2], dtype="<i2")
            return pcm.astype(np.float32) / 32768.0
        pos += 8 + size
    raise ValueError("espeak-ng WAV stream has no data chunk")


def speak(text: str, voice: str, pitch: int, wpm: int, amplitude: int, prange: str) -> np.ndarray:
    """espeak-ng speech at ESPEAK_RATE; raises RuntimeError with espeak's message on failure."""
    return speak_ssml(escape(text), text, voice, pitch, wpm, amplitude, prange)


def speak_ssml(body: str, text: str, voice: str, pitch: int, wpm: int, amplitude: int, prange: str) -> np.ndarray:
    """`speak` of an SSML `body` (already escaped; may hold <break/> elements); `text` names it in errors."""
    ssml = f'<speak><prosody range="{prange}">{body}</prosody></speak>'
    cmd = ["espeak-ng", "--stdout", "-m", "-v", voice, "-p", str(pitch), "-s", str(wpm), "-a", str(amplitude), ssml]
    try:
        res = subprocess.run(cmd, capture_output=True, check=True, timeout=30)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, FileNotFoundError) as e:
        err = getattr(e, "stderr", b"") or b""
        raise RuntimeError(f"espeak-ng failed ({e}): {err.decode(errors='replace').strip()}") from e
    x = _pcm_from_wav_bytes(res.stdout)
    if x.size == 0 or not np.any(x):
        raise RuntimeError(f"espeak-ng produced no speech for {text!r} with voice {voice}")
    return x


def _tremble(x: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, float]]:
    """Periodic amplitude and pitch modulation (a shaky voice): AM plus a sinusoidal time warp."""
    rate, am, fm = rng.uniform(5.0, 8.0), rng.uniform(0.25, 0.4), rng.uniform(0.03, 0.05)
    phase = rng.uniform(0, 2 * np.pi)
    t = np.arange(x.size) / SAMPLE_RATE
    w = 2 * np.pi * rate * t + phase
    # instantaneous playback rate 1 + fm*cos(w) -> pitch deviates by +-fm
    src = (t + fm / (2 * np.pi * rate) * np.sin(w)) * SAMPLE_RATE
    y = np.interp(src, np.arange(x.size), x).astype(np.float32)
    y *= (1.0 + am * np.sin(w)).astype(np.float32)
    return y, {"tremble_hz": round(rate, 2), "tremble_am": round(am, 3), "tremble_fm": round(fm, 3)}


def _rising_glide(x: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, float]]:
    """Raise the pitch smoothly by `glide` over the last part of the speech (a time-varying resampling)."""
    glide, share = rng.uniform(0.2, 0.35), rng.uniform(0.35, 0.5)
    active = np.flatnonzero(np.abs(x) > 0.05 * np.abs(x).max())
    t0, t1 = active[-1] - share * (active[-1] - active[0]), active[-1]
    k = np.clip((np.arange(x.size) - t0) / max(1.0, t1 - t0), 0, 1)
    src = np.cumsum(1.0 + glide * (3 * k**2 - 2 * k**3)) - 1.0  # playback rate = pitch factor
    src = src[src <= x.size - 1]
    return np.interp(src, np.arange(x.size), x).astype(np.float32), {"glide": round(glide, 3)}


def _noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS noise: white, pink (1/f power), brown (1/f^2) or a mains hum with harmonics."""
    if kind == "hum":
        t = np.arange(n) / SAMPLE_RATE
        f0 = rng.choice([50.0, 60.0])
        y = sum(a * np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 2 * np.pi)) for k, a in ((1, 1), (2, 0.5), (3, 0.3)))
        y = y + 0.05 * rng.standard_normal(n)
    else:
        spec = np.fft.rfft(rng.standard_normal(n))
        f = np.maximum(np.fft.rfftfreq(n, 1 / SAMPLE_RATE), 20.0)
        spec *= {"white": 1.0, "pink": f**-0.5, "brown": f**-1.0}[kind]
        y = np.fft.irfft(spec, n)
    return (y / (np.sqrt(np.mean(y**2)) + 1e-12)).astype(np.float32)


def _speech_power(x: np.ndarray) -> float:
    """Mean power over the active part (samples above -40 dB of the peak)."""
    active = x[np.abs(x) > 0.01 * np.abs(x).max()]
    return float(np.mean(active**2)) if active.size else float(np.mean(x**2))


def render_audio(rng: np.random.Generator, family: str, text: str) -> tuple[np.ndarray, dict[str, Any]]:
    """Speech of `text` in prosody `family` at SAMPLE_RATE (clean, trimmed to MAX_SECONDS) + its params."""
    fam = PROSODY[family]
    p = {
        "voice": f"{rng.choice(VOICES)}+{rng.choice(VARIANTS)}",
        "pitch": int(rng.integers(fam.pitch[0], fam.pitch[1] + 1)),
        "wpm": int(rng.integers(fam.wpm[0], fam.wpm[1] + 1)),
        "amplitude": int(rng.integers(fam.amplitude[0], fam.amplitude[1] + 1)),
        "pitch_range": str(rng.choice(fam.ranges)),
    }
    spoken = text.rstrip(".!?") + fam.punct
    x = speak(spoken, p["voice"], p["pitch"], p["wpm"], p["amplitude"], p["pitch_range"])
    from scipy.signal import resample_poly  # here: scipy.stats, imported with it, breaks where torch is blocked

    x = resample_poly(x, *RESAMPLE).astype(np.float32)
    if fam.tremble:
        x, trem = _tremble(x, rng)
        p.update(trem)
    if fam.rise:
        x, glide = _rising_glide(x, rng)
        p.update(glide)
    limit = int(MAX_SECONDS * SAMPLE_RATE)
    p["trimmed"] = bool(x.size > limit)
    if p["trimmed"]:
        x = x[:limit] * np.minimum(1.0, np.arange(limit, 0, -1) / (0.05 * SAMPLE_RATE)).astype(np.float32)
    return x, p


def finish_audio(speech: np.ndarray, n_samples: int, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    """Pad `speech` to n_samples, apply a random gain and add noise at a random SNR."""
    kind = str(rng.choice(NOISES))
    snr_db, gain_db = rng.uniform(*SNR_DB), rng.uniform(*GAIN_DB)
    x = np.zeros(n_samples, np.float32)
    m = min(speech.size, n_samples)
    x[:m] = speech[:m]
    x *= BASE_GAIN * 10 ** (gain_db / 20)
    noise_rms = math.sqrt(_speech_power(x) / 10 ** (snr_db / 10))
    x += noise_rms * _noise(kind, n_samples, rng)
    return np.clip(x, -1.0, 1.0), {"noise": kind, "snr_db": round(snr_db, 2), "gain_db": round(gain_db, 2)}


# ---------------------------------------------------------------------------------------------
# Face: canonical geometry (face half-height = 1 unit, y down), expression state, drawing
# ---------------------------------------------------------------------------------------------

HEAD_W = 0.75  # head half-width
EYE_X, EYE_Y, EYE_W, EYE_OPEN, IRIS_R = 0.3, -0.12, 0.16, 0.08, 0.07
BROW_Y, BROW_IN, BROW_OUT = -0.36, 0.1, 0.45
MOUTH_Y, MOUTH_W = 0.5, 0.26
FEATURE_DEPTH = 0.3  # how far the features shift sideways per unit sin(yaw)
SHIFT = 4  # cv2 fractional bits for subpixel, antialiased drawing
_ARC = np.linspace(0, np.pi, 9)
_CIRCLE = np.linspace(0, 2 * np.pi, 33)[:-1]


@dataclass(frozen=True)
class FaceState:
    """Expression of one frame; the neutral face is the default. Lengths in face units."""

    brow_raise: float = 0.0  # both brow ends up
    brow_arch: float = 0.03  # brow middle above its ends
    brow_inner: float = 0.0  # inner ends down (a V when > 0)
    eye_up: float = EYE_OPEN  # upper lid above the eye line
    eye_low: float = EYE_OPEN  # lower lid below the eye line (< 0: pushed up into a crescent)
    gaze_dy: float = 0.0
    gaze_dx: float = 0.0  # iris sideways (SynthEmo v2's averted gaze), face units
    mouth_w: float = MOUTH_W
    mouth_dy: float = 0.0  # corners below the centre line (< 0: upturned)
    mouth_open: float = 0.0
    lip_press: float = 0.0
    cheeks: float = 0.0
    mouth_skew: float = 0.0  # right corner above the left one by 2 * mouth_skew (v2's lopsided mouth)


NEUTRAL = FaceState()
MOUTH_STYLES = ("line", "oval", "smile", "teeth", "pressed")


def _lerp(a: FaceState, b: FaceState, k: float) -> FaceState:
    return FaceState(**{f: getattr(a, f) + k * (getattr(b, f) - getattr(a, f)) for f in a.__dataclass_fields__})


def expression_target(family: str, rng: np.random.Generator) -> tuple[FaceState, str]:
    """The full-strength expression of a visual family and its mouth style; label-blind by design."""
    u = rng.uniform
    if family == "downcast":
        return FaceState(
            brow_arch=0.0,
            brow_raise=-0.02,
            eye_up=EYE_OPEN * u(0.3, 0.45),
            gaze_dy=0.025,
            mouth_dy=u(0.06, 0.1),
            mouth_w=MOUTH_W * u(0.9, 1.0),
        ), "line"
    if family == "raised":
        return FaceState(
            brow_raise=u(0.1, 0.14),
            brow_arch=u(0.04, 0.07),
            eye_up=EYE_OPEN * u(1.5, 1.8),
            eye_low=EYE_OPEN * u(1.2, 1.4),
            mouth_open=u(0.12, 0.22),
            mouth_w=MOUTH_W * u(0.5, 0.65),
        ), "oval"
    if family == "smile":
        return FaceState(
            eye_up=EYE_OPEN * u(0.6, 0.8),
            eye_low=u(-0.015, 0.01),
            mouth_dy=u(-0.16, -0.11),
            mouth_w=MOUTH_W * u(1.2, 1.4),
            mouth_open=u(0.1, 0.16),
            cheeks=1.0,
        ), "smile"
    if family == "frown":
        style = "teeth" if rng.random() < 0.5 else "pressed"
        opened = u(0.18, 0.24) if style == "teeth" else 0.0
        return FaceState(
            brow_raise=-0.03,
            brow_arch=-0.01,
            brow_inner=u(0.1, 0.15),
            eye_up=EYE_OPEN * u(0.4, 0.55),
            eye_low=EYE_OPEN * u(0.5, 0.7),
            mouth_dy=u(0.0, 0.03),
            mouth_open=opened,
            lip_press=1.0,
            mouth_w=MOUTH_W * u(0.8, 0.95),
        ), style
    raise ValueError(f"unknown visual family {family!r}; expected one of {', '.join(txt.VISUAL_CUES)}")


@dataclass(frozen=True)
class Look:
    """Per-face appearance (BGR colours)."""

    skin: tuple[float, float, float]
    hair: tuple[float, float, float] | None
    hair_style: str
    iris: tuple[float, float, float]

    def shade(self, k: float) -> tuple[float, float, float]:
        return tuple(c * k for c in self.skin)


SKINS = ((185, 205, 240), (160, 185, 230), (130, 165, 215), (100, 135, 190), (75, 105, 155), (55, 80, 120))
HAIRS = ((20, 20, 25), (30, 45, 70), (60, 110, 160), (150, 150, 155), (40, 60, 140), (25, 30, 45))
IRISES = ((30, 50, 80), (100, 70, 40), (60, 90, 60), (20, 25, 30))


def random_look(rng: np.random.Generator) -> Look:
    skin = np.array(SKINS[rng.integers(len(SKINS))]) * rng.uniform(0.92, 1.06, 3)
    hair = HAIRS[rng.integers(len(HAIRS))] if rng.random() < 0.75 else None
    return Look(
        tuple(np.clip(skin, 0, 255).tolist()), hair, str(rng.choice(["cap", "long"])), IRISES[rng.integers(len(IRISES))]
    )


@dataclass(frozen=True)
class Pose:
    cx: float  # centre, px
    cy: float
    scale: float  # px per face unit (face height = 2 * scale)
    roll: float  # degrees, in-plane
    yaw: float  # degrees, approximated by horizontal squash and feature shift


def _to_px(pts: np.ndarray, pose: Pose, depth: float = 1.0) -> np.ndarray:
    """Canonical (N, 2) points -> int32 cv2 points with SHIFT fractional bits."""
    yaw, roll = math.radians(pose.yaw), math.radians(pose.roll)
    x = pts[:, 0] * math.cos(yaw) + depth * FEATURE_DEPTH * math.sin(yaw)
    y = pts[:, 1]
    c, s = math.cos(roll), math.sin(roll)
    px = pose.cx + pose.scale * (c * x - s * y)
    py = pose.cy + pose.scale * (s * x + c * y)
    return np.round(np.stack([px, py], 1) * (1 << SHIFT)).astype(np.int32)


def _ellipse(cx: float, cy: float, rx: float, ry: float, angles: np.ndarray = _CIRCLE) -> np.ndarray:
    return np.stack([cx + rx * np.cos(angles), cy + ry * np.sin(angles)], 1)


def _quad(p0: tuple[float, float], mid: tuple[float, float], p1: tuple[float, float], n: int = 9) -> np.ndarray:
    """Quadratic curve from p0 to p1 passing through `mid` at its half-way point."""
    a, m, b = np.array(p0), np.array(mid), np.array(p1)
    ctrl = 2 * m - (a + b) / 2
    t = np.linspace(0, 1, n)[:, None]
    return (1 - t) ** 2 * a + 2 * (1 - t) * t * ctrl + t**2 * b


class Painter:
    """Draws canonical shapes of one face onto a frame with its pose; line widths scale with size."""

    def __init__(self, img: np.ndarray, pose: Pose):
        self.img, self.pose = img, pose
        self.line = max(2, round(0.1 * pose.scale))  # >= 2 px even for the smallest faces

    def fill(self, pts: np.ndarray, color, depth: float = 1.0) -> None:
        cv2.fillPoly(self.img, [_to_px(pts, self.pose, depth)], color, cv2.LINE_AA, SHIFT)

    def stroke(self, pts: np.ndarray, color, width: float = 1.0, closed: bool = False, depth: float = 1.0) -> None:
        thick = max(1, round(self.line * width))
        cv2.polylines(self.img, [_to_px(pts, self.pose, depth)], closed, color, thick, cv2.LINE_AA, SHIFT)


class SkewedPainter(Painter):
    """A Painter that shears what it draws vertically about x = 0: y -= skew * x / MOUTH_W (a lopsided mouth)."""

    def __init__(self, img: np.ndarray, pose: Pose, skew: float):
        super().__init__(img, pose)
        self.skew = skew

    def _shear(self, pts: np.ndarray) -> np.ndarray:
        return np.stack([pts[:, 0], pts[:, 1] - self.skew * pts[:, 0] / MOUTH_W], 1)

    def fill(self, pts: np.ndarray, color, depth: float = 1.0) -> None:
        super().fill(self._shear(pts), color, depth)

    def stroke(self, pts: np.ndarray, color, width: float = 1.0, closed: bool = False, depth: float = 1.0) -> None:
        super().stroke(self._shear(pts), color, width, closed, depth)


def _draw_head(p: Painter, look: Look) -> None:
    neck = np.array([[-0.33, 0.6], [0.33, 0.6], [0.38, 1.8], [-0.38, 1.8]])
    p.fill(neck, look.shade(0.8), depth=0.0)
    if look.hair is not None and look.hair_style == "long":
        p.fill(_ellipse(0, 0.05, HEAD_W * 1.2, 1.12), look.hair, depth=-0.2)
    for sx in (-1, 1):
        p.fill(_ellipse(sx * HEAD_W, 0.0, 0.1, 0.18), look.shade(0.9), depth=0.0)
    p.fill(_ellipse(0, 0, HEAD_W, 1.0), look.skin, depth=0.0)
    p.stroke(_ellipse(0, 0, HEAD_W, 1.0), look.shade(0.6), width=0.5, closed=True, depth=0.0)
    if look.hair is not None:
        top = _ellipse(0, 0, HEAD_W * 1.04, 1.06, np.linspace(np.pi * 1.08, np.pi * 1.92, 15))
        fringe = _quad((HEAD_W * 0.83, -0.6), (0.0, -0.76), (-HEAD_W * 0.83, -0.6))
        p.fill(np.concatenate([top, fringe]), look.hair, depth=0.3)


def _draw_eye(p: Painter, look: Look, sx: int, st: FaceState, blink: float) -> None:
    ex = sx * EYE_X
    up, low = st.eye_up * blink, st.eye_low * blink
    upper = _ellipse(ex, EYE_Y, EYE_W, up, np.pi + _ARC)  # left to right over the top
    lower = _ellipse(ex, EYE_Y, EYE_W, low, _ARC)  # right to left under the bottom
    base_upper = _ellipse(ex, EYE_Y, EYE_W, max(EYE_OPEN, st.eye_up) + 0.02, np.pi + _ARC)
    p.fill(np.concatenate([base_upper, upper[::-1]]), look.shade(0.82))  # eyelid above the opening
    if up + low > 0.02:
        p.fill(np.concatenate([upper, lower]), (235, 238, 240))
        r = min(IRIS_R, (up + low) / 2)
        iy = EYE_Y + (low - up) / 2 + st.gaze_dy
        ix = ex + st.gaze_dx
        p.fill(_ellipse(ix, iy, r, r), look.iris)
        p.fill(_ellipse(ix, iy, r * 0.45, r * 0.45), (10, 10, 10))
        p.stroke(lower, look.shade(0.45), width=0.5)
    p.stroke(upper, look.shade(0.25), width=0.8)


def _draw_brows(p: Painter, look: Look, st: FaceState) -> None:
    color = tuple(0.5 * c for c in look.hair) if look.hair is not None else look.shade(0.22)
    for sx in (-1, 1):
        inner = (sx * BROW_IN * (1 - 2.0 * st.brow_inner), BROW_Y - st.brow_raise + st.brow_inner)
        outer = (sx * BROW_OUT, BROW_Y - st.brow_raise - 0.3 * st.brow_inner)
        mid = ((inner[0] + outer[0]) / 2, (inner[1] + outer[1]) / 2 - st.brow_arch)
        p.stroke(_quad(inner, mid, outer), color, width=1.6)
    if st.brow_inner > 0.05:  # vertical creases between pulled-down brows
        for sx in (-1, 1):
            p.stroke(np.array([[sx * 0.04, BROW_Y - 0.02], [sx * 0.05, BROW_Y + 0.12]]), look.shade(0.5), width=0.6)


def _draw_cheeks(p: Painter, look: Look, st: FaceState) -> None:
    if st.cheeks < 0.2:
        return
    blush = tuple(c * (1 - 0.3 * st.cheeks) + (40, 40, 230)[i] * 0.3 * st.cheeks for i, c in enumerate(look.skin))
    for sx in (-1, 1):
        p.fill(_ellipse(sx * 0.42, 0.16, 0.14, 0.1), blush)
        fold = _quad((sx * 0.2, 0.22), (sx * 0.33, 0.36), (sx * (MOUTH_W + 0.1), 0.48))
        p.stroke(fold, look.shade(0.5), width=0.6 * st.cheeks)


def _draw_mouth(p: Painter, look: Look, st: FaceState, style: str) -> None:
    lip = (look.skin[0] * 0.45, look.skin[1] * 0.4, min(255.0, look.skin[2] * 0.6 + 40))
    left, right = (-st.mouth_w, MOUTH_Y + st.mouth_dy), (st.mouth_w, MOUTH_Y + st.mouth_dy)
    bulge = 0.35 * st.mouth_dy  # the middle moves less than the corners
    upper = _quad(left, (0.0, MOUTH_Y + bulge), right)
    if st.mouth_open < 0.02:
        p.stroke(upper, lip if style != "pressed" else look.shade(0.3), width=1.2 + 0.6 * st.lip_press)
    elif style == "oval":
        ring = _ellipse(0.0, MOUTH_Y + st.mouth_open / 2 - 0.02, st.mouth_w, st.mouth_open / 2 + 0.03)
        p.fill(ring, (30, 20, 60))
        p.stroke(ring, lip, width=0.7, closed=True)
    elif style == "teeth":
        _draw_teeth(p, look, st, lip)
    else:  # an open smile: dark inside, upper teeth showing
        lower = _quad(right, (0.0, MOUTH_Y + bulge + st.mouth_open), left)
        p.fill(np.concatenate([upper, lower]), (30, 20, 60))
        teeth_low = _quad(right, (0.0, MOUTH_Y + bulge + 0.4 * st.mouth_open), left)
        p.fill(np.concatenate([upper, teeth_low]), (225, 235, 240))
        p.stroke(np.concatenate([upper, lower]), lip, width=0.7, closed=True)


def _draw_teeth(p: Painter, look: Look, st: FaceState, lip: tuple) -> None:
    """Bared teeth: a wide, squarish opening with both rows of teeth showing."""
    w, y, h = st.mouth_w, MOUTH_Y + st.mouth_dy, st.mouth_open / 2
    box = np.array([[-w, y], [-0.8 * w, y - h], [0.8 * w, y - h], [w, y], [0.8 * w, y + h], [-0.8 * w, y + h]])
    p.fill(box, (225, 235, 240))
    p.stroke(np.array([[-w, y], [w, y]]), look.shade(0.35), width=0.6)
    for x in (-0.4, 0.0, 0.4):
        p.stroke(np.array([[x * w, y - h], [x * w, y + h]]), look.shade(0.55), width=0.4)
    p.stroke(box, lip, width=0.5, closed=True)


def draw_face(img: np.ndarray, pose: Pose, look: Look, st: FaceState, style: str, blink: float = 1.0) -> None:
    """Draw one face in place; `blink` in [0, 1] scales the eye opening (0 = closed)."""
    p = Painter(img, pose)
    _draw_head(p, look)
    _draw_cheeks(p, look, st)
    for sx in (-1, 1):
        _draw_eye(p, look, sx, st, blink)
    _draw_brows(p, look, st)
    p.stroke(np.array([[0.0, -0.02], [-0.06, 0.24], [0.04, 0.27]]), look.shade(0.55), width=0.6)
    _draw_mouth(SkewedPainter(img, pose, st.mouth_skew) if st.mouth_skew else p, look, st, style)


# ---------------------------------------------------------------------------------------------
# Clip: background, lighting, timing (expression profile, blinks, head motion), video writing
# ---------------------------------------------------------------------------------------------

BG_MARGIN = 16  # px of extra canvas around the frame for background panning


def _color(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(0, 256, 3))


def make_background(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A cluttered canvas (SIZE + 2 * BG_MARGIN square) and its pan over the clip (dx, dy in px)."""
    side = SIZE + 2 * BG_MARGIN
    a, b = np.array(_color(rng), np.float32), np.array(_color(rng), np.float32)
    ang = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) / side
    t = np.clip(0.5 + (xx - 0.5) * math.cos(ang) + (yy - 0.5) * math.sin(ang), 0, 1)[..., None]
    canvas = np.ascontiguousarray((a * (1 - t) + b * t).astype(np.uint8))
    for _ in range(rng.integers(6, 15)):
        _clutter_shape(canvas, rng, side)
    blotches = cv2.resize(
        rng.normal(0, 18, (12, 12, 3)).astype(np.float32), (side, side), interpolation=cv2.INTER_CUBIC
    )
    grain = rng.normal(0, 5, (side, side, 3)).astype(np.float32)
    canvas = np.clip(canvas + blotches + grain, 0, 255).astype(np.uint8)
    pan = rng.uniform(-BG_MARGIN, BG_MARGIN, 2) if rng.random() < 0.5 else np.zeros(2)
    return canvas, pan


def _clutter_shape(canvas: np.ndarray, rng: np.random.Generator, side: int) -> None:
    kind = rng.integers(4)
    p = rng.integers(0, side, 2)
    color = _color(rng)
    if kind == 0:
        q = p + rng.integers(10, side // 2, 2)
        cv2.rectangle(
            canvas, tuple(int(v) for v in p), tuple(int(v) for v in q), color, -1 if rng.random() < 0.6 else 2
        )
    elif kind == 1:
        cv2.circle(
            canvas,
            tuple(int(v) for v in p),
            int(rng.integers(5, side // 4)),
            color,
            -1 if rng.random() < 0.6 else 2,
            cv2.LINE_AA,
        )
    elif kind == 2:
        q = rng.integers(0, side, 2)
        cv2.line(
            canvas, tuple(int(v) for v in p), tuple(int(v) for v in q), color, int(rng.integers(1, 5)), cv2.LINE_AA
        )
    else:
        pts = (p + rng.integers(-side // 5, side // 5, (int(rng.integers(3, 6)), 2))).astype(np.int32)
        cv2.fillPoly(canvas, [pts], color, cv2.LINE_AA)


def make_lighting(rng: np.random.Generator) -> np.ndarray:
    """(SIZE, SIZE, 1) float32 gain map: overall gain times a linear brightness gradient."""
    gain, slope, ang = rng.uniform(0.75, 1.15), rng.uniform(0.0, 0.35), rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32) / SIZE - 0.5
    return (gain * (1 + slope * 2 * (xx * math.cos(ang) + yy * math.sin(ang))))[..., None].astype(np.float32)


def expression_profile(n: int, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Per-frame expression strength in [0, 1]: neutral, onset, apex hold, partial offset; apex index."""
    start = rng.uniform(0.05, 0.2) * n
    onset = max(2.0, rng.uniform(0.15, 0.3) * n)
    hold = max(1.0, rng.uniform(0.15, 0.35) * n)
    residual = rng.uniform(0.3, 0.7)
    t = np.arange(n, dtype=np.float64)
    rise = np.clip((t - start) / onset, 0, 1)
    fall_t = np.clip((t - start - onset - hold) / max(1.0, n - start - onset - hold), 0, 1)
    e = rise * (1 - (1 - residual) * fall_t)
    e = 0.5 - 0.5 * np.cos(np.pi * e)  # ease in and out
    apex = int(min(n - 1, round(start + onset + hold / 2)))
    return e, apex


def blink_track(n: int, rng: np.random.Generator) -> np.ndarray:
    """Per-frame eye opening factor: lids close for 2-3 frames at random times (~every 2-4 s)."""
    f = np.ones(n)
    t = rng.uniform(0, 1.5) * FPS
    while t < n:
        i, length = int(t), int(rng.integers(2, 4))
        f[i : i + length] = 0.0
        if i > 0:
            f[i - 1] = min(f[i - 1], 0.5)
        if i + length < n:
            f[i + length] = 0.5
        t += rng.uniform(2.0, 4.0) * FPS
    return f


def random_pose(rng: np.random.Generator, height_frac: tuple[float, float]) -> Pose:
    """A pose whose head is fully or mostly (>= ~85 % of its radius) inside the frame."""
    scale = rng.uniform(*height_frac) * SIZE / 2
    lo, hi = 0.85 * scale, SIZE - 0.85 * scale
    return Pose(rng.uniform(lo, hi), rng.uniform(lo, hi), scale, rng.uniform(-20, 20), rng.uniform(-30, 30))


def pose_track(base: Pose, n: int, rng: np.random.Generator) -> list[Pose]:
    """Gentle head motion: a slow drift plus a small sway in position, roll and yaw."""
    drift = rng.uniform(-5, 5, 2)
    freq, phase = rng.uniform(0.2, 0.6), rng.uniform(0, 2 * np.pi, 3)
    amp = rng.uniform(0.5, 2.5)
    out = []
    for i in range(n):
        k, w = i / max(1, n - 1), 2 * np.pi * freq * i / FPS
        out.append(
            replace(
                base,
                cx=base.cx + drift[0] * k + amp * math.sin(w + phase[0]),
                cy=base.cy + drift[1] * k + amp * math.sin(w + phase[1]) * 0.6,
                roll=base.roll + 2.0 * math.sin(w + phase[2]),
                yaw=base.yaw + 3.0 * math.sin(w * 0.7 + phase[1]),
            )
        )
    return out


def face_box(pose: Pose) -> list[float]:
    """[x0, y0, x1, y1] px of the head outline (unclipped) for a pose."""
    pts = _to_px(_ellipse(0, 0, HEAD_W, 1.0), pose, 0.0) / (1 << SHIFT)
    return [round(float(v), 1) for v in (*pts.min(0), *pts.max(0))]


def _distractor(rng: np.random.Generator, main: Pose) -> Pose:
    """A smaller background face placed as far from the main face as a few tries allow."""
    cands = [random_pose(rng, (0.2, 0.3)) for _ in range(6)]
    return max(cands, key=lambda q: (q.cx - main.cx) ** 2 + (q.cy - main.cy) ** 2)


def render_video(path: Path, rng: np.random.Generator, family: str, intensity: float, n: int) -> dict[str, Any]:
    """Write the clip's n frames to `path` (mp4v) and return the render parameters."""
    target, style = expression_target(family, rng)
    look, pose = random_look(rng), random_pose(rng, (0.5, 0.85))
    poses, blinks = pose_track(pose, n, rng), blink_track(n, rng)
    profile, apex = expression_profile(n, rng)
    blinks[max(0, apex - 1) : apex + 2] = 1.0  # eyes open around the apex: the peak frame shows them
    canvas, pan = make_background(rng)
    light = make_lighting(rng)
    extra = None
    if rng.random() < 0.15:
        extra = (_distractor(rng, pose), random_look(rng), blink_track(n, rng))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (SIZE, SIZE))
    if not writer.isOpened():
        raise RuntimeError(f"cv2.VideoWriter could not open {path} (mp4v)")
    try:
        for i in range(n):
            off = (BG_MARGIN + pan * (i / max(1, n - 1) - 0.5)).round().astype(int)
            frame = canvas[off[1] : off[1] + SIZE, off[0] : off[0] + SIZE].copy()
            if extra is not None:
                draw_face(frame, extra[0], extra[1], NEUTRAL, "line", extra[2][i])
            state = _lerp(NEUTRAL, target, float(profile[i]) * intensity)
            draw_face(frame, poses[i], look, state, style, blinks[i])
            writer.write(np.clip(frame * light, 0, 255).astype(np.uint8))
    finally:
        writer.release()
    cap = cv2.VideoCapture(str(path))
    count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else -1
    cap.release()
    if count != n:
        raise RuntimeError(f"{path} reads back with {count} frames, expected {n}")
    return {
        "n_frames": n,
        "fps": FPS,
        "size": SIZE,
        "apex_frame": apex,
        "face_box": face_box(poses[apex]),
        "face_scale": round(2 * pose.scale / SIZE, 3),
        "roll": round(pose.roll, 2),
        "yaw": round(pose.yaw, 2),
        "mouth_style": style,
        "distractor": extra is not None,
        "distractor_box": face_box(extra[0]) if extra is not None else None,
    }


# ---------------------------------------------------------------------------------------------
# Records: labels, subtitles, targets; the parallel driver
# ---------------------------------------------------------------------------------------------


def _split_key(split: str) -> int:
    return zlib.crc32(split.encode("utf-8"))


def clip_id(split: str, index: int) -> str:
    return f"synthemo-{split}-{index:06d}"


def label_for(seed: int, split: str, index: int) -> str:
    """Stratified labels: each block of six consecutive clips holds every label once, shuffled."""
    block = np.random.default_rng([seed, _split_key(split), index // len(LABELS), 1])
    return LABELS[int(block.permutation(len(LABELS))[index % len(LABELS)])]


def choose_subtitle(rng: np.random.Generator, label: str) -> tuple[str, str, str | None]:
    """(sentence, kind, other label for a contradicting one)."""
    kind = str(rng.choice(txt.SUBTITLE_KINDS, p=txt.SUBTITLE_KIND_P))
    if kind == "neutral":
        return str(rng.choice(txt.NEUTRAL_SENTENCES)), kind, None
    source = label if kind == "matching" else str(rng.choice([lab for lab in LABELS if lab != label]))
    return str(rng.choice(txt.EMOTION_SENTENCES[source])), kind, (source if kind == "contradicting" else None)


def write_targets(rng: np.random.Generator, label: str, vmeta: dict, ameta: dict, sub: tuple) -> tuple[dict, list]:
    """The per-task targets and cue phrases, all written from the render parameters."""
    vfam, afam = vmeta["visual_family"], ameta["audio_family"]
    vcues = list(txt.VISUAL_CUES[vfam])
    if vfam == "frown":
        vcues.append(txt.FROWN_MOUTH_CUES[vmeta["mouth_style"]])
    acues = list(txt.AUDIO_CUES[afam])
    vl, al = txt.family_labels(vfam, VISUAL_FAMILY), txt.family_labels(afam, AUDIO_FAMILY)
    _, kind, other = sub
    targets = {
        "emotion": label,
        "image": txt.image_target(rng, vcues, vmeta["intensity"], vmeta["distractor"]),
        "audio": txt.audio_target(rng, acues),
        "reason": txt.reason_target(rng, label, vcues, vl, acues, al, kind, other),
        "think": txt.think_target(label, vcues, vl, acues, al),
    }
    cues = [txt.phrase(c) for c in vcues + acues]
    if kind in txt.SUBTITLE_CUES:
        cues.append(txt.SUBTITLE_CUES[kind])
    return targets, cues


def _valence_arousal(rng: np.random.Generator, label: str, intensity: float) -> tuple[float, float]:
    va = np.array(VALENCE_AROUSAL[label]) * intensity + rng.normal(0, 0.05, 2)
    return tuple(round(float(v), 3) for v in np.clip(va, -1, 1))


def render_clip(out: Path, seed: int, split: str, index: int) -> Record:
    """Render clip `index` of (seed, split) into out/<split>/ and return its record."""
    cid, label = clip_id(split, index), label_for(seed, split, index)
    r_text, r_face, r_audio, r_targets = (
        np.random.default_rng(s) for s in np.random.SeedSequence([seed, _split_key(split), index]).spawn(4)
    )
    sub = choose_subtitle(r_text, label)
    speech, ameta = render_audio(r_audio, AUDIO_FAMILY[label], sub[0])
    n_frames = min(MAX_FRAMES, math.ceil(speech.size / SAMPLE_RATE * FPS))
    audio, nmeta = finish_audio(speech, n_frames * SAMPLE_RATE // FPS, r_audio)  # floor: ceil(len*FPS/SR) == n
    intensity = round(float(r_face.uniform(0.6, 1.0)), 3)
    media = out / split
    tmp_video, tmp_audio = media / f"{cid}.part.mp4", media / f"{cid}.part.wav"
    vmeta = render_video(tmp_video, r_face, VISUAL_FAMILY[label], intensity, n_frames)
    sf.write(tmp_audio, audio, SAMPLE_RATE, subtype="PCM_16")
    os.replace(tmp_video, media / f"{cid}.mp4")
    os.replace(tmp_audio, media / f"{cid}.wav")
    vmeta.update(intensity=intensity, visual_family=VISUAL_FAMILY[label])
    ameta.update(nmeta, audio_family=AUDIO_FAMILY[label], seconds=round(audio.size / SAMPLE_RATE, 4))
    targets, cues = write_targets(r_targets, label, vmeta, ameta, sub)
    valence, arousal = _valence_arousal(r_targets, label, intensity)
    meta = {
        **vmeta,
        **ameta,
        "families": [vmeta["visual_family"], ameta["audio_family"]],
        "subtitle_kind": sub[1],
        "subtitle_source": sub[2],
        "seed": seed,
        "index": index,
    }
    return Record(
        id=cid,
        dataset=DATASET,
        video=f"{split}/{cid}.mp4",
        audio=f"{split}/{cid}.wav",
        subtitle=sub[0],
        label=label,
        targets=targets,
        cues=cues,
        valence=valence,
        arousal=arousal,
        split=split,
        meta=meta,
    )


def _render(out: Path, seed: int, split: str, index: int, version: int, neutral_text: bool) -> Record:
    if version == 1:
        return render_clip(out, seed, split, index)
    from emo_edge.data import synth_v2

    return synth_v2.render_clip(out, seed, split, index, neutral_text)


def _job(args: tuple[Path, int, str, int, int, bool]) -> tuple[int, Record | None, str | None]:
    """Pool task: never raises, so one bad clip cannot stop the run."""
    out, seed, split, index = args[:4]
    try:
        return index, _render(*args), None
    except Exception as e:  # reported per clip by generate()
        for suffix in (".part.mp4", ".part.wav"):
            (out / split / f"{clip_id(split, index)}{suffix}").unlink(missing_ok=True)
        return index, None, f"{type(e).__name__}: {e}"


def _init_worker() -> None:
    cv2.setNumThreads(1)  # one process per core; no nested thread pools


def _results(jobs: list, workers: int) -> Iterator[tuple[int, Record | None, str | None]]:
    if workers <= 1:
        _init_worker()
        yield from map(_job, jobs)
        return
    # spawn, not fork: the caller may hold threads (torch, OpenCV) that a forked child would inherit locked
    with mp.get_context("spawn").Pool(workers, initializer=_init_worker) as pool:
        yield from pool.imap(_job, jobs, chunksize=4)


VERSIONS, DEFAULT_VERSION = SYNTH_VERSIONS, SYNTH_DEFAULT_VERSION  # see emo_edge/data/__init__.py


def generate(
    out: Path, n: int, seed: int, split: str = "train", workers: int = 2, progress: bool = True,
    version: int = DEFAULT_VERSION, neutral_text: bool = False,
) -> Path:
    """Generate n clips into out/<split>/ and write out/<split>.jsonl; return the JSONL path.

    `version` 2 (DEFAULT_VERSION) renders SynthEmo v2 (`synth_v2`), 1 the original set (this module's
    `render_clip`); `neutral_text` (v2 only) makes every subtitle an
    emotion-neutral sentence. out/<split>.synth.json records the version, seed, n and text variant (v2: and
    the render ranges' revision, `synth_v2.RENDER`).
    Clips that fail to render (e.g. an espeak-ng error) are reported by id and reason and left out;
    this raises RuntimeError only when every clip fails.
    """
    if version not in VERSIONS:
        raise ValueError(f"version must be one of {', '.join(map(str, VERSIONS))}, got {version!r}")
    if neutral_text and version == 1:
        raise ValueError("neutral_text (--neutral-text) needs version 2; v1 keeps its subtitle mix")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if not split or not all(c.isalnum() or c in "-_" for c in split):
        raise ValueError(f"split must be a non-empty name of letters, digits, '-' or '_', got {split!r}")
    out = Path(out)
    (out / split).mkdir(parents=True, exist_ok=True)
    jobs = [(out, seed, split, i, version, neutral_text) for i in range(n)]
    records, failures = [], []
    console = Console(stderr=True)
    columns = (
        TextColumn("SynthEmo {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, disable=not progress) as bar:
        task = bar.add_task(split, total=n)
        for index, record, error in _results(jobs, workers):
            if record is None:
                failures.append((clip_id(split, index), error))
                console.print(f"SynthEmo: skipped {clip_id(split, index)}: {error}", style="yellow", markup=False)
            else:
                records.append(record)
            bar.advance(task)
    if not records:
        first_id, first_error = failures[0]
        raise RuntimeError(f"SynthEmo: all {n} clips of split {split!r} failed; first: {first_id}: {first_error}")
    if failures:
        console.print(f"SynthEmo: {len(failures)} of {n} clips failed and are left out of {split}.jsonl")
    path = out / f"{split}.jsonl"
    write_jsonl(path, records)
    info = {"dataset": DATASET, "version": version, "neutral_text": neutral_text, "seed": seed, "split": split,
            "n": n, "n_failed": len(failures)}
    if version == 2:
        from emo_edge.data import synth_v2

        info["render"] = synth_v2.RENDER
    (out / f"{split}.synth.json").write_text(json.dumps(info, indent=2) + "\n")
    return path
