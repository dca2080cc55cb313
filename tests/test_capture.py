"""Live capture for real: a video streamed by ffmpeg over a loopback URL read by OpenCV (with a reconnect),
speech played into a PulseAudio null sink captured by sounddevice, and `emo-edge run` on both and on a file.

Each test needs system tools that scripts/setup.sh installs (ffmpeg, pulseaudio + paplay, espeak-ng,
PortAudio) and skips with the reason when one is missing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from emo_edge.data.synth import generate
from emo_edge.labels import reason_conclusion

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed (scripts/setup.sh)")
needs_pulse = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("pulseaudio", "paplay", "pactl")),
    reason="pulseaudio/paplay are not installed (scripts/setup.sh installs pulseaudio, pulseaudio-utils)")


def _sounddevice_ok() -> bool:
    try:
        import sounddevice  # noqa: F401
    except (ImportError, OSError):
        return False
    return True


needs_portaudio = pytest.mark.skipif(not _sounddevice_ok(), reason="sounddevice/PortAudio is not installed")


@pytest.fixture(scope="module")
def clips(tmp_path_factory, default_synth_version) -> Path:
    """Three SynthEmo test clips (seed 0: the first clips of the standard test split)."""
    out = tmp_path_factory.mktemp("live-clips")
    generate(out, 3, seed=0, split="test", workers=1, progress=False, version=default_synth_version)
    return out


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ffmpeg_stream(video: Path, url: str) -> subprocess.Popen:
    """ffmpeg looping `video` in real time as MPEG-TS to a loopback UDP URL."""
    return subprocess.Popen(["ffmpeg", "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", str(video),
                             "-r", "30", "-c:v", "mpeg1video", "-q:v", "3", "-f", "mpegts", f"{url}?pkt_size=1316"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _stop(p: subprocess.Popen) -> None:
    p.terminate()
    try:
        p.wait(5)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


@pytest.fixture
def pulse(tmp_path) -> dict[str, str]:
    """A private PulseAudio server with a null sink "emo_mic"; its monitor is the default source.
    Returns the environment that points clients (paplay, PortAudio's ALSA pulse device) at it."""
    run_dir = tmp_path / "pulse"
    run_dir.mkdir(mode=0o700)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(run_dir), "PULSE_SERVER": f"unix:{run_dir}/native",
           "PULSE_SOURCE": "emo_mic.monitor", "HOME": str(tmp_path)}
    proc = subprocess.Popen(["pulseaudio", "-n", "--daemonize=no", "--exit-idle-time=-1", "--use-pid-file=no",
                             "-L", f"module-native-protocol-unix socket={run_dir}/native",
                             "-L", "module-null-sink sink_name=emo_mic rate=16000 channels=1"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    for _ in range(100):
        if subprocess.run(["pactl", "info"], env=env, capture_output=True).returncode == 0:
            break
        if proc.poll() is not None:
            pytest.fail(f"pulseaudio exited: {proc.stderr.read().decode()[-500:]}")
        time.sleep(0.1)
    yield env
    _stop(proc)


def _play(wav: Path, env: dict[str, str], times: int = 1, gap_s: float = 1.0) -> subprocess.Popen:
    script = f"for i in $(seq {times}); do paplay -d emo_mic '{wav}'; sleep {gap_s}; done"
    return subprocess.Popen(["bash", "-c", script], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@needs_ffmpeg
def test_camera_reads_a_loopback_stream_and_reconnects(clips):
    from emo_edge.runtime.capture import CameraSource

    url = f"udp://127.0.0.1:{_free_udp_port()}"
    got: list[tuple[float, tuple]] = []
    ff = _ffmpeg_stream(clips / "test" / "synthemo-test-000000.mp4", url)
    cam = CameraSource(url, lambda t, f: got.append((t, f.shape)), reconnect_s=0.3, read_timeout_s=1.0).start()
    try:
        deadline = time.monotonic() + 20
        while len(got) < 30 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(got) >= 30, f"no frames from {url}: {dict(cam.counts)} {cam.last_error}"
        assert got[0][1] == (160, 160, 3) and all(b[0] >= a[0] for a, b in zip(got, got[1:], strict=False))
        _stop(ff)  # the stream vanishes ...
        time.sleep(2.5)
        assert cam.counts["reconnects"] >= 1 and "stopped delivering" in (cam.last_error or "")
        n = len(got)
        ff = _ffmpeg_stream(clips / "test" / "synthemo-test-000001.mp4", url)  # ... and returns
        deadline = time.monotonic() + 20
        while len(got) < n + 30 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(got) >= n + 30 and cam.counts["opened"] >= 2
    finally:
        cam.stop()
        _stop(ff)


@needs_pulse
@needs_portaudio
def test_mic_captures_speech_played_into_a_null_sink(clips, pulse):
    code = (
        "import time, numpy as np\n"
        "from emo_edge.runtime.capture import MicSource\n"
        "got = []\n"
        "m = MicSource('pulse', lambda t, x: got.append((t, x)), 16000).start()\n"
        "time.sleep(5); m.stop()\n"
        "x = np.concatenate([b for _, b in got])\n"
        "ts = [t for t, _ in got]\n"
        "print(len(x), float(np.abs(x).max()), all(b > a for a, b in zip(ts, ts[1:])), dict(m.counts), m.last_error)\n"
    )
    player = _play(clips / "test" / "synthemo-test-000000.wav", pulse, times=2, gap_s=0.5)
    try:
        res = subprocess.run([sys.executable, "-c", code], env=pulse, capture_output=True, text=True, timeout=60)
    finally:
        _stop(player)
    assert res.returncode == 0, res.stderr[-2000:]
    n, peak, ordered, counts = res.stdout.split(" ", 3)
    assert int(n) > 2 * 16000 and float(peak) > 0.05 and ordered == "True", res.stdout  # speech, not silence


def _run_cli(args: list[str], env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "emo_edge.cli", "run", *args]
    return subprocess.run(cmd, env={**(env or os.environ), "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=timeout)


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_run_on_a_file_prints_states_and_reasoning(default_bundle, clips, tmp_path):
    out = tmp_path / "out.jsonl"
    clip = clips / "test" / "synthemo-test-000001"
    res = _run_cli(["--bundle", str(default_bundle), "--video", f"{clip}.mp4", "--audio", f"{clip}.wav",
                    "--jsonl", str(out)])
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    recs = _records(out)
    states = [r for r in recs if r["type"] == "state"]
    utt = [s for s in states if s["utterance_id"] > 0 and s["source"] == "head" and s["status"] == "final"]
    assert len(utt) == 1 and utt[0]["present"] == [True, True] and utt[0]["label"] in utt[0]["labels"]
    # the end of the file: no window computed twice, nor again without the video once it went stale
    sliding = [s for s in states if s["utterance_id"] == 0]
    assert len({s["window_end"] for s in sliding}) == len(sliding) and all(s["present"] == [True, True]
                                                                            for s in sliding), sliding
    assert [s for s in states if s["source"] == "llm" and s["utterance_id"] == utt[0]["utterance_id"]]
    reasons = [r for r in recs if r["type"] == "reasoning"]
    assert reasons and reasons[-1]["done"] and len(reasons[-1]["text"]) > 20
    # the LLM label is the reason's conclusion (one generation): on this clip the old runtime's separate
    # one-word answer said sad while its reason concluded neutral
    done = {r["utterance_id"]: r["text"] for r in reasons if r["done"] and r["status"] == "final"}
    llm = [s for s in states if s["source"] == "llm" and s["status"] == "final"]
    assert llm and all(s["label"] == reason_conclusion(done[s["utterance_id"]]) for s in llm), (llm, done)
    assert recs[-1]["type"] == "stats" and recs[-1]["latency_ms"]["head"]["median_ms"] > 0
    assert "latency sliding window: median" in res.stdout and "reason" in res.stdout
    assert re.search(r"\d\.\d{3,} ms", res.stdout) is None, res.stdout  # rounded figures


@needs_ffmpeg
@needs_pulse
@needs_portaudio
def test_run_live_on_a_loopback_camera_and_a_null_sink_microphone(default_bundle, clips, pulse, tmp_path):
    url = f"udp://127.0.0.1:{_free_udp_port()}"
    out = tmp_path / "live.jsonl"
    ff = _ffmpeg_stream(clips / "test" / "synthemo-test-000002.mp4", url)
    player = _play(clips / "test" / "synthemo-test-000002.wav", pulse, times=6, gap_s=1.5)
    try:
        res = _run_cli(["--bundle", str(default_bundle), "--camera", url, "--mic", "pulse", "--seconds", "16",
                        "--jsonl", str(out)], env=pulse)
    finally:
        _stop(player)
        _stop(ff)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    recs = _records(out)
    states = [r for r in recs if r["type"] == "state" and r["source"] == "head"]
    both = [s for s in states if s["present"] == [True, True]]
    assert len(both) >= 5, f"{len(states)} states, {len(both)} with camera and microphone"
    assert any(s["utterance_id"] > 0 for s in states), "no utterance detected in the microphone input"
    stats = recs[-1]
    assert stats["type"] == "stats" and stats["rates_hz"]["frames"] > 0
    assert stats["sources"]["camera"]["frames"] > 100 and stats["sources"]["mic"]["blocks"] > 300
    assert np.isfinite(stats["latency_ms"]["head"]["p95_ms"])
