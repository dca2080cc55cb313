"""The observable-attribute objective: targets from SynthEmo v2's per-clip values, masked where the
attribute's stream is absent or the clip has none, and a loss that counts only known targets."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from emo_edge.config import TrainConfig
from emo_edge.data.schema import Record
from emo_edge.data.synth_v2 import ATTRIBUTES
from emo_edge.train.data import ATTRIBUTE_STREAM, PROBE_ATTRIBUTES, attribute_targets
from emo_edge.train.loop import attribute_loss_sum, probe_attribute_loss_sum

NAMES = [a.name for a in ATTRIBUTES]


def _record(values: dict[str, str] | None) -> Record:
    meta = {"attributes": values} if values is not None else {}
    return Record(id="x", dataset="SynthEmo", video="v.mp4", audio="a.wav", subtitle="", label="happy",
                  targets={}, cues=[], split="train", meta=meta)


def test_attribute_order_and_views_are_the_documented_ones():
    assert NAMES == ["intensity", "mouth", "head", "gaze", "blinking", "onset", "contour", "pause", "rate",
                     "loudness"]
    assert ATTRIBUTE_STREAM.tolist() == [1] * 6 + [2] * 4  # video for the face, audio for the voice


def test_targets_one_for_the_first_sorted_value_zero_for_the_other_minus_one_unknown():
    values = {"intensity": "mild", "mouth": "lopsided", "head": "upright", "gaze": "direct", "blinking": "none",
              "onset": "sudden", "contour": "falling", "pause": "pause", "rate": "fast", "loudness": "quieter"}
    t = attribute_targets([_record(values), _record(None), _record({"head": "tilted"})])
    # sorted values: mild<strong, even<lopsided, tilted<upright, averted<direct, frequent<none, slow<sudden,
    # falling<rising, fluent<pause, fast<slow, louder<quieter
    assert t[0].tolist() == [1, 0, 0, 0, 0, 0, 1, 0, 1, 0]
    assert t[1].tolist() == [-1] * 10
    assert t[2].tolist() == [-1, -1, 1, -1, -1, -1, -1, -1, -1, -1]


def test_loss_counts_only_known_targets():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.3, 0.3, -4.0]])
    targets = torch.tensor([[1.0, -1.0, 0.0], [-1.0, -1.0, 1.0]])
    got = attribute_loss_sum({"attributes": logits}, targets)
    want = (F.binary_cross_entropy_with_logits(logits[0, 0], torch.tensor(1.0))
            + F.binary_cross_entropy_with_logits(logits[0, 2], torch.tensor(0.0))
            + F.binary_cross_entropy_with_logits(logits[1, 2], torch.tensor(1.0)))
    torch.testing.assert_close(got, want)
    assert attribute_loss_sum({}, targets).item() == 0.0  # no attribute head: no loss
    assert attribute_loss_sum({"attributes": logits}, torch.full_like(targets, -1.0)).item() == 0.0


def test_each_encoder_probe_is_asked_only_what_its_view_shows():
    by_stream = {k: [n for n, on in zip(NAMES, row, strict=True) if on] for k, row in
                 zip(("image", "video", "audio"), PROBE_ATTRIBUTES, strict=True)}
    assert by_stream == {"image": ["intensity", "mouth", "head", "gaze"],  # one frame shows no blink rate or onset
                         "video": ["blinking", "onset"],  # what the frames add to the peak frame
                         "audio": ["contour", "pause", "rate", "loudness"]}


def test_probe_attribute_loss_counts_each_encoder_on_its_view_only():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, len(NAMES), generator=g)
    targets = torch.tensor([[1.0] * 6 + [0.0] * 4, [-1.0] * 6 + [1.0] * 4])  # clip 1: face dropped
    got = probe_attribute_loss_sum({"aux_attr": logits}, targets)
    want = torch.zeros(())
    for b in range(2):
        for m in range(3):
            for a in range(len(NAMES)):
                if targets[b, a] >= 0 and PROBE_ATTRIBUTES[m, a]:
                    want = want + F.binary_cross_entropy_with_logits(logits[b, m, a], targets[b, a])
    torch.testing.assert_close(got, want)
    # the image probe's blink and onset logits and the audio probe's face logits take no loss
    unseen = logits.clone()
    unseen[:, 0, 4:] += 50.0
    unseen[:, 2, :6] -= 50.0
    torch.testing.assert_close(probe_attribute_loss_sum({"aux_attr": unseen}, targets), want)
    assert probe_attribute_loss_sum({}, targets).item() == 0.0


def test_isolated_warm_up_trains_each_encoder_from_its_own_probes_only():
    """With `isolate`, the head's loss reaches fusion and head but no encoder; the probes still reach theirs."""
    from emo_edge.config import load_preset
    from emo_edge.model.perception import Perception

    cfg = load_preset("tiny").model
    cfg = replace(cfg, head=replace(cfg.head, attributes=len(NAMES)))
    fe = cfg.frontend
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(2, 3, fe.image_size, fe.image_size, generator=g),
         torch.rand(2, fe.n_frames, 3, fe.frame_size, fe.frame_size, generator=g),
         torch.randn(2, fe.n_mels, fe.n_mel_frames, generator=g), torch.ones(2, 3))
    torch.manual_seed(0)
    p = Perception(cfg, 64)
    encoders = [p.image_encoder, p.video_encoder, p.audio_encoder]

    def grads(isolate: bool, key: str) -> list[float]:
        p.zero_grad()
        out = p(*x, isolate=isolate)
        out[key].square().sum().backward()
        return [sum(float(q.grad.abs().sum()) for q in e.parameters() if q.grad is not None) for e in encoders]

    assert min(grads(False, "logits")) > 0  # joint: the head's loss reaches every encoder
    assert grads(True, "logits") == [0.0, 0.0, 0.0]
    assert grads(True, "attributes") == [0.0, 0.0, 0.0]
    assert min(grads(True, "aux")) > 0 and min(grads(True, "aux_attr")) > 0
    p.zero_grad()
    p(*x, isolate=True)["logits"].square().sum().backward()
    assert float(p.fusion.proj["image"][0].weight.grad.abs().sum()) > 0  # the fusion still learns


