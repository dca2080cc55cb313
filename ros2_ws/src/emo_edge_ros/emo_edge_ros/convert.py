"""Message <-> array conversions for the node and the player (numpy + OpenCV; no inference here).

Every refusal is an `emo_edge.runtime.buffers.StreamInputError` whose `kind` names the fault, so the
node counts it next to the runtime's own and reports it on /diagnostics.
"""

from __future__ import annotations

import cv2
import numpy as np
from builtin_interfaces.msg import Time

from emo_edge.runtime.buffers import StreamInputError

# encoding -> (channels, OpenCV conversion to RGB or None)
ENCODINGS: dict[str, tuple[int, int | None]] = {
    "rgb8": (3, None),
    "bgr8": (3, cv2.COLOR_BGR2RGB),
    "rgba8": (4, cv2.COLOR_RGBA2RGB),
    "bgra8": (4, cv2.COLOR_BGRA2RGB),
    "mono8": (1, cv2.COLOR_GRAY2RGB),
}
AUDIO_FORMATS: dict[str, np.dtype] = {"S16LE": np.dtype("<i2"), "F32LE": np.dtype("<f4")}


def stamp_to_s(stamp: Time) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def s_to_stamp(t: float) -> Time:
    ns = int(round(t * 1e9))
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def image_to_rgb(msg) -> np.ndarray:
    """sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8, mono8; 8-bit, any row padding) -> (H, W, 3) uint8 RGB."""
    if msg.encoding not in ENCODINGS:
        raise StreamInputError("image_encoding", f"image encoding {msg.encoding!r} is not supported; "
                                                 f"use one of {', '.join(ENCODINGS)}")
    ch, conversion = ENCODINGS[msg.encoding]
    h, w, step = msg.height, msg.width, msg.step
    if h < 2 or w < 2 or step < w * ch or len(msg.data) != step * h:
        raise StreamInputError("image_layout", f"image {w}x{h} {msg.encoding}: step {step} and {len(msg.data)} bytes "
                                               f"do not fit (need step >= {w * ch} and data = step * height)")
    rows = np.frombuffer(bytes(msg.data), np.uint8).reshape(h, step)[:, :w * ch].reshape(h, w, ch)
    return np.ascontiguousarray(rows) if conversion is None else cv2.cvtColor(rows, conversion)


def compressed_to_rgb(msg) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg/png) -> (H, W, 3) uint8 RGB."""
    buf = np.frombuffer(bytes(msg.data), np.uint8)
    frame = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
    if frame is None:
        raise StreamInputError("image_decode", f"compressed image ({msg.format or 'no format'}, {buf.size} bytes) "
                                               "cannot be decoded (truncated or not jpeg/png)")
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


def audio_to_array(msg) -> np.ndarray:
    """emo_edge_msgs/AudioChunk -> (n, channels) int16 or float32 samples (the runtime downmixes and scales)."""
    fmt = msg.format.upper()
    if fmt not in AUDIO_FORMATS:
        raise StreamInputError("audio_format", f"audio format {msg.format!r} is not supported; "
                                               f"use one of {', '.join(AUDIO_FORMATS)}")
    dtype = AUDIO_FORMATS[fmt]
    data = bytes(msg.data)
    frame_bytes = dtype.itemsize * max(msg.channels, 1)
    if msg.channels < 1 or not data or len(data) % frame_bytes:
        raise StreamInputError("audio_format", f"audio chunk of {len(data)} bytes is not whole {fmt} frames of "
                                               f"{msg.channels} channel(s)")
    return np.frombuffer(data, dtype).reshape(-1, msg.channels).astype(dtype.newbyteorder("="))


def rgb_to_image(frame: np.ndarray, msg) -> None:
    """Fill a sensor_msgs/Image with an (H, W, 3) uint8 RGB frame."""
    msg.height, msg.width = frame.shape[:2]
    msg.encoding, msg.is_bigendian, msg.step = "rgb8", 0, frame.shape[1] * 3
    msg.data = np.ascontiguousarray(frame).tobytes()


def samples_to_chunk(samples: np.ndarray, rate: int, msg) -> None:
    """Fill an AudioChunk with mono float samples in [-1, 1] as S16LE."""
    msg.format, msg.sample_rate, msg.channels = "S16LE", rate, 1
    msg.data = (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
