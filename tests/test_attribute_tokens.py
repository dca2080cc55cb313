"""The attribute tokens: one LLM token per observable attribute, blended from its two embeddings by the
attribute head's probability, spliced last, present whenever any modality is, and exported with the fusion."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from emo_edge.config import ModelConfig, TokenBudget, load_preset
from emo_edge.data import synth_text
from emo_edge.data.synth_v2 import ATTRIBUTES
from emo_edge.model.perception import Perception

A = len(ATTRIBUTES)


def attribute_cfg() -> ModelConfig:
    cfg = copy.deepcopy(load_preset("tiny").model)
    cfg.head.attributes = A
    cfg.tokens = TokenBudget(fusion=cfg.tokens.fusion, image=cfg.tokens.image, video=cfg.tokens.video,
                             audio=cfg.tokens.audio, attributes=A)
    return cfg


CFG = attribute_cfg()


def inputs(b: int = 3):
    fe = CFG.frontend
    g = torch.Generator().manual_seed(0)
    return (torch.rand(b, 3, fe.image_size, fe.image_size, generator=g),
            torch.rand(b, fe.n_frames, 3, fe.frame_size, fe.frame_size, generator=g),
            torch.randn(b, fe.n_mels, fe.n_mel_frames, generator=g))


@pytest.fixture(scope="module")
def perception() -> Perception:
    torch.manual_seed(0)
    p = Perception(CFG, 64).eval()
    with torch.no_grad():  # two clearly different embeddings per attribute
        p.adapters["attributes"].table.normal_()
    return p


def test_the_last_tokens_blend_each_attributes_two_embeddings_by_the_heads_probability(perception):
    with torch.no_grad():
        out = perception(*inputs(), torch.ones(3, 3))
    assert out["tokens"].shape == (3, CFG.tokens.total, 64)
    p = torch.sigmoid(out["attributes"])[..., None]  # (B, A, 1)
    table = perception.adapters["attributes"].table
    want = p * table[:, 0] + (1 - p) * table[:, 1]
    assert torch.allclose(out["tokens"][:, -A:], want, atol=1e-6)
    assert not torch.allclose(out["tokens"][:, -A:], table[:, 1].expand(3, -1, -1), atol=1e-3)


def test_a_confident_head_hands_the_llm_that_values_embedding(perception):
    """Shifting the head's last bias to +-20 for every attribute makes each token that value's embedding."""
    last = perception.attributes[-1][-1]  # the MLP's output layer
    fused = torch.randn(2, CFG.fusion.n_tokens, CFG.fusion.dim)
    saved = last.bias.detach().clone()
    try:
        for sign, value in ((1.0, 0), (-1.0, 1)):
            with torch.no_grad():
                last.bias.fill_(sign * 1e3)
                tokens = perception.adapters["attributes"](perception.attribute_logits(fused))
            want = perception.adapters["attributes"].table[:, value].expand(2, -1, -1)
            assert torch.allclose(tokens, want, atol=1e-5), value
    finally:
        with torch.no_grad():
            last.bias.copy_(saved)


def test_attribute_tokens_stay_present_without_audio(perception):
    no_audio = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    mask = perception.stream_mask(no_audio)
    tb = CFG.tokens
    audio = slice(tb.total - A - tb.audio, tb.total - A)
    assert mask[0, audio].sum() == 0 and mask[0, -A:].min() == 1  # from the faces when the voice is gone
    assert mask[1, -A:].min() == 1 and mask[1, audio].min() == 1  # and from the voice alone


@pytest.mark.parametrize("head, tokens, ok", [(A, A, True), (A, 0, True), (A, 3, False), (0, A, False)])
def test_one_attribute_token_per_attribute_of_the_head(head, tokens, ok):
    base = load_preset("tiny").model
    make = lambda: ModelConfig(head=type(base.head)(attributes=head), tokens=TokenBudget(attributes=tokens))  # noqa: E731
    if ok:
        assert make().tokens.total == 48 + tokens
    else:
        with pytest.raises(ValueError, match=rf"tokens.attributes={tokens}: .* 0 or head.attributes={head}"):
            make()


def test_attribute_tokens_start_at_their_cue_phrases(tiny_ckpt):
    """Each token's [first sorted value, other value] embeddings start at the mean input embedding of those values'
    cue phrases: for head tilt, "tilted head" (target 1) then "upright head"."""
    from emo_edge.config import load_model_config
    from emo_edge.train.loop import build_model, init_attribute_tokens

    cfg = load_model_config(tiny_ckpt / "config.yaml")
    cfg.head.attributes, cfg.tokens.attributes = A, A
    model = build_model(cfg, tiny_ckpt, resume_lora=False)
    assert init_attribute_tokens(model)
    emb, table = model.llm.get_input_embeddings(), model.perception.adapters["attributes"].table
    i = [a.name for a in ATTRIBUTES].index("head")
    for j, phrase in enumerate(("tilted head", "upright head")):
        assert synth_text.phrase(ATTRIBUTES[i].phrases[sorted(ATTRIBUTES[i].phrases)[j]]) == phrase
        want = emb(torch.tensor(model.tok.encode(phrase))).mean(dim=0)
        assert torch.allclose(table[i, j], want), phrase
    assert not torch.allclose(table[i, 0], table[i, 1])
    # attr_token_rms: each pair rescaled by one factor to that RMS, the directions kept
    phrases = table.detach().clone()
    assert init_attribute_tokens(model, rms=1.0)
    assert torch.allclose(table.pow(2).mean(dim=(1, 2)).sqrt(), torch.ones(A), atol=1e-5)
    ratio = table[:, :, 0] / phrases[:, :, 0]
    assert torch.allclose(table, phrases * ratio[:, :1, None], rtol=1e-4, atol=1e-6)  # one factor per attribute
    cfg.tokens.attributes = 0
    assert not init_attribute_tokens(build_model(cfg, tiny_ckpt, resume_lora=False))


def test_the_fusion_graph_exports_the_attribute_tokens(perception, tmp_path):
    """ONNX parity of the fusion graph's tokens, attribute tokens included, against eager PyTorch."""
    pytest.importorskip("onnxruntime")
    from emo_edge.export.onnx_export import export_perception
    from emo_edge.runtime.io_spec import build_io_spec, dummy_inputs
    from emo_edge.runtime.perception import OrtPerception

    p = copy.deepcopy(perception)
    x = dummy_inputs(build_io_spec(CFG, 64).runtime_inputs, 2, 1)
    x["present"] = np.array([[1, 1, 1], [1, 1, 0]], np.float32)
    cfg = copy.deepcopy(CFG)
    cfg.llm.hidden = 64  # the graphs' spec takes the LLM width from the config; this perception is 64 wide
    report = export_perception(p, cfg, tmp_path, threads=1)
    fusion = report["parity"]["graphs"]["fusion"]
    assert all(err["tokens"]["max_rel_err"] <= 1e-4 for err in fusion.values()), fusion
    got = OrtPerception(tmp_path, threads=1).run(**x)
    assert got["tokens"].shape == (2, CFG.tokens.total, 64)
    from emo_edge.model.inputs import to_batch

    b = to_batch(x["frames"], x["image"], x["mel"], x["present"][:, 1], x["present"][:, 2], ["emotion"] * 2,
                 [None] * 2)
    with torch.no_grad():
        want = p(b.image, b.frames, b.mel, b.present)
    tail = want["tokens"][:, -A:].numpy()
    assert np.abs(got["tokens"][:, -A:] - tail).max() <= 1e-4 * np.abs(tail).max()
    assert got["token_mask"][1, -A:].min() == 1
    # and the head's reading itself, as probabilities
    np.testing.assert_allclose(got["attributes"], torch.sigmoid(want["attributes"]).numpy(), atol=1e-5)
    assert report["parity"]["pipeline_random"]["outputs"]["attributes"]["max_abs_err"] <= 1e-5


