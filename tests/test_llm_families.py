"""GGUF export per LLM family (llama BPE+GQA+llama3 rope, qwen2, qwen3, gemma3), both deployment forms.

Tiny random Hugging Face models written with `save_pretrained`, tokenizers built here (byte-level BPE with the
`tokenizers` library, a SentencePiece unigram model for gemma3); nothing downloaded. Multimodal embeddings are
injected mid-prompt; logits are compared at every prompt position and along PyTorch's whole greedy answer.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")
pytest.importorskip("llama_cpp")

from emo_edge.config import LoRAConfig, load_preset  # noqa: E402
from emo_edge.export.gguf_export import (  # noqa: E402
    BPE_PRE,
    export_base_plus_lora,
    export_llm,
    llm_parity,
    rope_freqs,
    variants_for,
)
from emo_edge.model.mllm import EmotionLLM, add_lora, load_llm  # noqa: E402
from emo_edge.model.tokenizer import Tokenizer, train_sentencepiece  # noqa: E402
from emo_edge.prompts import INSTRUCTIONS, PREFIX, suffix  # noqa: E402
from emo_edge.runtime.llm import LlamaCppLM  # noqa: E402

F32_ATOL = 1e-3  # the bound for an F32 GGUF vs PyTorch, and for the adapter form vs the merged form
# gemma3: llama.cpp's CPU GELU is a lookup in an F16 table (GgmlGelu below). Emulated in PyTorch, a one-layer
# model matches to 0-2e-4; what remains are inputs that straddle an F16 rounding boundary, where a one-ulp f32
# difference flips the looked-up value, and through three random layers that reaches 1.25e-3 (2.4e-3 against
# PyTorch's exact GELU). That is llama.cpp's arithmetic, not the conversion: gemma3 is held to 2e-3.
GEMMA3_F32_ATOL = 2e-3
MAX_NEW = 12
N_MM = 12
WIDTH = 64
LLAMA3_RE = next(k for k, v in BPE_PRE.items() if v == "llama-bpe")
QWEN2_RE = next(k for k, v in BPE_PRE.items() if v == "qwen2")
CORPUS = [PREFIX, *(suffix(t, s) for t in INSTRUCTIONS for s in (None, "I am fine.", "What a day!")),
          "neutral happy sad angry worried surprise", "The voice is loud and the brows are raised.",
          "1234 apples, 56 pears; it's 'quoted' (and) done."] * 4
SUFFIXES = [suffix("emotion", "What a day!"), suffix("reason", None)]


CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def bpe_tokenizer(out: Path, regex: str, bos: str | None, eos: str, chat_template: str | None = None) -> None:
    from tokenizers import Regex, decoders, models, pre_tokenizers, trainers
    from tokenizers import Tokenizer as HFTok
    from transformers import PreTrainedTokenizerFast

    tk = HFTok(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(regex), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tk.decoder = decoders.ByteLevel()
    specials = [t for t in (bos, eos) if t] + (["<|im_start|>", "<|im_end|>"] if chat_template else [])
    tk.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=420, special_tokens=specials, show_progress=False,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    hf = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token=bos, eos_token=eos)
    if chat_template:
        hf.chat_template = chat_template
    hf.save_pretrained(str(out))


def hf_config(family: str, tok: Tokenizer):
    from transformers import Gemma3TextConfig, LlamaConfig, Qwen2Config, Qwen3Config

    ids = {"vocab_size": tok.vocab_size, "bos_token_id": tok.bos_id, "eos_token_id": tok.eos_id,
           "pad_token_id": tok.pad_id, "hidden_size": WIDTH, "intermediate_size": 128, "max_position_embeddings": 256,
           "num_attention_heads": 4}
    if family == "llama":  # GQA, untied output, llama3 rope scaling
        rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
        return LlamaConfig(**ids, num_hidden_layers=2, num_key_value_heads=2, tie_word_embeddings=False,
                           rope_parameters=rope)
    if family == "qwen2":  # qkv bias, tied output
        return Qwen2Config(**ids, num_hidden_layers=2, num_key_value_heads=2, tie_word_embeddings=True)
    if family == "qwen3":  # q/k norm, head_dim != hidden / heads
        return Qwen3Config(**ids, num_hidden_layers=2, num_key_value_heads=2, head_dim=32, tie_word_embeddings=False)
    # gemma3: sandwich norms, q/k norm, sliding-window layers (window 8 < the prompt), sqrt(n_embd) scaling
    return Gemma3TextConfig(**ids, num_hidden_layers=3, num_key_value_heads=1, head_dim=16, query_pre_attn_scalar=16,
                            sliding_window=8, layer_types=["sliding_attention", "full_attention", "sliding_attention"])


def randomise(llm: torch.nn.Module, gemma: bool, seed: int = 0) -> None:
    """Weights large enough that logits spread over several units (so the bound means something); norm weights
    off one (gemma: off zero, its (1 + w) convention)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in llm.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if "norm" in name:
                p.copy_((0.0 if gemma else 1.0) + 0.2 * noise)
            else:
                p.copy_(0.15 * noise)


