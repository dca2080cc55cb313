"""The emotion node: a managed (lifecycle) node, a thin adapter over `emo_edge.runtime.stream.StreamRuntime`.

    image (sensor_msgs/Image) or image/compressed (CompressedImage) ─┐ sensor-data QoS; callbacks only
    audio (emo_edge_msgs/AudioChunk, or audio_common_msgs audio      ─┤ convert and push into the rings
           + audio_info: audio_type, emo_edge_ros/inputs.py)          │
    transcript (std_msgs/String or hri_msgs/LiveSpeech)              ─┤ the text modality, by time
    or direct capture (OpenCV camera + PortAudio microphone)        ─┘
        StreamRuntime (its own step thread + LLM worker) ─► emotion/state (EmotionState)
                                                         ─► emotion/reasoning (Reasoning, streamed)
                                                         ─► /humans/faces/<id>/expression (hri_msgs/Expression,
                                                            REP-155, when hri_msgs is installed: hri.py)
    timer ─► /diagnostics (rates, latency median/p95, faults, errors, LLM queue)

Lifecycle (the /emo_edge/change_state and /emo_edge/get_state services):
    configure   read the parameters, load the bundle (a bad one fails the transition: logged, the node stays
                unconfigured and alive), create the (lifecycle) publishers
    activate    subscribe (or open the camera + microphone), start the stream, publish
    deactivate  unsubscribe / close the devices, stop the stream; nothing is published while inactive
    cleanup     release the runtime and the bundle's sessions
With autostart (the default) the node configures and activates itself at start.

Parameters are declared once, with descriptions, from one table (params.py: the node's own and the
StreamConfig settings), and read once per configure; config/params.yaml is generated from it.
Refused input is warned about (throttled), counted by kind and reported on /diagnostics; the node
keeps running. Any other exception in a callback or the runtime's threads is caught, counted by kind,
logged with its traceback (throttled, faults.py) and reported as ERROR on /diagnostics; the node keeps
running, and a failed LLM job ends only that job. Inference never runs in a subscription callback.
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
from emo_edge.runtime.settings import SETTINGS, from_flat
from emo_edge.runtime.stream import EmotionUpdate, ReasoningUpdate, StreamRuntime
from emo_edge_ros.convert import audio_to_array, compressed_to_rgb, image_to_rgb, s_to_stamp, stamp_to_s
from emo_edge_ros.faults import FaultLog
from emo_edge_ros.hri import ExpressionOrder
from emo_edge_ros.inputs import audio_common_to_array, import_msg, live_speech_text
from emo_edge_ros.params import AUDIO_TYPES, TRANSCRIPT_TYPES, node_parameters
from emo_edge_ros.spin import spin_node

STATUS = {"final": EmotionState.STATUS_FINAL, "provisional": EmotionState.STATUS_PROVISIONAL,
          "withdrawn": EmotionState.STATUS_WITHDRAWN}
WARN_EVERY_S = 2.0  # s, throttle of input warnings


class EmotionNode(LifecycleNode):
    def __init__(self) -> None:
        super().__init__("emo_edge")
        self.params = node_parameters()
        for name, (default, text) in self.params.items():
            self.declare_parameter(name, default, ParameterDescriptor(description=text))
        self.autostart = bool(self.get_parameter("autostart").value)
        self.errors = FaultLog(self.get_logger(), self._now)
        self.p: dict[str, Any] = {}
        self.runtime: Any = None
        self.bundle: Any = None
        self.stream: StreamRuntime | None = None
        self.frame_id = ""
        self._pubs: list[Any] = []
        self._subs: list[Any] = []
        self._sources: list[Any] = []
        self._timer: Any = None
        self._audio_info: Any = None  # the last audio_common_msgs/AudioInfo (audio_type audio_data*)
        self.hri: Any = None  # hri.ExpressionPublisher when expressions are published
        self._expression_order = ExpressionOrder()
        self._faults_reported: dict[str, int] = {}
        self._errors_reported: dict[str, int] = {}
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
        self._start_hri(p)
        took = ", ".join(f"{k.removesuffix('_s')} {v:.2f} s" for k, v in self.stream.load_s.items())
        self.get_logger().info(f"configured: bundle {p['bundle']} loaded ({self.bundle.precision}, "
                               f"{self.bundle.quant}; opened: {took}); input={p['input']}, fast_hz={p['fast_hz']}, "
                               f"vad={p['vad']}, slow={p['slow']}")
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        result = super().on_activate(state)  # enables the lifecycle publishers first
        self._connect_inputs(self.p)
        self._timer = self.create_timer(1.0 / self.p["diagnostics_hz"],
                                        self.errors.guard("diagnostics", self._publish_diagnostics))
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
        if self.hri is not None:
            self.hri.close()
            self.hri = None
        for pub in self._pubs:
            self.destroy_lifecycle_publisher(pub)
        if self.bundle is not None:
            self.bundle.close()
        self._pubs, self.stream, self.runtime, self.bundle = [], None, None, None

    # -- setup -------------------------------------------------------------------------------------
    def _read_params(self) -> dict[str, Any]:
        p = {name: self.get_parameter(name).value for name in self.params}
        checks = (("input", ("topics", "capture")), ("image_transport", ("raw", "compressed", "both")),
                  ("stamp_source", ("header", "arrival")), ("audio_type", AUDIO_TYPES),
                  ("transcript_type", TRANSCRIPT_TYPES), ("fallback", ("", "cpu")))
        for name, options in checks:
            if p[name] not in options:
                raise ValueError(f"parameter {name}={p[name]!r}: choose one of {', '.join(options)}")
        if not p["bundle"]:
            raise ValueError("parameter 'bundle' is required: an exported emo-edge bundle directory")
        if p["diagnostics_hz"] <= 0:
            raise ValueError(f"parameter diagnostics_hz must be > 0, got {p['diagnostics_hz']}")
        if p["audio_queue_depth"] < 1:
            raise ValueError(f"parameter audio_queue_depth must be >= 1 (chunks), got {p['audio_queue_depth']}")
        from_flat({k: p[k] for k in SETTINGS})  # a bad stream setting fails configure, naming it
        if p["input"] == "topics":  # an input type whose interface package is missing fails configure, naming it
            self._audio_types(p["audio_type"])
            if p["transcript_type"] == "live_speech":
                import_msg("hri_msgs", "LiveSpeech", "transcript_type=live_speech")
        return p

    @staticmethod
    def _audio_types(audio_type: str) -> tuple[Any, Any | None]:
        """(audio message type, AudioInfo type or None) of an audio_type."""
        if audio_type == "chunk":
            return AudioChunk, None
        name = "AudioDataStamped" if audio_type == "audio_data_stamped" else "AudioData"
        return (import_msg("audio_common_msgs", name, f"audio_type={audio_type}"),
                import_msg("audio_common_msgs", "AudioInfo", f"audio_type={audio_type}"))

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
        cfg = from_flat({k: self.p[k] for k in SETTINGS})
        return StreamRuntime(self.runtime, self.bundle.frontend, cfg, clock=self._now,
                             on_state=self.errors.guard("state", self._publish_state),
                             on_reasoning=self._publish_reasoning, on_error=self.errors.record)

    def _start_hri(self, p: dict[str, Any]) -> None:
        """hri_msgs/Expression output when asked for and hri_msgs is installed (a warning otherwise)."""
        if not p["hri_expression"]:
            return
        try:
            from emo_edge_ros.hri import EXPRESSIONS, ExpressionPublisher

            self.hri = ExpressionPublisher(self, p["hri_expression_topic"], p["hri_face_id"], p["hri_default_face_id"],
                                           self.errors.guard)
        except ImportError:
            self.get_logger().warning("hri_msgs is not installed: no REP-155 expressions are published")
            return
        except Exception as e:  # noqa: BLE001 - e.g. a bad topic pattern: the rest of the node still runs
            self.errors.record("hri_setup", e)
            return
        unmapped = [lb for lb in self.runtime.labels if lb.lower() not in EXPRESSIONS]
        if unmapped:
            self.get_logger().warning(f"labels without a REP-155 expression (published as ''): {unmapped}")

    def _connect_inputs(self, p: dict[str, Any]) -> None:
        if p["input"] == "capture":
            from emo_edge.runtime.capture import CameraSource, MicSource

            rate = self.stream.fe.sample_rate
            push_audio = self.errors.guard("mic", self._guarded(lambda t, x: self.stream.push_audio(t, x, rate)))
            push_frame = self.errors.guard("camera", self._guarded(self.stream.push_frame))
            self._sources = [CameraSource(p["camera"], push_frame, clock=self._now),
                             MicSource(None if p["mic"] == "default" else p["mic"], push_audio, rate, clock=self._now)]
            for s in self._sources:
                s.start()
            return
        guard, sub = self.errors.guard, self.create_subscription
        if p["image_transport"] in ("compressed", "both"):
            self._subs.append(sub(CompressedImage, "image/compressed", guard("image", self._on_compressed),
                                  qos_profile_sensor_data))
        if p["image_transport"] in ("raw", "both"):
            self._subs.append(sub(Image, "image", guard("image", self._on_image), qos_profile_sensor_data))
        self._subs += self._audio_subscriptions(p["audio_type"])
        if p["transcript_type"] != "off":
            self._subs.append(self._transcript_subscription(p["transcript_type"]))

    def _audio_subscriptions(self, audio_type: str) -> list[Any]:
        guard, sub = self.errors.guard, self.create_subscription
        audio, info = self._audio_types(audio_type)
        # best effort + volatile matches any publisher's QoS. Unlike frames (the newest matter), every audio chunk
        # counts: with the sensor-data depth of 5, a publisher catching up in a burst of 20 ms chunks, or callbacks
        # held up for 100 ms, lose audio (the ring fills the hole with silence: buffers.audio_gaps)
        audio_qos = QoSProfile(depth=self.p["audio_queue_depth"], reliability=qos_profile_sensor_data.reliability,
                               durability=qos_profile_sensor_data.durability, history=qos_profile_sensor_data.history)
        if info is None:
            return [sub(audio, "audio", guard("audio", self._on_audio), audio_qos)]
        on_audio = self._on_audio_stamped if audio_type == "audio_data_stamped" else self._on_audio_data
        # AudioInfo is expected to be repeated
        return [sub(info, "audio_info", guard("audio_info", self._on_audio_info), qos_profile_sensor_data),
                sub(audio, "audio", guard("audio", on_audio), audio_qos)]

    def _transcript_subscription(self, kind: str) -> Any:
        if kind == "live_speech":
            msg_type = import_msg("hri_msgs", "LiveSpeech", "transcript_type=live_speech")
            return self.create_subscription(msg_type, "transcript", self.errors.guard("transcript", self._on_speech),
                                            10)
        from std_msgs.msg import String

        return self.create_subscription(String, "transcript", self.errors.guard("transcript", self._on_transcript), 10)

    # -- input callbacks: message -> array -> ring (no inference here) -------------------------------
    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _stamp(self, header: Any) -> float:
        if header is None:
            return self._now()
        return stamp_to_s(header.stamp) if self.p["stamp_source"] == "header" else self._now()

    def _camera_frame(self, header: Any) -> Any:
        """The outputs' frame_id is the camera's (not the microphone's)."""
        if header.frame_id:
            self.frame_id = header.frame_id
        return header

    def _on_image(self, msg: Image) -> None:
        self._push(self._camera_frame(msg.header), lambda: image_to_rgb(msg), self.stream.push_frame)

    def _on_compressed(self, msg: CompressedImage) -> None:
        self._push(self._camera_frame(msg.header), lambda: compressed_to_rgb(msg), self.stream.push_frame)

    def _on_audio(self, msg: AudioChunk) -> None:
        self._push(msg.header, lambda: audio_to_array(msg), lambda t, x: self.stream.push_audio(t, x, msg.sample_rate))

    def _on_audio_info(self, msg: Any) -> None:
        self._audio_info = msg

    def _on_audio_stamped(self, msg: Any) -> None:
        info = self._audio_info
        self._push(msg.header, lambda: audio_common_to_array(bytes(msg.audio.data), info),
                   lambda t, x: self.stream.push_audio(t, x, info.sample_rate))

    def _on_audio_data(self, msg: Any) -> None:
        """Unstamped audio: its first sample was captured about one chunk length before it arrived."""
        info = self._audio_info

        def push(t: float, x: np.ndarray) -> None:
            self.stream.push_audio(self._now() - len(x) / info.sample_rate, x, info.sample_rate)
        self._push(None, lambda: audio_common_to_array(bytes(msg.data), info), push)

    def _on_transcript(self, msg: Any) -> None:
        self.stream.push_transcript(self._now(), msg.data)

    def _on_speech(self, msg: Any) -> None:
        text = live_speech_text(msg)
        if text:
            self.stream.push_transcript(self._stamp(msg.header), text)

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
        msg.status = STATUS[u.status]
        if u.speech_end:
            msg.speech_end = s_to_stamp(u.speech_end)
        msg.video_present, msg.audio_present = u.present
        msg.text_present, msg.transcript = u.transcript is not None, u.transcript or ""
        msg.attributes, msg.attribute_values = list(u.attributes), list(u.attribute_values)
        msg.attribute_scores = [float(s) for s in u.attribute_scores]
        msg.latency_ms = float((self._now() - u.window_end) * 1000.0)  # up to the publish call itself
        self.state_pub.publish(msg)
        if self.hri is not None and u.source == "head" and self._expression_order.admit(u.status, u.window_end):
            self.hri.publish(msg.header, u.label, u.scores, u.labels, u.valence, u.arousal)

    def _publish_reasoning(self, r: ReasoningUpdate) -> None:
        msg = Reasoning()
        msg.header.stamp, msg.header.frame_id = s_to_stamp(r.window_end), self.frame_id
        msg.utterance_id, msg.text, msg.done, msg.status = r.utterance_id, r.text, r.done, STATUS[r.status]
        self.reason_pub.publish(msg)

    def _publish_diagnostics(self) -> None:
        st = self.stream.stats()
        st["errors"] = {**st["errors"], **self.errors.counts}  # runtime threads' and the node's callbacks'
        new = {k: v - self._faults_reported.get(k, 0) for k, v in st["faults"].items()
               if v > self._faults_reported.get(k, 0)}
        new_errors = {k: v - self._errors_reported.get(k, 0) for k, v in st["errors"].items()
                      if v > self._errors_reported.get(k, 0)}
        self._faults_reported, self._errors_reported = dict(st["faults"]), dict(st["errors"])
        level, message = diagnostic_level(st, new, new_errors)
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


def diagnostic_level(st: dict[str, Any], new_faults: dict[str, int],
                     new_errors: dict[str, int] | None = None) -> tuple[bytes, str]:
    """(level, message): WARN for new faults since the last report or an input gone stale; ERROR for exceptions
    caught since the last report (by kind) or both inputs stale."""
    fresh = st["inputs_fresh"]
    missing = [k for k, ok in fresh.items() if not ok]
    parts = []
    if new_errors:
        parts.append("exceptions: " + ", ".join(f"{k} x{n}" for k, n in sorted(new_errors.items())))
    if new_faults:
        parts.append("refused input: " + ", ".join(f"{k} x{n}" for k, n in sorted(new_faults.items())))
    if missing:
        parts.append(f"no {' or '.join(missing)} input")
    if st.get("slow_last_error") or st.get("step_last_error"):
        parts.append(f"error: {st.get('step_last_error') or st.get('slow_last_error')}")
    if len(missing) == len(fresh):
        return DiagnosticStatus.ERROR, "; ".join(parts + ["fast path paused until input returns"])
    if new_errors:
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