def test_the_manifest_names_each_column_by_the_value_the_head_was_trained_to_read_as_1():
    """Column j of the `attributes` output is the probability of `values[0]`: the value whose training target is 1."""
    from emo_edge.data.schema import Record
    from emo_edge.export.bundle import _attributes
    from emo_edge.train.data import attribute_targets

    infos = _attributes(CFG)
    assert [a.name for a in infos] == [a.name for a in ATTRIBUTES]
    assert all(a.phrases == [ATTRIBUTES[i].phrases[v] for v in a.values] for i, a in enumerate(infos))
    rng = np.random.default_rng(0)
    for _ in range(5):
        values = {a.name: str(rng.choice(sorted(a.phrases))) for a in ATTRIBUTES}
        r = Record(id="x", dataset="SynthEmo", video="v.mp4", audio="a.wav", subtitle="", label="happy", targets={},
                   cues=[], split="test", meta={"attributes": values})
        target = attribute_targets([r])[0]
        assert target.tolist() == [float(values[a.name] == a.values[0]) for a in infos]
    cfg = copy.deepcopy(load_preset("tiny").model)
    assert cfg.head.attributes == 0 and _attributes(cfg) is None


def test_head_attribute_accuracy_scores_each_attribute_against_the_clips_own_value():
    from emo_edge.data.schema import Record
    from emo_edge.eval.evaluate import attribute_accuracy, attribute_values

    names = [a.name for a in ATTRIBUTES]
    first = [sorted(a.phrases)[0] for a in ATTRIBUTES]
    second = [sorted(a.phrases)[1] for a in ATTRIBUTES]
    recs = [Record(id=str(i), dataset="SynthEmo", video="v.mp4", audio="a.wav", subtitle="", label="happy",
                   targets={}, cues=[], split="test", meta={"attributes": dict(zip(names, first, strict=True))})
            for i in range(4)]
    read = np.ones((4, A), bool)
    read[:3, 0] = False  # intensity read as its other value on 3 of 4 clips
    read[0, 9] = False  # loudness on 1 of 4
    assert attribute_values(read)[0][:2] == [second[0], first[1]]
    acc = attribute_accuracy(recs, attribute_values(read))
    assert acc["intensity"] == 0.25 and acc["loudness"] == 0.75 and acc["head"] == 1.0
    assert attribute_accuracy(recs, []) is None  # a model without an attribute head


