"""The emotion node: a managed (lifecycle) node, a thin adapter over `emo_edge.runtime.stream.StreamRuntime`.

    image (sensor_msgs/Image) or image/compressed (CompressedImage) ─┐ sensor-data QoS; callbacks only
    audio (emo_edge_msgs/AudioChunk)                                ─┤ convert and push into the rings
    or direct capture (OpenCV camera + PortAudio microphone)        ─┘
        StreamRuntime (its own step thread + LLM worker) ─► emotion/state (EmotionState)
                                                         ─► emotion/reasoning (Reasoning, streamed)
    timer ─► /diagnostics (rates, latency median/p95, faults, LLM queue)

Lifecycle (the /emo_edge/change_state and /emo_edge/get_state services):
    configure   read the parameters, load the bundle (a bad one fails the transition: logged, the node stays
                unconfigured and alive), create the (lifecycle) publishers
    activate    subscribe (or open the camera + microphone), start the stream, publish
    deactivate  unsubscribe / close the devices, stop the stream; nothing is published while inactive
    cleanup     release the runtime and the bundle's sessions
With autostart (the default) the node configures and activates itself at start.

Parameters are declared once, with descriptions, and read once per configure (see config/params.yaml).
Refused input is warned about (throttled), counted by kind and reported on /diagnostics; the node
keeps running. Inference never runs in a subscription callback.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from emo_edge_msgs.msg import AudioChunk, EmotionState, Reasoning
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image

from emo_edge.runtime.buffers import StreamInputError
from emo_edge.runtime.stream import EmotionUpdate, ReasoningUpdate, StreamConfig, StreamRuntime
from emo_edge_ros.convert import audio_to_array, compressed_to_rgb, image_to_rgb, s_to_stamp, stamp_to_s
from emo_edge_ros.spin import spin_node

# name -> (default, description); the one place parameters are declared
PARAMS: dict[str, tuple[Any, str]] = {
    "bundle": ("", "exported emo-edge bundle directory (required)"),
    "precision": ("", "perception precision fp32|int8 ('' = the bundle's target default)"),
    "quant": ("", "GGUF quantisation f16|q8_0|q4_k_m ('' = the bundle's default)"),
    "threads": (0, "CPU threads for ONNX Runtime and llama.cpp (0 = the bundle's target profile)"),
    "fallback": ("", "cpu: run on the CPU where this machine lacks the GPU / TensorRT the bundle's target needs "
                     "(logged, on /diagnostics); '' = refuse to configure"),
    "input": ("topics", "topics (subscribe to image + audio) or capture (open camera + microphone here)"),
    "image_transport": ("raw", "raw (sensor_msgs/Image on 'image'), compressed (CompressedImage on "
                               "'image/compressed') or both"),
    "camera": ("0", "input=capture: camera index, video file or stream URL (OpenCV)"),
    "mic": ("default", "input=capture: PortAudio input device name or index, or 'default'"),
    "stamp_source": ("header", "header (use the messages' capture stamps) or arrival (stamp on receipt)"),
    "fast_hz": (2.0, "Hz, sliding-window head updates (0: only at utterance ends)"),
    "window_s": (0.0, "s, sliding window length (0: the bundle's frontend window)"),
    "stale_s": (1.0, "s without input after which a modality is passed to the model as absent"),
    "vad": ("webrtc", "voice-activity detector: webrtc, energy or none"),
    "vad_aggressiveness": (1, "webrtc VAD: 0 keeps most speech .. 3 cuts most non-speech"),
    "slow": ("utterance", "what starts the LLM: utterance, timer, both or off"),
    "slow_period_s": (10.0, "s between timer-started LLM runs"),
    "slow_policy": ("coalesce", "busy LLM: coalesce (the newest waiting request wins) or drop"),
    "reason": (True, "stream the LLM's reasoning after its label"),
    "max_reason_tokens": (96, "tokens of reasoning at most"),
    "diagnostics_hz": (1.0, "Hz, /diagnostics publishing rate"),
    "frame_id": ("", "frame_id of the outputs when the input carries none (capture mode)"),
}
AUTOSTART = ("autostart", True, "configure and activate at start (false: wait for lifecycle transitions)")
STREAM_KEYS = ("fast_hz", "stale_s", "vad", "vad_aggressiveness", "slow", "slow_period_s", "slow_policy", "reason",
               "max_reason_tokens")
WARN_EVERY_S = 2.0  # s, throttle of input warnings


class EmotionNode(LifecycleNode):
    def __init__(self) -> None:
        super().__init__("emo_edge")
        for name, (default, text) in PARAMS.items():
            self.declare_parameter(name, default, ParameterDescriptor(description=text))
        name, default, text = AUTOSTART
        self.autostart = bool(self.declare_parameter(name, default, ParameterDescriptor(description=text)).value)
        self.p: dict[str, Any] = {}
        self.runtime: Any = None
        self.bundle: Any = None
        self.stream: StreamRuntime | None = None
        self.frame_id = ""
        self._pubs: list[Any] = []
        self._subs: list[Any] = []
        self._sources: list[Any] = []
        self._timer: Any = None
        self._faults_reported: dict[str, int] = {}
        self._warned: dict[str, float] = {}  # fault kind -> when it was last warned about
        self._input_lock = threading.Lock()

    # -- lifecycle transitions ---------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            p = self._read_params()
            self.runtime, self.bundle = self._load(p)
            self.p, self.frame_id = p, p["frame_id"]
            self.stream = self._new_stream()
        except Exception as e:  # a bad parameter or bundle of any kind: the node stays unconfigured, with the reason
            self.get_logger().error(f"configure failed: {type(e).__name__}: {e}")
            self._release_runtime()
            return TransitionCallbackReturn.FAILURE
        self.state_pub = self.create_lifecycle_publisher(EmotionState, "emotion/state", 10)
        self.reason_pub = self.create_lifecycle_publisher(Reasoning, "emotion/reasoning", QoSProfile(depth=100))
        self.diag_pub = self.create_lifecycle_publisher(DiagnosticArray, "/diagnostics", 10)
        self._pubs = [self.state_pub, self.reason_pub, self.diag_pub]
        self.get_logger().info(f"configured: bundle {p['bundle']} loaded ({self.bundle.precision}, {self.bundle.quant})"
                               f"; input={p['input']}, fast_hz={p['fast_hz']}, vad={p['vad']}, slow={p['slow']}")
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = super().on_activate(state)  # enables the lifecycle publishers first
        self._connect_inputs(self.p)
        self._timer = self.create_timer(1.0 / self.p["diagnostics_hz"], self._publish_diagnostics)
        self.stream.start()
        self.get_logger().info("active")
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_io()
        self.stream = self._new_stream()  # a stopped stream does not restart: the next activation gets a fresh one
        self.get_logger().info("inactive")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release_runtime()
        self.get_logger().info("cleaned up: runtime released")
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.close()
        return super().on_shutdown(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.get_logger().error(f"error in state {state.label}: releasing everything")
        self.close()
        return TransitionCallbackReturn.SUCCESS

    def close(self) -> None:
        """Stop the inputs and the stream and release the runtime, from whichever state the node is in."""
        self._stop_io()
        self._release_runtime()

    def _stop_io(self) -> None:
        for s in self._sources:
            s.stop()
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._sources, self._subs = [], []
        if self._timer is not None:
            self.destroy_timer(self._timer)
            self._timer = None
        if self.stream is not None:
            self.stream.stop()

    def _release_runtime(self) -> None:
        if self.stream is not None:
            self.stream.stop()
        for pub in self._pubs:
            self.destroy_lifecycle_publisher(pub)
        if self.bundle is not None:
            self.bundle.close()
        self._pubs, self.stream, self.runtime, self.bundle = [], None, None, None

    # -- setup -------------------------------------------------------------------------------------
    def _read_params(self) -> dict[str, Any]:
        p = {name: self.get_parameter(name).value for name in PARAMS}
        checks = (("input", ("topics", "capture")), ("image_transport", ("raw", "compressed", "both")),
                  ("stamp_source", ("header", "arrival")), ("fallback", ("", "cpu")))
        for name, options in checks:
            if p[name] not in options:
                raise ValueError(f"parameter {name}={p[name]!r}: choose one of {', '.join(options)}")
        if not p["bundle"]:
            raise ValueError("parameter 'bundle' is required: an exported emo-edge bundle directory")
        if p["diagnostics_hz"] <= 0:
            raise ValueError(f"parameter diagnostics_hz must be > 0, got {p['diagnostics_hz']}")
        return p

    def _load(self, p: dict[str, Any]) -> tuple[Any, Any]:
        from emo_edge.runtime.bundle import load_bundle
        from emo_edge.runtime.pipeline import EmotionRuntime

        bundle = load_bundle(p["bundle"], precision=p["precision"] or None, quant=p["quant"] or None,
                             threads=p["threads"] or None, fallback=p["fallback"] or None)
        say = self.get_logger().warning if bundle.plan.fallback else self.get_logger().info
        for line in bundle.plan.describe():
            say(f"plan: {line}")
        return EmotionRuntime(bundle), bundle

    def _new_stream(self) -> StreamRuntime:
        p = self.p
        cfg = StreamConfig(window_s=p["window_s"] or None, **{k: p[k] for k in STREAM_KEYS})
        return StreamRuntime(self.runtime, self.bundle.frontend, cfg, clock=self._now,
                             on_state=self._publish_state, on_reasoning=self._publish_reasoning)

    def _connect_inputs(self, p: dict[str, Any]) -> None:
        if p["input"] == "capture":
            from emo_edge.runtime.capture import CameraSource, MicSource

            rate = self.stream.fe.sample_rate
            push_audio = self._guarded(lambda t, x: self.stream.push_audio(t, x, rate))
            self._sources = [CameraSource(p["camera"], self._guarded(self.stream.push_frame), clock=self._now),
                             MicSource(None if p["mic"] == "default" else p["mic"], push_audio, rate, clock=self._now)]
            for s in self._sources:
                s.start()
            return
        if p["image_transport"] in ("compressed", "both"):
            self._subs.append(self.create_subscription(CompressedImage, "image/compressed", self._on_compressed,
                                                       qos_profile_sensor_data))
        if p["image_transport"] in ("raw", "both"):
            self._subs.append(self.create_subscription(Image, "image", self._on_image, qos_profile_sensor_data))
        self._subs.append(self.create_subscription(AudioChunk, "audio", self._on_audio, qos_profile_sensor_data))

    # -- input callbacks: message -> array -> ring (no inference here) -------------------------------
    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _stamp(self, header: Any) -> float:
        if header.frame_id:
            self.frame_id = header.frame_id
        return stamp_to_s(header.stamp) if self.p["stamp_source"] == "header" else self._now()

    def _on_image(self, msg: Image) -> None:
        self._push(msg.header, lambda: image_to_rgb(msg), self.stream.push_frame)

    def _on_compressed(self, msg: CompressedImage) -> None:
        self._push(msg.header, lambda: compressed_to_rgb(msg), self.stream.push_frame)

    def _on_audio(self, msg: AudioChunk) -> None:
        self._push(msg.header, lambda: audio_to_array(msg), lambda t, x: self.stream.push_audio(t, x, msg.sample_rate))

    def _push(self, header: Any, convert: Any, push: Any) -> None:
        """convert() the message to an array and push it at its stamp; refusals are warned about and counted
        (the runtime counts what its push refuses, the node what the conversion refuses)."""
        try:
            try:
                x = convert()
            except StreamInputError as e:
                self.stream.faults[e.kind] += 1
                raise
            with self._input_lock:
                push(self._stamp(header), x)
        except StreamInputError as e:
            self._refused(e)

    def _refused(self, e: StreamInputError) -> None:
        """A warning per fault kind at most every WARN_EVERY_S (rclpy's throttle is per call site, not per kind)."""
        now = self._now()
        if now - self._warned.get(e.kind, -WARN_EVERY_S) >= WARN_EVERY_S:
            self._warned[e.kind] = now
            self.get_logger().warning(f"input refused ({e.kind}): {e}")

    def _guarded(self, push: Any) -> Any:
        def call(t: float, x: np.ndarray) -> None:
            try:
                push(t, x)
            except StreamInputError as e:
                self._refused(e)
        return call

    # -- outputs (from the runtime's threads) --------------------------------------------------------
    def _publish_state(self, u: EmotionUpdate) -> None:
        msg = EmotionState()
        msg.header.stamp, msg.header.frame_id = s_to_stamp(u.window_end), self.frame_id
        msg.label, msg.labels, msg.scores = u.label, list(u.labels), [float(s) for s in u.scores]
        msg.valence, msg.arousal = float(u.valence), float(u.arousal)
        msg.window_start, msg.window_end = s_to_stamp(u.window_start), s_to_stamp(u.window_end)
        msg.source = EmotionState.SOURCE_LLM if u.source == "llm" else EmotionState.SOURCE_HEAD
        msg.utterance_id, msg.voice_active = u.utterance_id, u.voice_active
        msg.video_present, msg.audio_present = u.present
        msg.latency_ms = float((self._now() - u.window_end) * 1000.0)  # up to the publish call itself
        self.state_pub.publish(msg)

    def _publish_reasoning(self, r: ReasoningUpdate) -> None:
        msg = Reasoning()
        msg.header.stamp, msg.header.frame_id = s_to_stamp(r.window_end), self.frame_id
        msg.utterance_id, msg.text, msg.done = r.utterance_id, r.text, r.done
        self.reason_pub.publish(msg)

    def _publish_diagnostics(self) -> None:
        st = self.stream.stats()
        new = {k: v - self._faults_reported.get(k, 0) for k, v in st["faults"].items()
               if v > self._faults_reported.get(k, 0)}
        self._faults_reported = dict(st["faults"])
        level, message = diagnostic_level(st, new)
        status = DiagnosticStatus(level=level, name="emo_edge: pipeline", hardware_id=str(self.p["bundle"]),
                                  message=message, values=[KeyValue(key=k, value=v) for k, v in flatten(st)])
        arr = DiagnosticArray(status=[status, plan_status(self.bundle.plan, str(self.p["bundle"]))])
        arr.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(arr)


def plan_status(plan: Any, bundle: str) -> DiagnosticStatus:
    """The execution plan as a status: WARN while running on a CPU fallback, with the reasons."""
    level = DiagnosticStatus.WARN if plan.fallback else DiagnosticStatus.OK
    message = ("FALLBACK to cpu: " + "; ".join(plan.reasons)) if plan.fallback else f"as planned for {plan.target}"
    return DiagnosticStatus(level=level, name="emo_edge: execution plan", hardware_id=bundle, message=message,
                            values=[KeyValue(key=k, value=v) for k, v in flatten(plan.to_dict())])


def diagnostic_level(st: dict[str, Any], new_faults: dict[str, int]) -> tuple[bytes, str]:
    """(level, message): WARN for new faults since the last report or an input gone stale, ERROR if both are."""
    fresh = st["inputs_fresh"]
    missing = [k for k, ok in fresh.items() if not ok]
    parts = []
    if new_faults:
        parts.append("refused input: " + ", ".join(f"{k} x{n}" for k, n in sorted(new_faults.items())))
    if missing:
        parts.append(f"no {' or '.join(missing)} input")
    if st.get("slow_last_error") or st.get("step_last_error"):
        parts.append(f"error: {st.get('step_last_error') or st.get('slow_last_error')}")
    if len(missing) == len(fresh):
        return DiagnosticStatus.ERROR, "; ".join(parts)
    if parts:
        return DiagnosticStatus.WARN, "; ".join(parts)
    return DiagnosticStatus.OK, "running"


def flatten(d: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Nested stats -> ('latency_ms.head.median_ms', '12.3') pairs, floats rounded."""
    out: list[tuple[str, str]] = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out += flatten(v, key + ".")
        else:
            out.append((key, f"{v:.3f}" if isinstance(v, float) else str(v)))
    return out


def _autostart(node: EmotionNode) -> None:
    if node.autostart and node.trigger_configure() == TransitionCallbackReturn.SUCCESS:
        node.trigger_activate()  # a failed configure was logged; the node waits for change_state


def main(args: list[str] | None = None) -> None:
    spin_node(EmotionNode, args, start=_autostart)


if __name__ == "__main__":
    main()
