import pytest
import torch

from emo_edge.config import load_preset
from emo_edge.model.mllm import EmotionLLM, add_lora, build_llm
from emo_edge.model.perception import Perception, grid_pool_matrix, pool_matrix
from emo_edge.model.tokenizer import train_sentencepiece
from emo_edge.prompts import suffix, text_only

CFG = load_preset("tiny").model


def inputs(b: int = 2):
    fe = CFG.frontend
    g = torch.Generator().manual_seed(0)
    return (torch.rand(b, 3, fe.image_size, fe.image_size, generator=g),
            torch.rand(b, fe.n_frames, 3, fe.frame_size, fe.frame_size, generator=g),
            torch.randn(b, fe.n_mels, fe.n_mel_frames, generator=g))


@pytest.mark.parametrize("n_in, n_out", [(7, 4), (16, 16), (100, 8), (3, 5)])
def test_pool_matrix_rows_average(n_in, n_out):
    m = pool_matrix(n_in, n_out)
    assert m.shape == (n_out, n_in)
    assert torch.allclose(m.sum(1), torch.ones(n_out))
    assert grid_pool_matrix(7, 4).shape == (16, 49)


def test_perception_shapes_follow_the_budget():
    torch.manual_seed(0)
    p = Perception(CFG, 64).eval()
    out = p(*inputs(), torch.ones(2, 3))
    tb = CFG.tokens
    assert out["tokens"].shape == (2, tb.total, 64)
    assert out["fused"].shape == (2, CFG.fusion.n_tokens, CFG.fusion.dim)
    assert out["logits"].shape == (2, 6) and out["va"].abs().max() <= 1


def test_missing_modality_is_ignored_by_the_fusion():
    torch.manual_seed(0)
    p = Perception(CFG, 64).eval()
    image, frames, mel = inputs()
    no_audio = torch.tensor([[1.0, 1.0, 0.0]] * 2)
    a = p(image, frames, mel, no_audio)
    b = p(image, frames, torch.randn_like(mel) * 5, no_audio)
    assert torch.allclose(a["fused"], b["fused"], atol=1e-5)  # audio content cannot leak in
    c = p(image, frames, torch.randn_like(mel) * 5, torch.ones(2, 3))
    assert not torch.allclose(a["fused"], c["fused"], atol=1e-3)
    mask = p.stream_mask(no_audio)
    assert mask[:, -CFG.tokens.audio:].sum() == 0 and mask[:, : -CFG.tokens.audio].min() == 1


@pytest.fixture(scope="module")
def mllm(tmp_path_factory):
    lines = [text_only(t, "I went out today.", a) for t, a in
             [("emotion", "happy"), ("reason", "The smile shows joy."), ("audio", "The voice is high.")]] * 20
    tok = train_sentencepiece(lines, tmp_path_factory.mktemp("tok"), 120)
    torch.manual_seed(0)
    return EmotionLLM(CFG, add_lora(build_llm(CFG.llm, tok), CFG.lora), tok).eval()


def test_only_lora_and_perception_train(mllm):
    trainable = {n for n, p in mllm.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("perception.") for n in trainable)


def test_masked_tokens_take_no_position(mllm):
    n = CFG.tokens.total
    mm = torch.randn(1, n, mllm.llm.get_input_embeddings().embedding_dim)
    mask = torch.ones(1, n)
    mask[0, -2:] = 0
    out = mllm.assemble(mm, mask, [suffix("emotion", None)], ["happy"])
    pos, att = out["position_ids"][0], out["attention_mask"][0]
    assert att.sum() == len(att) - 2
    assert pos.max() == len(att) - 3  # positions count attended tokens only
    assert (out["labels"][0] != -100).sum() >= 2  # answer + EOS are supervised


def test_token_count_mismatch_raises_with_both_counts(mllm):
    n = CFG.tokens.total
    mm = torch.randn(1, n - 1, 64)
    with pytest.raises(ValueError, match=rf"{n} placeholder slots, {n - 1} tokens"):
        mllm.assemble(mm, torch.ones(1, n - 1), [suffix("emotion", None)], None)


def test_batched_greedy_matches_one_by_one(mllm):
    from emo_edge.model.mllm import Batch

    image, frames, mel = inputs(2)
    present = torch.tensor([[1.0, 1, 1], [1, 1, 0]])
    sfx = [suffix("reason", "I went out today."), suffix("emotion", None)]
    both = mllm.generate(Batch(image, frames, mel, present, sfx), max_new_tokens=6)
    one = [mllm.generate(Batch(image[i:i + 1], frames[i:i + 1], mel[i:i + 1], present[i:i + 1], [sfx[i]]),
                         max_new_tokens=6)[0] for i in range(2)]
    assert both == one