def test_the_runtime_reads_the_attributes_by_the_manifests_names(default_bundle, synth_dir):
    """The shipped default has an attribute head: its bundle's fusion graph reads the attributes, and the runtime
    names each clip's likelier value with its probability."""
    from emo_edge.data.features import load_features
    from emo_edge.runtime.bundle import load_bundle
    from emo_edge.runtime.pipeline import EmotionRuntime

    b = load_bundle(default_bundle)
    rt = EmotionRuntime(b)
    assert [a.name for a in rt.attributes] == [a.name for a in ATTRIBUTES]
    fs = load_features(synth_dir / "test.jsonl", b.frontend, progress=False, limit=3)
    out = rt.perceive(fs.image[:3], fs.frames[:3], fs.mel[:3], np.ones((3, 3), np.float32))
    probs = np.asarray(out["attributes"])
    assert probs.shape == (3, A) and len(out["readings"]) == 3
    for row, readings in zip(probs, out["readings"], strict=True):
        for p, info, (name, value, score) in zip(row, rt.attributes, readings, strict=True):
            assert name == info.name and value == info.values[0 if p >= 0.5 else 1]
            assert score == pytest.approx(max(p, 1 - p))
    with pytest.raises(ValueError, match="got 3 probabilities, the manifest names 10 attributes"):
        rt.read_attributes(probs[0, :3])
    b.close()
