"""The LLM families emo-edge exports to GGUF: one table per family, the one place backbone quirks live.

Torch-free and gguf-free data, read by the exporter (`emo_edge.export.gguf_export`: names, weight
conventions, metadata) and by the runtime (`emo_edge.runtime.llm`: how llama.cpp treats fed embeddings).

Per family:
    hf_types       Hugging Face `config.model_type` values it covers
    arch           GGUF `general.architecture` (llama.cpp's graph)
    globals/blocks Hugging Face module -> gguf-py `MODEL_TENSOR` member (the GGUF name comes from gguf-py's
                   TENSOR_NAMES); a module's `.weight` and `.bias` both map; blocks are `model.layers.{i}.<module>`
    rope_permute   q/k rows go from Hugging Face's rotate-half order to llama.cpp's interleaved pairs (llama's
                   "normal" rope); the neox-rope families (qwen2/3, gemma3) keep Hugging Face's order
    norm_shift     added to every `*norm.weight`: Gemma's RMSNorm multiplies by (1 + w), llama.cpp by w
    token_embd_scale  "sqrt_n_embd": the input is multiplied by sqrt(n_embd) on the token path only (Hugging Face
                   inside the embedding module, llama.cpp only when a batch holds token ids), so our multimodal
                   `inputs_embeds` go in unscaled in both; a token's own row fed through `llama_batch.embd` must
                   be pre-multiplied by float32(sqrt(n_embd)) (in float64 the logits move by ~1.9 on Gemma 3 270M)
    requires       Hugging Face config fields the llama.cpp graph assumes, with the value it assumes
    notes          what else differs, in words
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Hugging Face module (outside the blocks) -> gguf-py MODEL_TENSOR; shared by every family here
GLOBALS = {"model.embed_tokens": "TOKEN_EMBD", "model.norm": "OUTPUT_NORM", "lm_head": "OUTPUT"}
_ATTN = {"self_attn.q_proj": "ATTN_Q", "self_attn.k_proj": "ATTN_K", "self_attn.v_proj": "ATTN_V",
         "self_attn.o_proj": "ATTN_OUT"}
_MLP = {"mlp.gate_proj": "FFN_GATE", "mlp.up_proj": "FFN_UP", "mlp.down_proj": "FFN_DOWN"}
_QK_NORM = {"self_attn.q_norm": "ATTN_Q_NORM", "self_attn.k_norm": "ATTN_K_NORM"}


@dataclass(frozen=True)
class Family:
    name: str
    hf_types: tuple[str, ...]
    arch: str
    blocks: dict[str, str]
    rope_permute: bool = False
    norm_shift: float = 0.0
    token_embd_scale: str | None = None
    requires: dict[str, object] = field(default_factory=dict)
    notes: str = ""
    globals: dict[str, str] = field(default_factory=lambda: dict(GLOBALS))


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family(
        name="llama", hf_types=("llama",), arch="llama", rope_permute=True,
        blocks={"input_layernorm": "ATTN_NORM", **_ATTN, "post_attention_layernorm": "FFN_NORM", **_MLP},
        requires={"hidden_act": "silu", "attention_bias": False, "mlp_bias": False, "pretraining_tp": 1},
        notes="SentencePiece or byte-level BPE tokenizer; GQA; tied or untied output; rope default, linear or "
              "llama3 (llama3 as a rope_freqs tensor of per-dimension divisors)"),
    Family(
        name="qwen2", hf_types=("qwen2",), arch="qwen2",
        blocks={"input_layernorm": "ATTN_NORM", **_ATTN, "post_attention_layernorm": "FFN_NORM", **_MLP},
        requires={"hidden_act": "silu", "use_sliding_window": False},
        notes="q/k/v projections carry biases; neox rope"),
    Family(
        name="qwen3", hf_types=("qwen3",), arch="qwen3",
        blocks={"input_layernorm": "ATTN_NORM", **_ATTN, **_QK_NORM, "post_attention_layernorm": "FFN_NORM", **_MLP},
        requires={"hidden_act": "silu", "attention_bias": False, "use_sliding_window": False},
        notes="RMSNorm over each head's q and k before rope (q/k norm); explicit head_dim; neox rope"),
    Family(
        name="gemma3", hf_types=("gemma3_text", "gemma3"), arch="gemma3", norm_shift=1.0,
        token_embd_scale="sqrt_n_embd",
        blocks={"input_layernorm": "ATTN_NORM", **_ATTN, **_QK_NORM, "post_attention_layernorm": "ATTN_POST_NORM",
                "pre_feedforward_layernorm": "FFN_PRE_NORM", **_MLP, "post_feedforward_layernorm": "FFN_POST_NORM"},
        requires={"hidden_activation": "gelu_pytorch_tanh", "attn_logit_softcapping": None, "attention_bias": False},
        notes="sandwich norms (post-attention and post-FFN RMSNorm); q/k norm; sliding-window layers from "
              "layer_types with their own rope base; attention scale 1/sqrt(head_dim) in llama.cpp, so "
              "query_pre_attn_scalar must equal head_dim; the sliding window counts sequence slots in Hugging Face "
              "and positions in llama.cpp, which differ only when masked multimodal tokens fall inside a window "
              "that the prompt outgrows"),
)}

# further llama.cpp architectures whose token path scales by sqrt(n_embd) while fed embeddings stay unscaled
# (the runtime's quirk; gemma and gemma2 scale both paths, in llama.cpp and Hugging Face alike, so need nothing)
_EXTRA_EMBD_SCALED = ("gemma3n", "gemma4", "gemma-embedding")


def family_for(model_type: str) -> Family:
    """The family of a Hugging Face `model_type`; ValueError listing the supported ones."""
    for fam in FAMILIES.values():
        if model_type in fam.hf_types:
            return fam
    known = sorted(t for f in FAMILIES.values() for t in f.hf_types)
    raise ValueError(f"GGUF export supports the LLM families {', '.join(FAMILIES)} (Hugging Face model_type "
                     f"{', '.join(known)}); this backbone is {model_type!r}")


def token_embd_scale(arch: str) -> str | None:
    """The token-path input scaling of a GGUF architecture (None: no scaling)."""
    scaled = {f.arch for f in FAMILIES.values() if f.token_embd_scale} | set(_EXTRA_EMBD_SCALED)
    return "sqrt_n_embd" if arch in scaled else None
