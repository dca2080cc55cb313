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
