"""The node's audio and speech inputs beyond its own AudioChunk: audio_common_msgs audio with its AudioInfo,
and recognised speech (std_msgs/String or hri_msgs/LiveSpeech) for the text modality.

audio_common_msgs and hri_msgs are not needed to run the node: they are imported only when a parameter
asks for them, and a missing package fails the configure transition with the reason.

    audio_type: audio_data_stamped   audio (AudioDataStamped: header + AudioData) + audio_info (AudioInfo)
                audio_data           audio (AudioData, no stamp: the first sample is taken to be captured one
                                     chunk length before arrival) + audio_info
    transcript_type: string          transcript (std_msgs/String), stamped on arrival
                     live_speech     transcript (hri_msgs/LiveSpeech), its `final` text at its header stamp
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from emo_edge.runtime.buffers import StreamInputError
from emo_edge_ros.convert import AUDIO_FORMATS

RAW_CODINGS = ("", "wave", "raw", "pcm")  # AudioInfo.coding_format values that mean raw PCM samples in data


def import_msg(package: str, name: str, needed_for: str) -> Any:
    """A message class of an optional interface package, or ImportError saying which parameter needs it."""
    try:
        return getattr(importlib.import_module(f"{package}.msg"), name)
    except (ImportError, AttributeError) as e:
        raise ImportError(f"{needed_for} needs the {package} interface package ({package}/msg/{name}); install it "
                          "or choose another value") from e


def audio_common_to_array(data: bytes, info: Any) -> np.ndarray:
    """AudioData bytes + the stream's AudioInfo -> (n, channels) int16 or float32 samples; StreamInputError if the
    info is missing or names a coding or format the node cannot take."""
    if info is None:
        raise StreamInputError("audio_info_missing", "audio_common audio arrived before any AudioInfo on "
                                                     "'audio_info'; chunk dropped")
    coding, fmt = info.coding_format.lower(), info.sample_format.upper()
    if coding not in RAW_CODINGS:
        raise StreamInputError("audio_format", f"audio coding {info.coding_format!r} is not raw PCM; publish raw "
                                               f"samples (coding_format one of {', '.join(map(repr, RAW_CODINGS))})")
    if fmt not in AUDIO_FORMATS:
        raise StreamInputError("audio_format", f"audio sample format {info.sample_format!r} is not supported; "
                                               f"use one of {', '.join(AUDIO_FORMATS)}")
    dtype = AUDIO_FORMATS[fmt]
    frame_bytes = dtype.itemsize * max(info.channels, 1)
    if info.channels < 1 or not data or len(data) % frame_bytes:
        raise StreamInputError("audio_format", f"audio chunk of {len(data)} bytes is not whole {fmt} frames of "
                                               f"{info.channels} channel(s)")
    return np.frombuffer(data, dtype).reshape(-1, info.channels).astype(dtype.newbyteorder("="))


def live_speech_text(msg: Any) -> str:
    """The final recognised text of a LiveSpeech message ('' while only incremental results come)."""
    return msg.final.strip()
