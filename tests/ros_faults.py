"""A publisher process for tests/test_ros_node.py: good image + audio input with faults injected in phases.

    python tests/ros_faults.py PLAN_SECONDS... (see PHASES); prints each phase's name and start time.

Phases: good input, then each fault (wrong encoding, wrong step, truncated CompressedImage, audio at
44.1 kHz, audio in an unknown format, stamps going back 5 s), the publisher vanishing (its node
destroyed) and returning, a burst at 10x the frame rate, and good input again.
"""

from __future__ import annotations

import json
import sys
import time

import cv2
import numpy as np
import rclpy
from emo_edge_msgs.msg import AudioChunk
from emo_edge_ros.convert import rgb_to_image, s_to_stamp, samples_to_chunk
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image

from emo_edge.audio import SAMPLE_RATE

FPS, RATE, CHUNK = 30, SAMPLE_RATE, 320
PHASES = ("good", "bad_encoding", "bad_step", "truncated_jpeg", "audio_44k", "audio_format", "backwards",
          "vanish", "good", "burst", "good")


class Pub:
    def __init__(self) -> None:
        self.node = rclpy.create_node("emo_edge_fault_publisher")
        self.img = self.node.create_publisher(Image, "image", qos_profile_sensor_data)
        self.jpg = self.node.create_publisher(CompressedImage, "image/compressed", qos_profile_sensor_data)
        self.aud = self.node.create_publisher(AudioChunk, "audio", qos_profile_sensor_data)
        rng = np.random.default_rng(0)
        self.frame = rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)
        self.tone = (0.3 * np.sin(2 * np.pi * 200 * np.arange(CHUNK) / RATE)).astype(np.float32)

    def now(self) -> float:
        return self.node.get_clock().now().nanoseconds * 1e-9

    def image(self, t: float, phase: str) -> None:
        msg = Image()
        msg.header.stamp = s_to_stamp(t - 5.0 if phase == "backwards" else t)
        rgb_to_image(self.frame, msg)
        if phase == "bad_encoding":
            msg.encoding = "yuv422_weird"
        elif phase == "bad_step":
            msg.step = msg.step - 7
        self.img.publish(msg)
        if phase == "truncated_jpeg":
            jpg = CompressedImage(format="jpeg")
            jpg.header.stamp = s_to_stamp(t)
            jpg.data = cv2.imencode(".jpg", self.frame)[1].tobytes()[:200]
            self.jpg.publish(jpg)

    def audio(self, t: float, phase: str) -> None:
        msg = AudioChunk()
        msg.header.stamp = s_to_stamp(t - 5.0 if phase == "backwards" else t)
        samples_to_chunk(self.tone, RATE, msg)
        if phase == "audio_44k":
            msg.sample_rate = 44100
        elif phase == "audio_format":
            msg.format = "MULAW"
        self.aud.publish(msg)

    def run(self, phase: str, seconds: float) -> None:
        fps = FPS * 10 if phase == "burst" else FPS
        t0, k_img, k_aud = self.now(), 0, 0
        while (now := self.now()) < t0 + seconds:
            if now >= t0 + k_img / fps:
                self.image(now, phase)
                k_img += 1
            if now >= t0 + k_aud * CHUNK / RATE:
                self.audio(now, phase)
                k_aud += 1
            time.sleep(0.001)


def main() -> None:
    seconds = [float(s) for s in sys.argv[1:]] or [2.0] * len(PHASES)
    rclpy.init()
    pub = Pub()
    deadline = time.monotonic() + 60
    while not (pub.img.get_subscription_count() and pub.aud.get_subscription_count()) and time.monotonic() < deadline:
        time.sleep(0.05)
    for phase, s in zip(PHASES, seconds, strict=True):
        print(json.dumps({"phase": phase, "start": pub.now()}), flush=True)
        if phase == "vanish":
            pub.node.destroy_node()
            time.sleep(s)
            pub = Pub()
            continue
        pub.run(phase, s)
    print(json.dumps({"phase": "end", "start": pub.now()}), flush=True)
    pub.node.destroy_node()
    rclpy.try_shutdown()


if __name__ == "__main__":
    main()
