"""Play recorded clips onto the image and audio topics at their real rate (a camera and a microphone stand-in).

    clip_player --jsonl data/synthemo-v2/test.jsonl --limit 10   # SynthEmo clips (mp4 + wav)
    clip_player --clips a.mp4:a.wav b.mp4:b.wav
    clip_player --bag recording.mcap                              # image + audio messages of an MCAP bag
    clip_player --jsonl data/synthemo-v2/test.jsonl --limit 2 --write-bag clips.mcap   # make such a bag
    clip_player --jsonl data/synthemo-v2/test.jsonl --limit 12 --join 1 2 --inner-pause-s 0.3 --write-bag b.mcap

Frames go out at --fps (each clip frame held for as long as it lasts), audio in --chunk-ms chunks of
S16LE at 16 kHz, both stamped with the node clock at their capture time. Between clips the last
frame is held with silence for --gap-s (a person in view, not speaking). --join makes utterances with
pauses inside: clips are taken in groups of the given sizes (cycled; `--join 1 2`: one clip, then two
joined, ...), and the clips of a group are played as one utterance with --inner-pause-s of silence
between their speech (the silence at the joined ends, as the VAD hears it, is trimmed, so the pause
is what --inner-pause-s says). --schedule writes each utterance's id, label and start/end stamps as
JSON (a joined one with the ids, labels and its inner pauses), so a test can match outputs to utterances.

--write-bag writes the same messages to an MCAP bag (topics /image or /image/compressed, and /audio)
instead of publishing them: on a virtual clock, so it takes no longer than decoding the clips, and
no message is lost to transport. `--bag` (or `emo-edge bench --bag`) replays it at real rate.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from emo_edge_msgs.msg import AudioChunk
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image

from emo_edge.audio import SAMPLE_RATE, load_wav
from emo_edge.runtime.vad import FRAME_MS, make_vad, webrtc_available
from emo_edge.vision import read_video
from emo_edge_ros.convert import rgb_to_image, s_to_stamp, samples_to_chunk

RATE = SAMPLE_RATE  # Hz, the model's one rate


def load_clips(args: argparse.Namespace) -> list[dict[str, Any]]:
    """[{id, label, frames (N, H, W, 3), fps, wave}] from --jsonl or --clips."""
    items = []
    if args.jsonl:
        root = Path(args.jsonl).parent
        recs = [json.loads(line) for line in Path(args.jsonl).read_text().splitlines() if line.strip()]
        items = [(r["id"], r.get("label"), root / r["video"], root / r["audio"]) for r in recs[:args.limit]]
    for spec in args.clips or []:
        video, _, audio = spec.partition(":")
        items.append((Path(video).stem, None, Path(video), Path(audio) if audio else None))
    out = []
    for cid, label, video, audio in items:
        frames, fps = read_video(video)
        wave = load_wav(audio, RATE) if audio else np.zeros(int(len(frames) / (fps or 30) * RATE), np.float32)
        out.append({"id": cid, "label": label, "frames": frames, "fps": fps or 30.0, "wave": wave})
    return out


def speech_span(wave: np.ndarray) -> tuple[int, int]:
    """(first, last) sample of `wave`'s speech, as the node's default VAD (WebRTC, aggressiveness 1) hears it."""
    n = RATE * FRAME_MS // 1000
    vad = make_vad("webrtc" if webrtc_available() else "energy", RATE, 1)
    speech = np.flatnonzero([vad.is_speech(wave[i:i + n]) for i in range(0, len(wave) - n + 1, n)])
    return (int(speech[0] * n), int((speech[-1] + 1) * n)) if speech.size else (0, len(wave))


def join_clips(clips: list[dict[str, Any]], pause_s: float) -> dict[str, Any]:
    """Clips -> one clip whose speech parts follow each other with `pause_s` of silence (the last frame held)."""
    if len(clips) == 1:
        return {**clips[0], "ids": [clips[0]["id"]], "labels": [clips[0]["label"]], "pauses": []}
    fps = clips[0]["fps"]
    waves, frames, pauses, t = [], [], [], 0.0
    for i, c in enumerate(clips):
        a, b = speech_span(c["wave"])
        a, b = (a if i > 0 else 0), (b if i < len(clips) - 1 else len(c["wave"]))
        seg = c["wave"][a:b]
        n_out = int(np.ceil(len(seg) / RATE * fps))  # frames of this part at the first clip's rate (they cover seg)
        src = [c["frames"][min(len(c["frames"]) - 1, int((a / RATE + k / fps) * c["fps"]))] for k in range(n_out)]
        waves.append(seg)
        frames += src
        t += n_out / fps
        if i < len(clips) - 1:
            n_pause = int(round(pause_s * fps))
            end = int(round((t + n_pause / fps) * RATE))  # the next part starts with its first frame
            waves.append(np.zeros(end - sum(len(w) for w in waves), np.float32))
            frames += [src[-1]] * n_pause
            pauses.append([t, t + n_pause / fps])
            t += n_pause / fps
    labels = [c["label"] for c in clips]
    return {"id": "+".join(c["id"] for c in clips), "ids": [c["id"] for c in clips], "labels": labels,
            "label": labels[0] if len(set(labels)) == 1 else None, "frames": np.stack(frames), "fps": fps,
            "wave": np.concatenate(waves).astype(np.float32), "pauses": pauses}


def group_clips(clips: list[dict[str, Any]], sizes: list[int], pause_s: float) -> list[dict[str, Any]]:
    """Consecutive clips in groups of `sizes` (cycled), each group joined into one utterance."""
    if not sizes or min(sizes) < 1:
        raise ValueError(f"--join: group sizes must be >= 1, got {sizes}")
    out, i, k = [], 0, 0
    while i < len(clips):
        n = sizes[k % len(sizes)]
        out.append(join_clips(clips[i:i + n], pause_s))
        i, k = i + n, k + 1
    return out


class BagSink:
    """Writes messages to an MCAP bag (CDR, ros2msg schemas) as the recorder does, stamped log_time = t."""

    def __init__(self, path: Path, topics: dict[str, str]):
        from mcap.writer import Writer

        from emo_edge_ros.recorder import msg_definition

        self._file = path.open("wb")
        self._writer = Writer(self._file)
        self._writer.start(profile="ros2", library="emo-edge clip_player")
        self._channels: dict[str, int] = {}
        self.counts: dict[str, int] = {}
        for topic, type_name in topics.items():
            schema = self._writer.register_schema(name=type_name, encoding="ros2msg",
                                                  data=msg_definition(type_name).encode())
            self._channels[topic] = self._writer.register_channel(topic=topic, message_encoding="cdr",
                                                                  schema_id=schema)
            self.counts[topic] = 0

    def write(self, topic: str, msg: Any, t: float) -> None:
        from rclpy.serialization import serialize_message

        ns = int(round(t * 1e9))
        self._writer.add_message(channel_id=self._channels[topic], log_time=ns, publish_time=ns,
                                 data=serialize_message(msg), sequence=self.counts[topic])
        self.counts[topic] += 1

    def close(self) -> None:
        self._writer.finish()
        self._file.close()


class ClipPlayer(Node):
    """Publishes frames and audio chunks in real time, or with a `BagSink` writes them on a virtual clock."""

    def __init__(self, transport: str, fps: float, chunk_ms: float, frame_id: str, sink: BagSink | None = None):
        super().__init__("emo_edge_player")
        self.transport, self.fps, self.chunk, self.frame_id = transport, fps, int(RATE * chunk_ms / 1000), frame_id
        img_type, img_topic = (CompressedImage, "image/compressed") if transport == "compressed" else (Image, "image")
        self.image_topic = "/" + img_topic
        self.sink = sink
        if sink is None:
            self.image_pub = self.create_publisher(img_type, img_topic, qos_profile_sensor_data)
            self.audio_pub = self.create_publisher(AudioChunk, "audio", qos_profile_sensor_data)
        self.img_type = img_type
        self.sent = {"frames": 0, "audio_chunks": 0}  # what play() has published (or written to the bag)
        self._virtual = self.get_clock().now().nanoseconds * 1e-9  # s, the bag's clock (it starts now)

    def now(self) -> float:
        return self._virtual if self.sink is not None else self.get_clock().now().nanoseconds * 1e-9

    def wait_until(self, t: float) -> None:
        if self.sink is not None:
            self._virtual = max(self._virtual, t)
            return
        delay = t - self.now()
        if delay > 0:
            time.sleep(delay)

    def wait_for_subscribers(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.image_pub.get_subscription_count() and self.audio_pub.get_subscription_count():
                return True
            time.sleep(0.05)
        return False

    def publish_frame(self, t: float, frame: np.ndarray) -> None:
        msg = self.img_type()
        msg.header.stamp, msg.header.frame_id = s_to_stamp(t), self.frame_id
        if self.transport == "compressed":
            import cv2

            msg.format = "jpeg"
            bgr = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
            msg.data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
        else:
            rgb_to_image(frame, msg)
        if self.sink is not None:
            self.sink.write(self.image_topic, msg, t)
        else:
            self.image_pub.publish(msg)

    def publish_audio(self, t: float, samples: np.ndarray) -> None:
        msg = AudioChunk()
        msg.header.stamp, msg.header.frame_id = s_to_stamp(t), self.frame_id
        samples_to_chunk(samples, RATE, msg)
        if self.sink is not None:
            self.sink.write("/audio", msg, t)
        else:
            self.audio_pub.publish(msg)

    def play(self, frames_at: Any, wave: np.ndarray, seconds: float) -> float:
        """Publish `seconds` of input in real time from now: frames_at(rel_s) -> frame, audio from `wave`
        (zero-padded). Returns the start stamp."""
        t0 = self.now()
        n_frames, n_chunks = int(round(seconds * self.fps)), int(np.ceil(seconds * RATE / self.chunk))
        events = sorted([(i / self.fps, 0) for i in range(n_frames)] + [(k * self.chunk / RATE, 1)
                                                                          for k in range(n_chunks)])
        for rel, kind in events:
            self.wait_until(t0 + rel)
            if kind == 0:
                self.publish_frame(t0 + rel, frames_at(rel))
                self.sent["frames"] += 1
            else:
                k = int(round(rel * RATE))
                chunk = np.zeros(self.chunk, np.float32)
                part = wave[k:k + self.chunk]
                chunk[:len(part)] = part
                self.publish_audio(t0 + rel, chunk)
                self.sent["audio_chunks"] += 1
        self.wait_until(t0 + seconds)
        return t0


def play_clips(node: ClipPlayer, clips: list[dict[str, Any]], gap_s: float, lead_s: float) -> list[dict[str, Any]]:
    schedule = []
    held = clips[0]["frames"][0]
    node.play(lambda rel: held, np.zeros(0, np.float32), lead_s)
    for c in clips:
        frames, fps, wave = c["frames"], c["fps"], c["wave"]
        seconds = max(len(frames) / fps, len(wave) / RATE)
        t0 = node.play(lambda rel, f=frames, r=fps: f[min(int(rel * r), len(f) - 1)], wave, seconds)
        entry = {"id": c["id"], "label": c["label"], "start": t0, "end": t0 + seconds}
        if len(c.get("ids", [])) > 1:  # a joined utterance: its clips and the pauses between them (stamps)
            entry.update(ids=c["ids"], labels=c["labels"], pauses=[[t0 + a, t0 + b] for a, b in c["pauses"]])
        schedule.append(entry)
        last = frames[-1]
        node.play(lambda rel, f=last: f, np.zeros(0, np.float32), gap_s)
    return schedule


def play_bag(node: ClipPlayer, path: Path, image_topic: str, audio_topic: str) -> None:
    """Republish a bag's image and audio messages with their recorded spacing and fresh stamps."""
    from mcap.reader import make_reader
    from rclpy.serialization import deserialize_message

    from emo_edge_ros.recorder import message_class

    start_log = start_now = None
    with path.open("rb") as f:
        for schema, channel, message in make_reader(f).iter_messages(topics=[image_topic, audio_topic]):
            if start_log is None:
                start_log, start_now = message.log_time, node.now()
            due = start_now + (message.log_time - start_log) * 1e-9
            delay = due - node.now()
            if delay > 0:
                time.sleep(delay)
            msg = deserialize_message(message.data, message_class(schema.name))
            msg.header.stamp = s_to_stamp(due)
            (node.image_pub if channel.topic == image_topic else node.audio_pub).publish(msg)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jsonl", help="a unified-format JSONL (video + audio paths relative to it)")
    ap.add_argument("--limit", type=int, default=None, help="with --jsonl: the first N clips")
    ap.add_argument("--clips", nargs="*", help="VIDEO[:WAV] pairs")
    ap.add_argument("--bag", type=Path, help="an MCAP bag to replay (its image and audio topics)")
    ap.add_argument("--bag-image-topic", default="/image")
    ap.add_argument("--bag-audio-topic", default="/audio")
    ap.add_argument("--fps", type=float, default=30.0, help="published frame rate, Hz")
    ap.add_argument("--chunk-ms", type=float, default=20.0, help="audio chunk length, ms")
    ap.add_argument("--gap-s", type=float, default=1.5, help="silence between clips, s")
    ap.add_argument("--lead-s", type=float, default=1.0, help="silence before the first clip, s")
    ap.add_argument("--join", type=int, nargs="+", default=[1],
                    help="group sizes, cycled: the clips of a group are played as one utterance with inner pauses")
    ap.add_argument("--inner-pause-s", type=float, default=0.3, help="with --join: silence between joined clips, s")
    ap.add_argument("--transport", choices=("raw", "compressed"), default="raw")
    ap.add_argument("--frame-id", default="camera")
    ap.add_argument("--wait-subscribers", type=float, default=30.0, help="s to wait for the node to subscribe")
    ap.add_argument("--schedule", type=Path, help="write the clips' ids, labels and start/end stamps here (JSON)")
    ap.add_argument("--write-bag", type=Path, help="write the clips to this MCAP bag instead of publishing them")
    args, ros_args = ap.parse_known_args(argv)
    if args.write_bag and args.bag:
        ap.error("--write-bag makes a bag from clips (--jsonl/--clips); it cannot take --bag")
    rclpy.init(args=ros_args)
    node = sink = None
    try:
        if args.write_bag:
            compressed = args.transport == "compressed"
            image = ("/image/compressed", "sensor_msgs/msg/CompressedImage") if compressed else \
                ("/image", "sensor_msgs/msg/Image")
            sink = BagSink(args.write_bag, {image[0]: image[1], "/audio": "emo_edge_msgs/msg/AudioChunk"})
        node = ClipPlayer(args.transport, args.fps, args.chunk_ms, args.frame_id, sink)
        if sink is None and not node.wait_for_subscribers(args.wait_subscribers):
            node.get_logger().warning("no subscriber on image and audio; playing anyway")
        if args.bag:
            play_bag(node, args.bag, args.bag_image_topic, args.bag_audio_topic)
        else:
            clips = group_clips(load_clips(args), args.join, args.inner_pause_s)
            first = node.now()
            schedule = play_clips(node, clips, args.gap_s, args.lead_s)
            if args.schedule:
                args.schedule.write_text(json.dumps(schedule, indent=1))
            # what went out and when (its first and last stamps): a subscriber can check it lost nothing
            print(json.dumps({"sent": node.sent, "played": [first, node.now()]}), flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        if sink is not None:
            sink.close()
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
