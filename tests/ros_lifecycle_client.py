"""A lifecycle client process for tests/test_ros_lifecycle.py: drives the emo_edge node through its real
lifecycle services and reports what it sees, one JSON line per step.

    python tests/ros_lifecycle_client.py GOOD_BUNDLE

The node is started with autostart:=false and a bad bundle path. Steps: configure (must fail), set the
`bundle` parameter to GOOD_BUNDLE, configure, input while inactive, activate, input, deactivate, input,
activate again, input, deactivate, cleanup, shutdown. Each line: the step, whether the transition
succeeded, the state get_state reports after it, the node's subscribers on `image`, and how many
EmotionState / DiagnosticArray messages arrived during the step's input.
"""

from __future__ import annotations

import json
import sys
import threading
import time

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from emo_edge_msgs.msg import AudioChunk, EmotionState
from emo_edge_ros.convert import rgb_to_image, s_to_stamp, samples_to_chunk
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rcl_interfaces.srv import SetParameters
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import Image

from emo_edge.audio import SAMPLE_RATE

NODE = "emo_edge"
FPS, RATE, CHUNK = 30, SAMPLE_RATE, 320
CALL_S = 180.0  # s, a configure loads ONNX Runtime sessions and the GGUF model on a busy 2-core machine


class Client:
    def __init__(self) -> None:
        self.node = rclpy.create_node("emo_edge_lifecycle_client")
        self.change = self.node.create_client(ChangeState, f"/{NODE}/change_state")
        self.get = self.node.create_client(GetState, f"/{NODE}/get_state")
        self.set_params = self.node.create_client(SetParameters, f"/{NODE}/set_parameters")
        self.img = self.node.create_publisher(Image, "image", qos_profile_sensor_data)
        self.aud = self.node.create_publisher(AudioChunk, "audio", qos_profile_sensor_data)
        self.received = {"states": 0, "diagnostics": 0}
        self.node.create_subscription(EmotionState, "emotion/state", lambda m: self._count("states"),
                                      QoSProfile(depth=10))
        self.node.create_subscription(DiagnosticArray, "/diagnostics", lambda m: self._count("diagnostics"),
                                      QoSProfile(depth=10))
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self._stop = threading.Event()
        self._spinner = threading.Thread(target=self._spin)
        self._spinner.start()
        self.frame = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
        self.tone = (0.3 * np.sin(2 * np.pi * 200 * np.arange(CHUNK) / RATE)).astype(np.float32)

    def _spin(self) -> None:
        while not self._stop.is_set():
            self.executor.spin_once(timeout_sec=0.1)

    def close(self) -> None:
        self._stop.set()
        self._spinner.join()
        self.executor.shutdown()
        self.node.destroy_node()

    def _count(self, key: str) -> None:
        self.received[key] += 1

    def state(self) -> str:
        return self.get.call(GetState.Request(), timeout_sec=CALL_S).current_state.label

    def transition(self, transition_id: int) -> bool:
        req = ChangeState.Request(transition=Transition(id=transition_id))
        return self.change.call(req, timeout_sec=CALL_S).success

    def set_bundle(self, path: str) -> bool:
        req = SetParameters.Request(parameters=[Parameter("bundle", value=path).to_parameter_msg()])
        return all(r.successful for r in self.set_params.call(req, timeout_sec=CALL_S).results)

    def image_subscribers(self, expect: int, wait_s: float = 5.0) -> int:
        """The node's subscriptions on `image` (the graph takes a moment to show a change)."""
        deadline = time.monotonic() + wait_s
        while (n := self.img.get_subscription_count()) != expect and time.monotonic() < deadline:
            time.sleep(0.05)
        return n

    def feed(self, seconds: float) -> dict[str, int]:
        """Publish image + audio in real time for `seconds`; the outputs received meanwhile (and 1 s after)."""
        before = dict(self.received)
        t0 = now = time.time()
        k_img = k_aud = 0
        while (now := time.time()) < t0 + seconds:
            if now >= t0 + k_img / FPS:
                msg = Image()
                msg.header.stamp = s_to_stamp(self.node.get_clock().now().nanoseconds * 1e-9)
                rgb_to_image(self.frame, msg)
                self.img.publish(msg)
                k_img += 1
            if now >= t0 + k_aud * CHUNK / RATE:
                msg = AudioChunk()
                msg.header.stamp = s_to_stamp(self.node.get_clock().now().nanoseconds * 1e-9)
                samples_to_chunk(self.tone, RATE, msg)
                self.aud.publish(msg)
                k_aud += 1
            time.sleep(0.002)
        time.sleep(1.0)
        return {k: self.received[k] - before[k] for k in before}


def main() -> None:
    good_bundle = sys.argv[1]
    rclpy.init()
    c = Client()
    if not (c.change.wait_for_service(timeout_sec=60) and c.get.wait_for_service(timeout_sec=60)):
        raise SystemExit(f"/{NODE}/change_state or /{NODE}/get_state never appeared")

    def report(step: str, ok: bool | None, expect_subs: int, feed_s: float = 0.0) -> None:
        line = {"step": step, "success": ok, "state": c.state(), "image_subscribers": c.image_subscribers(expect_subs)}
        if feed_s:
            line.update(c.feed(feed_s))
        print(json.dumps(line), flush=True)

    report("start", None, 0)
    report("configure_bad_bundle", c.transition(Transition.TRANSITION_CONFIGURE), 0)
    report("set_good_bundle", c.set_bundle(good_bundle), 0)
    report("configure", c.transition(Transition.TRANSITION_CONFIGURE), 0, feed_s=3.0)
    report("activate", c.transition(Transition.TRANSITION_ACTIVATE), 1, feed_s=5.0)
    report("deactivate", c.transition(Transition.TRANSITION_DEACTIVATE), 0, feed_s=3.0)
    report("activate_again", c.transition(Transition.TRANSITION_ACTIVATE), 1, feed_s=4.0)
    report("deactivate_again", c.transition(Transition.TRANSITION_DEACTIVATE), 0)
    report("cleanup", c.transition(Transition.TRANSITION_CLEANUP), 0)
    report("shutdown", c.transition(Transition.TRANSITION_UNCONFIGURED_SHUTDOWN), 0)
    c.close()
    rclpy.try_shutdown()


if __name__ == "__main__":
    main()