@pytest.fixture(scope="module")
def v2_dir(tmp_path_factory):
    from emo_edge.data.synth import generate

    out = tmp_path_factory.mktemp("synthemo-v2")
    generate(out, 16, seed=3, split="train", workers=2, progress=False, version=2)
    generate(out, 8, seed=3, split="val", workers=2, progress=False, version=2)
    return out


@pytest.fixture(scope="module")
def v2_features(v2_dir):
    from emo_edge.config import load_preset
    from emo_edge.data.features import load_features

    return load_features(v2_dir / "train.jsonl", load_preset("tiny").model.frontend, progress=False)


def test_sample_batch_hides_the_attributes_of_a_dropped_stream(v2_features):
    from emo_edge.train.data import sample_batch

    fs = v2_features
    idx = np.arange(16)
    full = attribute_targets([fs.records[i] for i in idx])
    assert (full >= 0).all()  # every v2 clip has every attribute
    tc = replace(TrainConfig(batch_size=16), drop_video=0.4, drop_audio=0.4, augment=False)
    batch, _, _, attrs = sample_batch(fs, idx, 1, tc, np.random.default_rng(5))
    video_on, audio_on = batch.present[:, 1].bool().numpy(), batch.present[:, 2].bool().numpy()
    assert (~video_on).any() and (~audio_on).any()  # both drops occur at this seed: the masks are exercised
    a = attrs.numpy()
    np.testing.assert_array_equal(a[~video_on][:, :6], -1)
    np.testing.assert_array_equal(a[~audio_on][:, 6:], -1)
    np.testing.assert_array_equal(a[video_on][:, :6], full[video_on][:, :6])
    np.testing.assert_array_equal(a[audio_on][:, 6:], full[audio_on][:, 6:])


@pytest.mark.parametrize("weight", [0.5, 0.0])
def test_attribute_loss_reaches_the_attribute_head(tiny_ckpt, v2_features, weight):
    """One window's backward: the attribute head gets a gradient exactly when the attribute loss is
    weighted in (the head, probes and fusion get theirs either way)."""
    from emo_edge.config import load_model_config
    from emo_edge.train.data import sample_batch
    from emo_edge.train.loop import Dist, build_model, window_backward

    cfg = load_model_config(tiny_ckpt / "config.yaml")
    cfg.head.attributes = len(ATTRIBUTES)  # the tiny preset has no attribute head; this model does (fresh)
    model = build_model(cfg, tiny_ckpt, resume_lora=False)
    model.train()
    for p in model.perception.parameters():
        p.requires_grad_(True)
    tc = replace(TrainConfig(batch_size=8), drop_video=0.0, drop_audio=0.0, attr_weight=weight)
    sample = sample_batch(v2_features, np.arange(8), 1, tc, np.random.default_rng(0))
    logged = window_backward(model, [sample], False, tc, Dist())
    head_grad = sum(float(p.grad.abs().sum()) for p in model.perception.attributes.parameters() if p.grad is not None)
    fast_grad = sum(float(p.grad.abs().sum()) for p in model.perception.head.parameters() if p.grad is not None)
    assert fast_grad > 0
    assert logged[3].item() > 0.3  # the attribute loss is computed either way (BCE near log 2 untrained)
    assert (head_grad > 0) == (weight > 0)


def test_attribute_count_must_match_the_data(v2_dir, tmp_path):
    from emo_edge.config import load_preset, save_yaml

    preset = load_preset("tiny")
    preset.model.head.attributes = 3
    path = tmp_path / "bad.yaml"
    save_yaml(preset, path)
    from emo_edge.train.loop import train

    with pytest.raises(ValueError, match="model.head.attributes must be 0 or 10"):
        train(path, v2_dir, tmp_path / "b", progress=False)