def random_lora(model: EmotionLLM, seed: int = 1) -> None:
    """Non-zero A and B (peft starts B at zero, which would make the adapter a no-op)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.llm.named_parameters():
            if "lora_" in name:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))


@pytest.fixture(scope="module", params=["llama", "qwen2", "qwen3", "gemma3"])
def family(request, tmp_path_factory):
    """(name, LoRA model, merged model, mm, mask, work dir) for one family."""
    name = request.param
    root = tmp_path_factory.mktemp(f"fam-{name}")
    hf_dir = root / "hf"
    torch.manual_seed(0)
    if name == "gemma3":
        train_sentencepiece(CORPUS, hf_dir, vocab_size=120)
    else:
        regex = LLAMA3_RE if name == "llama" else QWEN2_RE
        bos = "<|begin_of_text|>" if name == "llama" else None
        bpe_tokenizer(hf_dir, regex, bos, "<|endoftext|>", CHATML if name == "qwen2" else None)
    tok = Tokenizer(hf_dir)
    from transformers import AutoModelForCausalLM

    llm = AutoModelForCausalLM.from_config(hf_config(name, tok))
    randomise(llm, gemma=name == "gemma3")
    llm.save_pretrained(str(hf_dir))
    cfg = load_preset("tiny").model
    lora_cfg = LoRAConfig(r=4, alpha=8, dropout=0.0, targets=["q_proj", "k_proj", "v_proj", "o_proj", "down_proj"])
    model = EmotionLLM(cfg, add_lora(load_llm(hf_dir), lora_cfg), tok).eval()
    random_lora(model)
    merged = copy.deepcopy(model)
    merged.llm = merged.llm.merge_and_unload()
    g = torch.Generator().manual_seed(2)
    mm = 0.5 * torch.randn((len(SUFFIXES), cfg.tokens.total, WIDTH), generator=g)
    mask = torch.ones((len(SUFFIXES), cfg.tokens.total))
    if name != "gemma3":  # masked tokens take no position (gemma3: see its sliding-window note in llm_families)
        mask[1, -4:] = 0
    return name, model, merged, mm, mask, root


class GgmlGelu(torch.nn.Module):
    """tanh-GELU as llama.cpp's CPU backend computes it: looked up in an F16 table at the F16-rounded input
    (GGML_GELU_FP16), identity from 10 up, 0 from -10 down. Its rounding alone moves random gemma3 logits by
    ~1e-3, so the gemma3 F32 bound is checked against PyTorch with this activation (and plain PyTorch reported)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.nn.functional.gelu(x.half().float(), approximate="tanh").half().float()
        return torch.where(x >= 10, x, torch.where(x <= -10, torch.zeros_like(x), y))


def with_ggml_gelu(model: EmotionLLM) -> EmotionLLM:
    out = copy.deepcopy(model)
    for m in out.llm.modules():
        if hasattr(m, "act_fn") and hasattr(m, "gate_proj"):
            m.act_fn = GgmlGelu()
    return out


@pytest.fixture(scope="module")
def merged_export(family):
    name, _, merged, mm, mask, root = family
    report = export_llm(merged, root / "merged", quants=("f32", "f16", "q8_0", "q4_k_m"), threads=1)
    variants = variants_for({q: root / "merged" / f["file"] for q, f in report["files"].items()})
    parity = llm_parity(merged, variants, mm, mask, SUFFIXES, MAX_NEW, threads=1)
    if name == "gemma3":
        parity["plain_torch_f32"] = parity["quants"]["f32"]["max_abs_logit_diff"]
        parity["quants"]["f32"] = llm_parity(with_ggml_gelu(merged), {"f32": variants["f32"]}, mm, mask, SUFFIXES,
                                             MAX_NEW, threads=1)["quants"]["f32"]
    return report, parity


