"""The node's parameters in one table: its own (NODE_PARAMS) and the stream settings generated from
`StreamConfig` (emo_edge.runtime.settings). No rclpy here, so the table, config/params.yaml and the launch
file's check can be read without ROS 2.

    python -m emo_edge_ros.params            # print config/params.yaml as generated
    python scripts/gen_ros_params.py         # regenerate config/params.yaml (tests/test_params.py compares)
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from emo_edge.runtime.settings import SETTINGS, yaml_scalar

AUDIO_TYPES = ("chunk", "audio_data_stamped", "audio_data")
TRANSCRIPT_TYPES = ("string", "live_speech", "off")

# name -> (default, description): the node's own parameters (stream settings come from StreamConfig)
NODE_PARAMS: dict[str, tuple[Any, str]] = {
    "autostart": (True, "configure and activate at start (false: wait for lifecycle transitions)"),
    "bundle": ("", "exported emo-edge bundle directory (required): emo-edge export --out BUNDLE"),
    "precision": ("", "perception precision fp32 | int8 ('' = the bundle's target default)"),
    "quant": ("", "GGUF quantisation f16 | q8_0 | q4_k_m ('' = the bundle's default)"),
    "threads": (0, "CPU threads for ONNX Runtime and llama.cpp (0 = the bundle's target profile)"),
    "fallback": ("", "cpu: run on the CPU where this machine lacks the GPU / TensorRT the bundle's target needs "
                     "(logged, on /diagnostics); '' = refuse to configure"),
    "input": ("topics", "topics (subscribe to image + audio) or capture (open camera + microphone here)"),
    "image_transport": ("raw", "raw (sensor_msgs/Image on 'image'), compressed (CompressedImage on "
                               "'image/compressed') or both"),
    "audio_type": ("chunk", "audio on 'audio': chunk (emo_edge_msgs/AudioChunk), audio_data_stamped "
                            "(audio_common_msgs/AudioDataStamped) or audio_data (audio_common_msgs/AudioData, "
                            "stamped on arrival); the audio_common types take their format from AudioInfo on "
                            "'audio_info'"),
    "transcript_type": ("string", "recognised speech on 'transcript': string (std_msgs/String, stamped on arrival), "
                                  "live_speech (hri_msgs/LiveSpeech, its final text) or off"),
    "audio_queue_depth": (100, "chunks the audio subscription holds while the node's callbacks are busy (best "
                                "effort, keep last): a publisher's burst or a busy executor of up to this many "
                                "chunks loses no audio (100: 1 s of 10 ms chunks, 2 s of 20 ms ones)"),
    "camera": ("0", "input=capture: camera index, video file or stream URL (OpenCV)"),
    "mic": ("default", "input=capture: PortAudio input device name or index, or 'default'"),
    "stamp_source": ("header", "header (use the messages' capture stamps) or arrival (stamp on receipt)"),
    "diagnostics_hz": (1.0, "Hz, /diagnostics publishing rate"),
    "frame_id": ("", "frame_id of the outputs when the input carries none (capture mode)"),
    "hri_expression": (True, "publish hri_msgs/Expression (REP-155) for each head state when hri_msgs is installed"),
    "hri_expression_topic": ("/humans/faces/{id}/expression", "hri_msgs/Expression topic; {id} is the face id"),
    "hri_face_id": ("", "the face the expressions are about: this id when set (and tracked, if "
                        "/humans/faces/tracked is published); else the largest tracked face"),
    "hri_default_face_id": ("person", "face id used while nothing is published on /humans/faces/tracked"),
}


def node_parameters() -> dict[str, tuple[Any, str]]:
    """Every parameter the node declares: name -> (default, description); node ones first, then the stream's."""
    stream = {name: (s.default, s.description) for name, s in SETTINGS.items()}
    clash = set(stream) & set(NODE_PARAMS)
    assert not clash, f"node parameters shadow stream settings: {clash}"
    return {**NODE_PARAMS, **stream}


def params_yaml() -> str:
    """config/params.yaml: every parameter with its default and description."""
    lines = ["# Parameters of the emo_edge node, generated from its parameter table (emo_edge_ros/params.py and",
             "# emo_edge.runtime.stream.StreamConfig); regenerate with: python scripts/gen_ros_params.py",
             "emo_edge:", "  ros__parameters:"]
    for name, (default, text) in node_parameters().items():
        lines.append(f"    # {text}")
        lines.append(f"    {name}: {yaml_scalar(default)}")
    return "\n".join(lines) + "\n"


PARAMS_FILE = Path(__file__).resolve().parents[1] / "config" / "params.yaml"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--write", action="store_true", help=f"write {PARAMS_FILE}")
    args = ap.parse_args(argv)
    if args.write:
        PARAMS_FILE.write_text(params_yaml())
        print(f"wrote {PARAMS_FILE}")
    else:
        print(params_yaml(), end="")


if __name__ == "__main__":
    main()
