import cv2
import numpy as np
import pytest
import soundfile as sf

from emo_edge.audio import AudioError, fit_length, load_wav, log_mel, mel_filters
from emo_edge.config import FrontendConfig
from emo_edge.vision import VideoError, peak_index, read_video, sample_indices, video_views


def test_mel_filters_cover_the_spectrum_in_order():
    fb = mel_filters(64, 400, 16000)
    assert fb.shape == (64, 201)
    peaks = fb.argmax(axis=1)
    assert np.all(np.diff(peaks) >= 0) and peaks[-1] > peaks[0]
    assert np.all(fb >= 0)


def test_log_mel_puts_a_tone_in_the_right_band():
    fe = FrontendConfig()
    t = np.arange(fe.n_samples) / fe.sample_rate
    low = log_mel(0.5 * np.sin(2 * np.pi * 300 * t).astype(np.float32), fe.n_mels, fe.n_fft, fe.hop_length)
    high = log_mel(0.5 * np.sin(2 * np.pi * 3000 * t).astype(np.float32), fe.n_mels, fe.n_fft, fe.hop_length)
    assert low.shape == (fe.n_mels, fe.n_mel_frames)
    assert low.mean(axis=1).argmax() < high.mean(axis=1).argmax()


def test_fit_length_pads_and_crops():
    assert fit_length(np.ones(5, np.float32), 8).tolist() == [1] * 5 + [0] * 3
    assert fit_length(np.arange(10, dtype=np.float32), 4).tolist() == [0, 1, 2, 3]


def test_wav_errors_name_the_problem(tmp_path):
    with pytest.raises(AudioError, match="not found"):
        load_wav(tmp_path / "none.wav")
    sf.write(tmp_path / "r44.wav", np.zeros(4410, np.float32), 44100)
    with pytest.raises(AudioError, match="44100 Hz, expected 16000 Hz"):
        load_wav(tmp_path / "r44.wav")
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match="empty"):
        load_wav(tmp_path / "empty.wav")
    (tmp_path / "junk.wav").write_bytes(b"RIFF not really a wav")
    with pytest.raises(AudioError, match="unreadable"):
        load_wav(tmp_path / "junk.wav")


def test_stereo_is_downmixed(tmp_path):
    sf.write(tmp_path / "st.wav", np.stack([np.full(160, 0.5), np.full(160, -0.5)], 1).astype(np.float32), 16000)
    assert np.allclose(load_wav(tmp_path / "st.wav"), 0.0, atol=1e-4)


def test_sample_indices_are_spread_and_in_range():
    idx = sample_indices(30, 8)
    assert len(idx) == 8 and idx[0] >= 0 and idx[-1] <= 29 and np.all(np.diff(idx) > 0)
    assert sample_indices(3, 8).max() == 2


def test_peak_frame_is_the_largest_change():
    frames = np.zeros((10, 48, 48, 3), np.uint8)
    for i in range(10):
        cv2.circle(frames[i], (24, 24), [0, 2, 4, 8, 14, 20, 12, 6, 3, 0][i], (255, 255, 255), -1)
    assert peak_index(frames) == 5
    temporal, peak = video_views(frames, 4, 32, 64)
    assert temporal.shape == (4, 32, 32, 3) and peak.shape == (64, 64, 3) and peak.dtype == np.uint8


def _held_expression_with_a_blink(blink_at: int) -> np.ndarray:
    """A blob grows in over frames 3-5 and stays; two frames from `blink_at` a dark bar (a blink) crosses it."""
    frames = np.zeros((16, 48, 48, 3), np.uint8)
    for i in range(16):
        cv2.circle(frames[i], (24, 30), [0, 0, 0, 4, 8, 12][min(i, 5)], (255, 255, 255), -1)
        cv2.rectangle(frames[i], (8, 8), (40, 16), (200, 200, 200), -1)  # the open eyes
        if blink_at <= i < blink_at + 2:
            frames[i, 8:17, 8:41] = 40
    return frames


@pytest.mark.parametrize("blink_at", [5, 6, 9])
def test_the_sustained_peak_frame_is_never_a_blink(blink_at):
    """max_change takes the blink as the peak; sustained takes a frame of the held expression beside it."""
    frames = _held_expression_with_a_blink(blink_at)
    assert peak_index(frames, "max_change") in (blink_at, blink_at + 1)
    peak = peak_index(frames, "sustained")
    assert peak not in (blink_at, blink_at + 1) and peak >= 5, peak
    _, image = video_views(frames, 4, 16, 48, peak="sustained")
    assert np.array_equal(image, frames[peak])
    with pytest.raises(ValueError, match="sustained"):
        peak_index(frames, "middle")


def test_sustained_peak_frames_of_synthemo_v2_keep_the_eyes_open():
    """SynthEmo v2 clips with frequent blinking: the first selector shows shut eyes in about half of the peak frames
    (65 of 120 clips when measured), the sustained one in a few (4 of 120)."""
    from emo_edge.data import synth_v2 as v2
    from emo_edge.labels import LABELS

    shut = {"max_change": 0, "sustained": 0}
    for seed in range(24):
        rng = np.random.default_rng(1000 + seed)
        label = LABELS[seed % 6]
        attrs = {**v2.sample_attributes(rng, label), "blinking": "frequent"}
        scene, _ = v2.draw_scene(rng, v2.VISUAL_FAMILY[label], attrs, int(rng.integers(30, 61)))
        frames = np.stack([v2.frame_at(scene, i)[..., ::-1] for i in range(len(scene.poses))])
        for method in shut:
            shut[method] += int(scene.blinks[peak_index(frames, method)] < 1)
    assert shut["max_change"] >= 6 and shut["sustained"] <= 2, shut


def test_video_errors(tmp_path):
    with pytest.raises(VideoError, match="not found"):
        read_video(tmp_path / "none.mp4")
    (tmp_path / "bad.mp4").write_bytes(b"\x00" * 100)
    with pytest.raises(VideoError, match="bad.mp4"):
        read_video(tmp_path / "bad.mp4")
    with pytest.raises(VideoError, match=r"\(N, H, W, 3\)"):
        video_views(np.zeros((4, 8, 8), np.uint8), 2, 16, 16)


def test_peak_frame_ignores_steady_drift():
    # a bright bar sweeps steadily across the frame (global drift); a blob appears and fades mid-clip
    frames = np.zeros((12, 48, 48, 3), np.uint8)
    for i in range(12):
        frames[i, :, 4 * i : 4 * i + 4] = 200
        cv2.circle(frames[i], (24, 24), [0, 0, 2, 5, 9, 12, 9, 5, 2, 0, 0, 0][i], (255, 255, 255), -1)
    assert peak_index(frames) == 5


def test_the_frontend_names_its_peak_frame_selector():
    """One setting, FrontendConfig.peak_frame, decides the selector for training, evaluation and the runtime; a
    config without it (every checkpoint and bundle written before it) means the first selector."""
    from emo_edge.clip import clip_from_media
    from emo_edge.config import FrontendConfig

    assert FrontendConfig().peak_frame == "max_change"
    with pytest.raises(ValueError, match="peak_frame"):
        FrontendConfig(peak_frame="middle")
    frames, wave = _held_expression_with_a_blink(6), np.zeros(16000, np.float32)
    for method, peak in (("max_change", 6), ("sustained", 5)):
        fe = FrontendConfig(n_mels=16, window_seconds=1.0, n_frames=4, frame_size=16, image_size=48, peak_frame=method)
        assert np.array_equal(clip_from_media(frames, wave, fe).image, frames[peak]), method