def test_f32_gguf_matches_torch_over_whole_greedy_answers(family, merged_export):
    name, *_ = family
    report, parity = merged_export
    f32 = parity["quants"]["f32"]
    assert parity["torch"]["logit_range"] > 5.0  # a spread wide enough for the bound to mean something
    assert f32["max_abs_logit_diff"] <= (GEMMA3_F32_ATOL if name == "gemma3" else F32_ATOL), (name, f32)
    assert f32["identical_answers"] == 1.0 and f32["top1_agreement"] == 1.0
    assert all(len(a.split()) >= 1 for a in parity["torch"]["answers"])  # answers of several tokens, compared
    for q in ("f16", "q8_0", "q4_k_m"):  # reported; lossy, so larger than F32's
        assert np.isfinite(parity["quants"][q]["max_abs_logit_diff"])
    assert parity["quants"]["q4_k_m"]["max_abs_logit_diff"] > f32["max_abs_logit_diff"]
    assert parity.get("plain_torch_f32", 0.0) < 1e-2  # gemma3 against PyTorch's exact GELU
    print(name, {q: round(r["max_abs_logit_diff"], 6) for q, r in parity["quants"].items()},
          "logit range", round(parity["torch"]["logit_range"], 2), "plain-GELU f32", parity.get("plain_torch_f32"))


