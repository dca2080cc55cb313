"""A robot's ROS4HRI-style inputs for tests/test_ros_hri.py, in its own process: SynthEmo clips at real rate as
sensor_msgs/Image (30 fps) and audio_common_msgs/AudioDataStamped (S16LE, 20 ms chunks) with AudioInfo on
audio_info, a transcript (std_msgs/String, or hri_msgs/LiveSpeech: an incremental result, then the final
text) at the start of the clips listed in --transcribed, and two tracked
faces on /humans/faces/tracked ("small", "big") with their ROIs.

    python tests/ros_hri_publisher.py JSONL N_CLIPS --transcribed 0 [--audio-type audio_data_stamped]

Prints {"schedule": [{id, label, start, end, transcript}, ...], "sent": {frames, audio_chunks}, "played": [first
stamp, end]} as JSON on the last line.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import rclpy
from audio_common_msgs.msg import AudioData, AudioDataStamped, AudioInfo
from emo_edge_ros.convert import s_to_stamp
from emo_edge_ros.player import ClipPlayer, load_clips
from hri_msgs.msg import IdsList, LiveSpeech, NormalizedRegionOfInterest2D
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from std_msgs.msg import String

from emo_edge.audio import SAMPLE_RATE

LEAD_S = 1.5  # s of the first frame and silence before the first clip

FACES = {"small": (0.1, 0.1, 0.2, 0.25), "big": (0.4, 0.2, 0.8, 0.9)}  # normalised xmin, ymin, xmax, ymax


class HriPlayer(ClipPlayer):
    """The clip player with audio_common audio, AudioInfo and tracked faces (every 6th frame: 5 Hz)."""

    def __init__(self, audio_type: str, transcript_type: str = "string"):
        super().__init__("raw", 30.0, 20.0, "camera")
        self.destroy_publisher(self.audio_pub)
        self.stamped = audio_type == "audio_data_stamped"
        self.audio_pub = self.create_publisher(AudioDataStamped if self.stamped else AudioData, "audio",
                                               qos_profile_sensor_data)
        self.info_pub = self.create_publisher(AudioInfo, "audio_info", qos_profile_sensor_data)
        self.live_speech = transcript_type == "live_speech"
        self.text_pub = self.create_publisher(LiveSpeech if self.live_speech else String, "transcript",
                                              QoSProfile(depth=10))
        self.tracked_pub = self.create_publisher(IdsList, "/humans/faces/tracked", QoSProfile(depth=10))
        self.roi_pubs = {f: self.create_publisher(NormalizedRegionOfInterest2D, f"/humans/faces/{f}/roi",
                                                  qos_profile_sensor_data) for f in FACES}

    def publish_text(self, text: str) -> None:
        """String; or LiveSpeech: an incremental result (no final text: ignored by the node), then the final one."""
        if not self.live_speech:
            self.text_pub.publish(String(data=text))
            return
        for partial, final in ((text.split(" ")[0], ""), ("", text)):
            msg = LiveSpeech(incremental=partial, final=final, confidence=0.9, language="en-GB")
            msg.header.stamp = s_to_stamp(self.now())
            self.text_pub.publish(msg)

    def publish_audio(self, t: float, samples: np.ndarray) -> None:
        data = (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
        if self.stamped:
            msg = AudioDataStamped()
            msg.header.stamp, msg.header.frame_id = s_to_stamp(t), "mic"
            msg.audio.data = data
        else:
            msg = AudioData(data=data)
        self.audio_pub.publish(msg)

    def publish_frame(self, t: float, frame: np.ndarray) -> None:
        super().publish_frame(t, frame)
        if self.sent["frames"] % 6 == 0:  # play() counts this frame after publishing it
            self.info_pub.publish(AudioInfo(channels=1, sample_rate=SAMPLE_RATE, sample_format="S16LE",
                                            bitrate=16 * SAMPLE_RATE, coding_format="wave"))
            ids = IdsList(ids=list(FACES))
            ids.header.stamp = s_to_stamp(t)
            self.tracked_pub.publish(ids)
            for face, (x0, y0, x1, y1) in FACES.items():
                roi = NormalizedRegionOfInterest2D(xmin=x0, ymin=y0, xmax=x1, ymax=y1, c=0.9)
                roi.header.stamp = s_to_stamp(t)
                self.roi_pubs[face].publish(roi)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("jsonl")
    ap.add_argument("limit", type=int)
    ap.add_argument("--transcribed", type=int, nargs="*", default=[], help="clip indices whose subtitle is sent")
    ap.add_argument("--audio-type", default="audio_data_stamped", choices=("audio_data_stamped", "audio_data"))
    ap.add_argument("--transcript-type", default="string", choices=("string", "live_speech"))
    ap.add_argument("--gap-s", type=float, default=2.5)
    args = ap.parse_args()
    rclpy.init()
    node = HriPlayer(args.audio_type, args.transcript_type)
    clips = load_clips(argparse.Namespace(jsonl=args.jsonl, limit=args.limit, clips=None))
    subtitles = [json.loads(x).get("subtitle", "") for x in open(args.jsonl).read().splitlines()][:args.limit]
    try:
        node.wait_for_subscribers(120)
        held = clips[0]["frames"][0]
        first = node.play(lambda rel: held, np.zeros(0, np.float32), LEAD_S)
        schedule = []
        for i, c in enumerate(clips):
            text = f"{subtitles[i]} (clip {i})" if i in args.transcribed else None
            if text is not None:
                node.publish_text(text)
            frames, fps, wave = c["frames"], c["fps"], c["wave"]
            seconds = max(len(frames) / fps, len(wave) / SAMPLE_RATE)
            t0 = node.play(lambda rel, f=frames, r=fps: f[min(int(rel * r), len(f) - 1)], wave, seconds)
            schedule.append({"id": c["id"], "label": c["label"], "start": t0, "end": t0 + seconds, "transcript": text})
            last = frames[-1]
            node.play(lambda rel, f=last: f, np.zeros(0, np.float32), args.gap_s)
        print(json.dumps({"schedule": schedule, "sent": node.sent, "played": [first, node.now()]}), flush=True)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