def test_metadata_and_conventions(family, merged_export):
    name, _, merged, *_ = family
    report, _ = merged_export
    reader = gguf.GGUFReader(str(family[5] / "merged" / report["files"]["f32"]["file"]))
    fields = {k: v.contents() for k, v in reader.fields.items() if not k.endswith("charsmap")}
    tensors = {t.name for t in reader.tensors}
    cfg = merged.llm.config
    arch = fields["general.architecture"]
    assert arch == {"llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "gemma3": "gemma3"}[name]
    assert fields[f"{arch}.attention.head_count_kv"] == cfg.num_key_value_heads
    assert ("output.weight" in tensors) == (not cfg.tie_word_embeddings)
    if name == "llama":
        assert fields["tokenizer.ggml.model"] == "gpt2" and fields["tokenizer.ggml.pre"] == "llama-bpe"
        freqs = rope_freqs(cfg)
        assert "rope_freqs.weight" in tensors and freqs.min() == 1.0 and freqs.max() == 8.0
    if name == "qwen2":
        assert "blk.0.attn_q.bias" in tensors and fields["tokenizer.ggml.pre"] == "qwen2"
        assert "im_start" in fields["tokenizer.chat_template"] and not fields["tokenizer.ggml.add_bos_token"]
    if name == "qwen3":
        assert "blk.1.attn_k_norm.weight" in tensors and fields["qwen3.attention.key_length"] == 32
    if name == "gemma3":
        assert {"blk.0.post_attention_norm.weight", "blk.0.post_ffw_norm.weight"} <= tensors
        assert fields["gemma3.attention.sliding_window"] == 8
        assert fields["gemma3.attention.sliding_window_pattern"] == [True, False, True]
        norm = next(t for t in reader.tensors if t.name == "blk.0.attn_norm.weight")
        hf_norm = merged.llm.model.layers[0].input_layernorm.weight.numpy()
        np.testing.assert_allclose(np.asarray(norm.data), hf_norm + 1.0, rtol=0, atol=1e-6)  # (1 + w)


def test_gguf_tokenizer_equals_the_hf_one(family, merged_export):
    _, _, merged, *_ = family
    report, _ = merged_export
    texts = [PREFIX, *SUFFIXES, *CORPUS[:12], " leading space", "Ünïcödé café 3.14"]
    with LlamaCppLM(family[5] / "merged" / report["files"]["f32"]["file"], n_threads=1) as lm:
        assert lm.add_bos == (merged.tok.bos_id is not None)
        for text in texts:
            assert lm.tokenize(text) == merged.tok.encode(text), text


def test_lora_adapter_form_matches_merged_form_and_torch(family, merged_export):
    name, model, merged, mm, mask, root = family
    report = export_base_plus_lora(model, root / "lora", quants=("f32",), threads=1)
    base, adapter = root / "lora" / report["files"]["f32"]["file"], root / "lora" / report["adapter"]["file"]
    assert report["adapter"]["n_adapted"] == 5 * model.llm.config.num_hidden_layers
    r = gguf.GGUFReader(str(adapter))
    assert r.fields["general.type"].contents() == "adapter" and r.fields["adapter.lora.alpha"].contents() == 8.0
    a = next(t for t in r.tensors if t.name == "blk.0.attn_q.weight.lora_a")
    assert tuple(int(d) for d in a.shape) == (WIDTH, 4)  # GGUF order (in, r): llama.cpp's expected orientation
    ref = with_ggml_gelu(model) if name == "gemma3" else model
    with torch.no_grad():  # the peft model (LoRA unmerged) is the reference of the adapter form
        parity = llm_parity(ref, variants_for({"f32": base}, adapter), mm, mask, SUFFIXES, MAX_NEW, 1)
    bound = GEMMA3_F32_ATOL if name == "gemma3" else F32_ATOL
    assert parity["quants"]["f32"]["max_abs_logit_diff"] <= bound, parity["quants"]["f32"]
    merged_file = root / "merged" / merged_export[0]["files"]["f32"]["file"]
    for i, s in enumerate(SUFFIXES):
        with LlamaCppLM(base, n_threads=1, lora=adapter, attention="exact") as lm:
            with_adapter = lm.logits_for(mm[i].numpy(), mask[i].numpy(), s, all_logits=True)
        with LlamaCppLM(merged_file, n_threads=1, attention="exact") as lm:
            merged_logits = lm.logits_for(mm[i].numpy(), mask[i].numpy(), s, all_logits=True)
        with LlamaCppLM(base, n_threads=1, attention="exact") as lm:
            base_logits = lm.logits_for(mm[i].numpy(), mask[i].numpy(), s, all_logits=True)
        assert np.abs(with_adapter - merged_logits).max() <= bound, (name, i)
        assert np.abs(base_logits - merged_logits).max() > 0.5  # the adapter really changes the logits


def test_backbone_from_a_gguf_file_loads_into_transformers(family, merged_export):
    """llm.path may name a .gguf: transformers dequantises it into the same model, with the GGUF's tokenizer;
    the checkpoint's record of it is the file and its sha256."""
    from emo_edge.checkpoint import llm_source, source_record

    name, _, merged, *_ , root = family
    if name != "qwen2":
        pytest.skip("transformers' GGUF loader: checked on qwen2 (it does not read back llama3 rope_freqs, a UGM "
                    "tokenizer, or qwen3's head_dim != hidden / heads)")
    report, _ = merged_export
    path = llm_source(root / "merged" / report["files"]["f32"]["file"])
    back, tok = load_llm(path), Tokenizer(path)
    text = SUFFIXES[0]
    assert tok.encode(text) == merged.tok.encode(text) and tok.eos_id == merged.tok.eos_id
    ids = torch.tensor([merged.tok.encode(text)])
    with torch.no_grad():
        assert float((back(ids).logits - merged.llm(ids).logits).abs().max()) < 1e-4
    rec = source_record(path)
    assert rec["sha256"] == report["files"]["f32"]["sha256"] and rec["file"] == str(path)
    assert source_record(root / "hf") is None


def test_train_from_a_gguf_backbone_records_its_sha256(family, merged_export, synth_dir, tmp_path):
    """llm.path names a .gguf: stage 1 trains on it (loaded into transformers), meta.json records the file and its
    sha256, and a checkpoint whose backbone file changed afterwards is refused."""
    import dataclasses
    import shutil

    import yaml

    from emo_edge import checkpoint as ck
    from emo_edge.config import to_dict
    from emo_edge.train.loop import train

    name, *_ , root = family
    if name != "qwen2":
        pytest.skip("one family suffices")
    src = tmp_path / "backbone.gguf"
    shutil.copyfile(root / "merged" / merged_export[0]["files"]["f32"]["file"], src)
    p = load_preset("tiny")
    p.model.llm = dataclasses.replace(p.model.llm, path=str(src))
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(to_dict(p)))
    out = tmp_path / "ckpt"
    train(tmp_path / "p.yaml", synth_dir, out, stages=(1,), progress=False,
          overrides={"encoder_steps": 1, "perception_steps": 1, "eval_every": 10})
    rec = ck.read_meta(out)[ck.META_LLM_SOURCE]
    assert rec["file"] == str(src) and rec["sha256"] == merged_export[0]["files"]["f32"]["sha256"]
    assert not (out / ck.LLM_DIR).exists()
    model = ck.load_checkpoint(out)
    assert model.llm.base_model.model.config.model_type == "qwen2"
    with src.open("ab") as f:
        f.write(b"\0" * 32)
    with pytest.raises(ValueError, match="has changed since training"):
        ck.load_checkpoint(out)


def test_gguf_backbone_exports_in_both_forms_with_its_own_tokenizer(family, merged_export, tmp_path):
    """A backbone loaded from a GGUF: form (a) writes the source's tokenizer fields as they are; form (b) copies
    the source file untouched (sha256 kept) and adds the adapter; both match PyTorch at F32."""
    import shutil

    from emo_edge.export.gguf_export import gguf_tokenizer_fields

    name, *_ , root = family
    if name != "qwen2":
        pytest.skip("one family suffices")
    src = tmp_path / "vendor.gguf"
    shutil.copyfile(root / "merged" / merged_export[0]["files"]["f32"]["file"], src)
    cfg = load_preset("tiny").model
    lora_cfg = LoRAConfig(r=4, alpha=8, dropout=0.0, targets=["q_proj", "v_proj"])
    model = EmotionLLM(cfg, add_lora(load_llm(src), lora_cfg), Tokenizer(src)).eval()
    random_lora(model, seed=3)
    merged = copy.deepcopy(model)
    merged.llm = merged.llm.merge_and_unload()
    _, _, _, mm, mask, _ = family
    a = export_llm(merged, tmp_path / "a", quants=("f32",), threads=1, source_gguf=src)
    fields = gguf_tokenizer_fields(tmp_path / "a" / a["files"]["f32"]["file"])
    assert fields == gguf_tokenizer_fields(src) and "tokenizer.chat_template" in fields
    b = export_base_plus_lora(model, tmp_path / "b", threads=1, source_gguf=src)
    assert b["files"]["f32"]["sha256"] == merged_export[0]["files"]["f32"]["sha256"]  # the vendor's file as it is
    pa = llm_parity(merged, variants_for({"f32": tmp_path / "a" / a["files"]["f32"]["file"]}), mm, mask, SUFFIXES,
                    MAX_NEW, 1)
    pb = llm_parity(model, variants_for({"f32": tmp_path / "b" / b["files"]["f32"]["file"]},
                                        tmp_path / "b" / b["adapter"]["file"]), mm, mask, SUFFIXES, MAX_NEW, 1)
    assert pa["quants"]["f32"]["max_abs_logit_diff"] <= F32_ATOL
    assert pb["quants"]["f32"]["max_abs_logit_diff"] <= F32_ATOL


def test_chat_template_wraps_the_prompt_identically_in_torch_and_llama_cpp(family, merged_export):
    """llm.chat_template: the prompt becomes one user turn of the tokenizer's template, in PyTorch and in the
    runtime (special-token text parsed as those tokens), and the F32 logits still agree."""
    import dataclasses

    name, _, merged, mm, mask, root = family
    if name != "qwen2":
        pytest.skip("the qwen2 test tokenizer carries the chat template")
    cfg = merged.cfg
    cfg = dataclasses.replace(cfg, llm=dataclasses.replace(cfg.llm, chat_template=True))
    chat_model = EmotionLLM(cfg, merged.llm, merged.tok).eval()
    assert chat_model.chat == ("<|im_start|>user\n", "<|im_end|>\n<|im_start|>assistant\n")
    ids, _ = chat_model.sequence_ids(SUFFIXES[0], None)
    im_start = merged.tok._hf.convert_tokens_to_ids("<|im_start|>")
    assert ids.count(im_start) == 2 and len(ids) > len(merged.sequence_ids(SUFFIXES[0], None)[0])
    f32 = root / "merged" / merged_export[0]["files"]["f32"]["file"]
    par = llm_parity(chat_model, variants_for({"f32": f32}), mm, mask, SUFFIXES, MAX_NEW, 1)
    assert par["quants"]["f32"]["max_abs_logit_diff"] <= F32_ATOL
    with LlamaCppLM(f32, n_threads=1) as lm:
        assert lm.prefix_ids(chat=chat_model.chat) == chat_model._prefix_ids
    with pytest.raises(ValueError, match="no chat template"):
        EmotionLLM(cfg, merged.llm, _no_template_tok(root))


def _no_template_tok(root: Path) -> Tokenizer:
    d = root / "plain-tok"
    bpe_tokenizer(d, QWEN2_RE, None, "<|endoftext|>")
    return Tokenizer(d)
