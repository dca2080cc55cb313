"""The LLM -> GGUF for llama.cpp, in two deployment forms, each file read back and checked against PyTorch.

Forms (recorded in the bundle as `llm.form`):
    merged      LoRA folded in (`load_checkpoint(path, merge=True)`), the model written as GGUF F32 and
                quantised to f16 / Q8_0 / Q4_K_M (`export_llm`)
    base+lora   the base model's GGUF untouched (the vendor's file when the backbone came from a GGUF, else the
                frozen base exported here) plus a GGUF LoRA adapter that llama.cpp applies at load
                (`export_lora_adapter`): the vendor's quantisation is kept and only megabytes are added

Families (llama, qwen2, qwen3, gemma3) are the tables of `emo_edge.llm_families`: GGUF architecture, the
Hugging Face module -> gguf-py MODEL_TENSOR map and the weight conventions (q/k rows permuted to llama.cpp's
interleaved rope pairs for llama; Gemma's RMSNorm weights stored as 1 + w). Everything is written with
gguf-py's typed `GGUFWriter`, keys from `gguf.Keys`, tensor names from `gguf.TENSOR_NAMES`.

The F32 file is the source of the others: `llama_model_quantize` makes them in-process; llama.cpp falls back
to another type for a tensor whose rows are not a multiple of the k-quant block (256), so tiny test models
get Q5_0/Q8_0 where Q4_K/Q6_K would stand: the report lists the tensor types of every file.

Tokenizer metadata comes from, in this order: the source GGUF the backbone was loaded from (copied as it is),
our SentencePiece model (a unigram model as llama.cpp's UGM vocabulary "t5", a BPE model as its SPM vocabulary
"llama"), or a Hugging Face byte-level BPE tokenizer ("gpt2", with its merges and the pre-tokenizer named by its
split regex). BOS: `add_bos_token` is true exactly when the tokenizer has a BOS, as `EmotionLLM` then starts
every prompt with it; the runtime reads the flag and prepends BOS itself, tokenizing text without specials.

Parity (`llm_parity`), per file, with the multimodal tokens injected through `llama_batch.embd`:
    max_abs_logit_diff = max |llama.cpp - torch| over the vocabulary at every position of the prompt and of
                         PyTorch's whole greedy answer, fed teacher-forced to llama.cpp (random or near-tie logits
                         compare, not only tokens)
    max_abs_logit_diff_first = the same at the first answer position only
    top1_agreement     = share of answer positions with the same argmax
    identical_answers  = share of prompts whose llama.cpp greedy answer equals PyTorch's
    same_label         = share whose parsed emotion label (`parse_label`) equals PyTorch's (None == None)
    torch.top2_margins = PyTorch's top-1 minus top-2 logit at the first answer position (how close each call was)
"""

from __future__ import annotations

import ctypes
import json
import math
import shutil
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from emo_edge.fileio import atomic_write, sha256_file
from emo_edge.llm_families import FAMILIES, Family, family_for
from emo_edge.model.tokenizer import SPM_FILE
from emo_edge.runtime.llm import LLAMA_LOG, LlamaCppLM, llama_lib

SUPPORTED_ARCHS = {t: f.arch for f in FAMILIES.values() for t in f.hf_types}  # HF model_type -> GGUF arch
QUANTS = {"f32": 0, "f16": 1, "q8_0": 7, "q4_k_m": 15}  # name -> llama_ftype (LLAMA_FTYPE_ALL_F32 / MOSTLY_*)
FORMS = ("merged", "base+lora")
ADAPTER_FILE = "llm-lora-f32.gguf"
MAX_CLIPS = 8  # real clips used for the parity check
METRIC = ("max_abs_logit_diff = max |llama.cpp - torch| at every prompt and answer position (PyTorch's greedy "
          "answer fed teacher-forced); max_abs_logit_diff_first at the first answer position; top1_agreement over "
          "answer positions; identical_answers / same_label = shares of prompts agreeing with PyTorch's greedy "
          "answers / parsed labels")
ROPE_TYPES = ("default", "linear", "llama3")  # Hugging Face rope_type values the exporter writes
# sentencepiece ModelProto.SentencePiece.Type -> GGUF token type (the numbers happen to agree; named here)
SPM_TOKEN_TYPES = {1: "NORMAL", 2: "UNKNOWN", 3: "CONTROL", 4: "USER_DEFINED", 5: "UNUSED", 6: "BYTE"}
SPM_MODELS = {1: "t5", 2: "llama"}  # TrainerSpec.model_type unigram / bpe -> tokenizer.ggml.model
# byte-level BPE pre-tokenizer split regex (as tokenizer.json writes it) -> llama.cpp's tokenizer.ggml.pre
_LETTERS = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|"
_TAIL = r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
BPE_PRE = {
    _LETTERS + r"\p{N}{1,3}" + _TAIL: "llama-bpe",  # Llama 3
    _LETTERS + r"\p{N}" + _TAIL: "qwen2",  # Qwen 2 / 2.5 / 3
    None: "gpt-2",  # ByteLevel with its own (GPT-2) regex
}


class GGUFExportError(RuntimeError):
    """A GGUF export, quantisation or read-back check failed; the cause is chained or quoted."""


def gguf_filename(quant: str, base: bool = False) -> str:
    return f"llm-{'base-' if base else ''}{quant}.gguf"


# ---------------------------------------------------------------------------------------------
# names and weight conventions (from the family table)
# ---------------------------------------------------------------------------------------------


def tensor_name_table(n_layers: int, tied: bool, family: str = "llama", biases: Sequence[str] = ()) -> dict[str, str]:
    """Hugging Face parameter name -> GGUF tensor name for one family (`biases`: modules that carry a bias)."""
    import gguf

    fam = FAMILIES[family]
    arch = _gguf_arch(fam)
    allowed = gguf.MODEL_TENSORS[arch]

    def name(member: str, bid: int | None = None) -> str:
        t = gguf.MODEL_TENSOR[member]
        assert t in allowed, f"{member} is not a tensor of gguf arch {fam.arch}"
        return gguf.TENSOR_NAMES[t].format(bid=bid)

    table = {f"{hf}.weight": f"{name(m)}.weight" for hf, m in fam.globals.items() if not (tied and m == "OUTPUT")}
    for i in range(n_layers):
        for hf, m in fam.blocks.items():
            for kind in ("weight", *(("bias",) if hf in biases else ())):
                table[f"model.layers.{i}.{hf}.{kind}"] = f"{name(m, i)}.{kind}"
    return table


def _gguf_arch(fam: Family) -> Any:
    import gguf

    return next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == fam.arch)


def rope_interleave(w: np.ndarray, n_head: int) -> np.ndarray:
    """q/k projection rows (n_head * head_dim, ...): per head, Hugging Face's rotate-half order
    (pairs i, i + head_dim/2) -> llama.cpp's interleaved pairs (2i, 2i + 1). Also for biases and LoRA B."""
    assert w.shape[0] % (2 * n_head) == 0, (w.shape, n_head)
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def convention(fam: Family, cfg: Any, gg_name: str, w: np.ndarray) -> np.ndarray:
    """A Hugging Face array in llama.cpp's convention for the GGUF tensor `gg_name` (LoRA B rows included)."""
    if fam.rope_permute and ".attn_q." in gg_name:
        w = rope_interleave(w, cfg.num_attention_heads)
    elif fam.rope_permute and ".attn_k." in gg_name:
        w = rope_interleave(w, cfg.num_key_value_heads)
    if fam.norm_shift and gg_name.endswith("norm.weight"):
        w = w + np.float32(fam.norm_shift)
    return w


# ---------------------------------------------------------------------------------------------
# the backbone and its metadata
# ---------------------------------------------------------------------------------------------


def backbone(model: nn.Module, allow_lora: bool = False) -> nn.Module:
    """The Hugging Face LM inside an EmotionLLM; ValueError for LoRA (unless allowed) or an unsupported family."""
    llm = getattr(model, "llm", model)
    lora = [n for n, _ in llm.named_parameters() if "lora_" in n]
    if not allow_lora and (lora or hasattr(llm, "peft_config")):
        raise ValueError(f"the LLM still holds LoRA adapters ({lora[:2]}...): load the checkpoint with "
                         "load_checkpoint(path, merge=True) before exporting the merged form")
    cfg = llm.config
    fam = family_for(cfg.model_type)
    bad = {k: getattr(cfg, k, None) for k, want in fam.requires.items() if getattr(cfg, k, want) != want}
    rope_type = _rope(cfg)["rope_type"]
    if rope_type not in ROPE_TYPES or (fam.name != "llama" and rope_type != "default"):
        bad["rope_type"] = rope_type
    if fam.name == "gemma3" and getattr(cfg, "query_pre_attn_scalar", None) != _head_dim(cfg):
        bad["query_pre_attn_scalar"] = cfg.query_pre_attn_scalar  # llama.cpp scales q by 1/sqrt(head_dim)
    if bad:
        raise ValueError(f"{fam.name} variant not supported by the GGUF exporter: {bad} (needs {fam.requires}, "
                         f"rope type {'/'.join(ROPE_TYPES) if fam.name == 'llama' else 'default'}"
                         f"{', query_pre_attn_scalar == head_dim' if fam.name == 'gemma3' else ''})")
    return llm


def _rope(cfg: Any, layer_kind: str = "full_attention") -> dict[str, Any]:
    """Rope settings of one attention kind: transformers 5 keeps them in `rope_parameters` (per kind for Gemma 3),
    4.x in rope_theta / rope_scaling / rope_local_base_freq."""
    params = dict(getattr(cfg, "rope_parameters", None) or {})
    if layer_kind in params or "full_attention" in params:
        params = dict(params.get(layer_kind) or {})
    if "rope_theta" not in params:
        legacy = getattr(cfg, "rope_local_base_freq", None) if layer_kind == "sliding_attention" else None
        params["rope_theta"] = legacy or getattr(cfg, "rope_theta", 10000.0)
        params.update(getattr(cfg, "rope_scaling", None) or {})
    params.setdefault("rope_type", params.get("type", "default"))
    return params


def _head_dim(cfg: Any) -> int:
    return getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads


def arch_metadata(cfg: Any, fam: Family | None = None) -> dict[str, Any]:
    """GGUF key -> value for the architecture (general.file_type added per file)."""
    import gguf

    fam = fam or family_for(cfg.model_type)
    k, a, hd = gguf.Keys.LLM, fam.arch, _head_dim(cfg)
    rope = _rope(cfg)
    meta = {
        gguf.Keys.General.ARCHITECTURE: a, gguf.Keys.General.NAME: "emo-edge-llm",
        k.CONTEXT_LENGTH.format(arch=a): cfg.max_position_embeddings,
        k.EMBEDDING_LENGTH.format(arch=a): cfg.hidden_size,
        k.BLOCK_COUNT.format(arch=a): cfg.num_hidden_layers,
        k.FEED_FORWARD_LENGTH.format(arch=a): cfg.intermediate_size,
        k.VOCAB_SIZE.format(arch=a): cfg.vocab_size,
        gguf.Keys.Attention.HEAD_COUNT.format(arch=a): cfg.num_attention_heads,
        gguf.Keys.Attention.HEAD_COUNT_KV.format(arch=a): cfg.num_key_value_heads,
        gguf.Keys.Attention.LAYERNORM_RMS_EPS.format(arch=a): float(cfg.rms_norm_eps),
        gguf.Keys.Rope.FREQ_BASE.format(arch=a): float(rope["rope_theta"]),
        gguf.Keys.Rope.DIMENSION_COUNT.format(arch=a): hd,
    }
    if hd * cfg.num_attention_heads != cfg.hidden_size or fam.name == "gemma3":  # else llama.cpp uses n_embd/n_head
        meta[gguf.Keys.Attention.KEY_LENGTH.format(arch=a)] = hd
        meta[gguf.Keys.Attention.VALUE_LENGTH.format(arch=a)] = hd
    if rope["rope_type"] == "linear":
        meta[gguf.Keys.Rope.SCALING_TYPE.format(arch=a)] = "linear"
        meta[gguf.Keys.Rope.SCALING_FACTOR.format(arch=a)] = float(rope["factor"])
    if fam.name == "gemma3":
        meta.update(_gemma3_metadata(cfg, a))
    return meta


def _gemma3_metadata(cfg: Any, a: str) -> dict[str, Any]:
    """Sliding-window layers as llama.cpp's per-layer pattern, their rope base, the final logit soft cap."""
    import gguf

    kinds = list(getattr(cfg, "layer_types", None) or ["full_attention"] * cfg.num_hidden_layers)
    meta: dict[str, Any] = {}
    if "sliding_attention" in kinds:
        meta[gguf.Keys.Attention.SLIDING_WINDOW.format(arch=a)] = int(cfg.sliding_window)
        meta[gguf.Keys.Attention.SLIDING_WINDOW_PATTERN.format(arch=a)] = [k == "sliding_attention" for k in kinds]
        meta[gguf.Keys.Rope.FREQ_BASE_SWA.format(arch=a)] = float(_rope(cfg, "sliding_attention")["rope_theta"])
    if getattr(cfg, "final_logit_softcapping", None):
        meta[gguf.Keys.LLM.FINAL_LOGIT_SOFTCAPPING.format(arch=a)] = float(cfg.final_logit_softcapping)
    return meta


def rope_freqs(cfg: Any) -> np.ndarray | None:
    """llama3 rope scaling as llama.cpp's rope_freqs tensor: the divisor of each rotary frequency (head_dim/2,)."""
    rope = _rope(cfg)
    if rope["rope_type"] != "llama3":
        return None
    dim = _head_dim(cfg)
    freqs = 1.0 / (rope["rope_theta"] ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
    factor, lo, hi = rope["factor"], rope.get("low_freq_factor", 1.0), rope.get("high_freq_factor", 4.0)
    old = rope.get("original_max_position_embeddings", 8192)
    wavelen = 2 * math.pi / freqs
    smooth = (old / wavelen - lo) / (hi - lo)
    mid = 1.0 / ((1 - smooth) / factor + smooth)
    return np.where(wavelen < old / hi, 1.0, np.where(wavelen > old / lo, factor, mid)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# tokenizer metadata
# ---------------------------------------------------------------------------------------------


def tokenizer_metadata(tok: Any, n_rows: int, source_gguf: str | Path | None = None) -> dict[str, Any]:
    """tokenizer.ggml.* (and tokenizer.chat_template) for `tok`, padded with UNUSED tokens up to n_rows."""
    if source_gguf is not None:
        return gguf_tokenizer_fields(source_gguf)
    if getattr(tok, "_sp", None) is not None:
        return spm_metadata(tok, n_rows)
    return bpe_metadata(tok, n_rows)


def gguf_tokenizer_fields(path: str | Path) -> dict[str, Any]:
    """Every tokenizer.* field of a GGUF file, as Python values (copied from the backbone's source file)."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    out: dict[str, Any] = {}
    for key, f in reader.fields.items():
        if key.startswith("tokenizer."):
            value = f.contents()
            if f.types[0] == gguf.GGUFValueType.ARRAY and f.types[-1] == gguf.GGUFValueType.UINT8:
                value = bytes(np.asarray(value, dtype=np.uint8))
            out[key] = value
    if "tokenizer.ggml.model" not in out:
        raise ValueError(f"{path}: no tokenizer in this GGUF (tokenizer.ggml.model missing)")
    return out


def spm_metadata(tok: Any, n_rows: int) -> dict[str, Any]:
    """tokenizer.ggml.* from our SentencePiece model; padded with UNUSED tokens up to the embedding rows."""
    from sentencepiece import sentencepiece_model_pb2

    path = Path(tok.path) / SPM_FILE
    if getattr(tok, "_sp", None) is None or not path.is_file():
        raise ValueError(f"{tok.path}: no SentencePiece model ({SPM_FILE})")
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(path.read_bytes())
    kind = SPM_MODELS.get(proto.trainer_spec.model_type)
    if kind is None:
        raise ValueError(f"{path}: SentencePiece model type {proto.trainer_spec.model_type} not supported "
                         "(unigram or bpe)")
    pieces = list(proto.pieces)
    extra = _padding(len(pieces), n_rows, path)
    ns, t = proto.normalizer_spec, "tokenizer.ggml"
    meta = {
        f"{t}.model": kind,
        f"{t}.tokens": [p.piece for p in pieces] + [f"<unused{i}>" for i in range(extra)],
        f"{t}.scores": [float(p.score) for p in pieces] + [0.0] * extra,
        f"{t}.token_type": [_token_type(SPM_TOKEN_TYPES[p.type]) for p in pieces] + [_token_type("UNUSED")] * extra,
        f"{t}.unknown_token_id": proto.trainer_spec.unk_id,
        f"{t}.add_space_prefix": bool(ns.add_dummy_prefix),
        f"{t}.remove_extra_whitespaces": bool(ns.remove_extra_whitespaces),
        **_special_ids(tok),
    }
    if kind == "t5" and ns.precompiled_charsmap:
        meta[f"{t}.precompiled_charsmap"] = bytes(ns.precompiled_charsmap)
    return meta


def bpe_metadata(tok: Any, n_rows: int) -> dict[str, Any]:
    """tokenizer.ggml.* from a Hugging Face byte-level BPE tokenizer (Llama 3, Qwen, GPT-2 style)."""
    hf = tok._hf
    spec = json.loads(hf.backend_tokenizer.to_str())
    model = spec["model"]
    decoder = (spec.get("decoder") or {}).get("type")
    if model.get("type") != "BPE" or model.get("byte_fallback") or decoder != "ByteLevel":
        raise ValueError(f"{tok.path}: only byte-level BPE Hugging Face tokenizers (or a SentencePiece {SPM_FILE}) "
                         f"export to GGUF; this one is {model.get('type')} with decoder "
                         f"{(spec.get('decoder') or {}).get('type')}")
    vocab = {i: s for s, i in hf.get_vocab().items()}
    added = hf.added_tokens_decoder  # id -> AddedToken
    _padding(max(vocab) + 1, n_rows, tok.path)
    tokens, types = [], []
    for i in range(n_rows):
        if i not in vocab:
            tokens.append(f"[PAD{i}]")
            types.append(_token_type("UNUSED"))
            continue
        tokens.append(vocab[i])
        types.append(_token_type("NORMAL" if i not in added else "CONTROL" if added[i].special else "USER_DEFINED"))
    t = "tokenizer.ggml"
    meta = {f"{t}.model": "gpt2", f"{t}.pre": _bpe_pre(spec.get("pre_tokenizer"), tok.path), f"{t}.tokens": tokens,
            f"{t}.token_type": types,
            f"{t}.merges": [m if isinstance(m, str) else " ".join(m) for m in model["merges"]],
            **_special_ids(tok)}
    if getattr(hf, "chat_template", None):
        meta["tokenizer.chat_template"] = str(hf.chat_template)
    return meta


def _bpe_pre(pre: dict | None, where: Any) -> str:
    """llama.cpp's pre-tokenizer name for a tokenizer.json pre_tokenizer (a Split regex + ByteLevel, or ByteLevel)."""
    steps = (pre or {}).get("pretokenizers", [pre] if pre else [])
    splits = [s["pattern"].get("Regex") for s in steps if s.get("type") == "Split"]
    byte_level = [s for s in steps if s.get("type") == "ByteLevel"]
    regex = splits[0] if len(splits) == 1 else None
    if byte_level and (regex in BPE_PRE if splits else byte_level[0].get("use_regex", True)):
        return BPE_PRE[regex]
    raise ValueError(f"{where}: byte-level BPE pre-tokenizer not recognised (known split regexes: Llama 3, Qwen 2, "
                     f"or GPT-2's ByteLevel); got {str(pre)[:160]}")


def _padding(n_tokens: int, n_rows: int, where: Any) -> int:
    if n_tokens > n_rows:
        raise ValueError(f"{where}: {n_tokens} tokens but the embedding has only {n_rows} rows")
    return n_rows - n_tokens  # rows no token uses: llama.cpp needs one token per row


def _special_ids(tok: Any) -> dict[str, Any]:
    """BOS/EOS/pad ids and add_bos as EmotionLLM uses them (BOS first exactly when the tokenizer has one)."""
    t = "tokenizer.ggml"
    meta: dict[str, Any] = {f"{t}.eos_token_id": tok.eos_id, f"{t}.padding_token_id": tok.pad_id,
                            f"{t}.add_bos_token": tok.bos_id is not None, f"{t}.add_eos_token": False}
    if tok.bos_id is not None:
        meta[f"{t}.bos_token_id"] = tok.bos_id
    return meta


def _token_type(name: str) -> int:
    import gguf

    return int(gguf.TokenType[name])


# ---------------------------------------------------------------------------------------------
# tensors and writing
# ---------------------------------------------------------------------------------------------


def base_state(llm: nn.Module) -> dict[str, np.ndarray]:
    """The base model's parameters as float32 arrays under Hugging Face names (peft wrapping and LoRA left out)."""
    out = {}
    for k, v in llm.state_dict().items():
        if "lora_" in k:
            continue
        k = k.removeprefix("base_model.model.").replace(".base_layer.", ".")
        out[k] = v.detach().to(torch.float32).cpu().numpy()
    return out


def gguf_tensors(llm: nn.Module) -> dict[str, np.ndarray]:
    """GGUF name -> float32 array in llama.cpp's conventions; every parameter mapped, none invented."""
    cfg = llm.config
    fam = family_for(cfg.model_type)
    state = base_state(llm)
    tied = bool(getattr(cfg, "tie_word_embeddings", False))
    if tied:
        state.pop("lm_head.weight", None)
    biases = {k.split(".", 3)[3].rsplit(".", 1)[0] for k in state
              if k.startswith("model.layers.") and k.endswith(".bias")}
    table = tensor_name_table(cfg.num_hidden_layers, tied, fam.name, sorted(biases))
    unmapped, missing = sorted(set(state) - set(table)), sorted(set(table) - set(state))
    if unmapped or missing:
        raise GGUFExportError(f"{fam.name} name table and model disagree: unmapped {unmapped[:4]}, "
                              f"missing {missing[:4]}")
    out = {gg: np.ascontiguousarray(convention(fam, cfg, gg, state[hf]), dtype=np.float32) for hf, gg in table.items()}
    if (freqs := rope_freqs(cfg)) is not None:
        import gguf

        out[gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight"] = freqs
    return out


def write_gguf(path: Path, tensors: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
    """One GGUF file: every metadata key typed by its Python value (see `_add_kv`), then the tensors as given."""
    import gguf

    w = gguf.GGUFWriter(str(path), meta[gguf.Keys.General.ARCHITECTURE])  # writes general.architecture itself
    for key, value in meta.items():
        if key != gguf.Keys.General.ARCHITECTURE:
            _add_kv(w, key, value)
    for name, arr in tensors.items():
        w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _add_kv(w: Any, key: str, value: Any) -> None:
    """Scalars: bool BOOL, int UINT32, float FLOAT32, str STRING; bytes a UINT8 array; lists typed by element
    (str STRING, bool BOOL, int INT32, float FLOAT32) -- the types llama.cpp reads these keys with."""
    import gguf

    v = gguf.GGUFValueType
    if isinstance(value, bytes):
        w.add_key_value(key, list(value), v.ARRAY, v.UINT8)
    elif isinstance(value, list):
        first = value[0]
        sub = v.STRING if isinstance(first, str) else v.BOOL if isinstance(first, bool) else \
            v.INT32 if isinstance(first, int) else v.FLOAT32
        w.add_key_value(key, value, v.ARRAY, sub)
    else:
        vt = v.BOOL if isinstance(value, bool) else v.UINT32 if isinstance(value, int) else \
            v.FLOAT32 if isinstance(value, float) else v.STRING
        w.add_key_value(key, value, vt)


def quantize(src: Path, dst: Path, quant: str, threads: int = 2) -> None:
    """llama_model_quantize src -> dst in-process; GGUFExportError quoting llama.cpp's log on failure."""
    lib = llama_lib()
    params = lib.llama_model_quantize_default_params()
    params.ftype, params.nthread = QUANTS[quant], threads
    LLAMA_LOG.mark()
    rc = lib.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0:
        raise GGUFExportError(f"llama_model_quantize {src.name} -> {quant} returned {rc}: {LLAMA_LOG.cause()}")


# ---------------------------------------------------------------------------------------------
# export: merged form, base model, LoRA adapter
# ---------------------------------------------------------------------------------------------


def export_llm(model: nn.Module, out_dir: str | Path, quants: Sequence[str] = ("f16", "q8_0", "q4_k_m"),
               threads: int = 2, clips: Any = None, max_new_tokens: int = 16, source_gguf: str | Path | None = None,
               base: bool = False) -> dict[str, Any]:
    """Write llm-<quant>.gguf for each requested quantisation to `out_dir`, read each back, check parity.

    model: an EmotionLLM, merged (no LoRA modules), or with `base=True` any (its LoRA left out: the base
    model of the base+lora form, files llm-base-<quant>.gguf). quants: names from QUANTS; the F32 file is
    always made (the source of the others) and kept only when asked for. clips: real clips for the parity
    check (see `parity_batch`), None skips it. source_gguf: the GGUF the backbone was loaded from (its
    tokenizer is copied). Returns {"arch", "files": {quant: {file, sha256, bytes, tensor_types}}, "metadata",
    "tokenizer", "versions", "parity"}.
    """
    bad = [q for q in quants if q not in QUANTS]
    if bad:
        raise ValueError(f"unknown quantisation(s) {bad}; choose from {', '.join(QUANTS)}")
    llm = backbone(model, allow_lora=base)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = arch_metadata(llm.config)
    tok_meta = tokenizer_metadata(model.tok, llm.get_input_embeddings().num_embeddings, source_gguf)
    tensors = gguf_tensors(llm)
    paths = _write_quants(out, tensors, {**meta, **tok_meta}, quants, threads, base)
    shapes = {name: tuple(reversed(arr.shape)) for name, arr in tensors.items()}
    files = {q: {"file": p.name, "sha256": sha256_file(p), "bytes": p.stat().st_size,
                 **verify_gguf(p, shapes, {**meta, **tok_meta, "general.file_type": QUANTS[q]})}
             for q, p in paths.items()}
    parity = ({"skipped": "no clips given"} if clips is None or base else
              check_llm_parity(model, variants_for(paths), clips, max_new_tokens, threads))
    return {"arch": meta["general.architecture"], "files": files, "metadata": dict(meta),
            "tokenizer": _tokenizer_summary(tok_meta), "versions": versions(), "parity": parity}


def _write_quants(out: Path, tensors: Mapping[str, np.ndarray], meta: Mapping[str, Any], quants: Sequence[str],
                  threads: int, base: bool) -> dict[str, Path]:
    src = out / gguf_filename("f32", base)
    atomic_write(src, lambda tmp: write_gguf(tmp, tensors, {**meta, "general.file_type": QUANTS["f32"]}))
    paths = {}
    for q in dict.fromkeys(quants):
        paths[q] = out / gguf_filename(q, base)
        if q != "f32":
            atomic_write(paths[q], lambda tmp, q=q: quantize(src, tmp, q, threads))
    if "f32" not in paths:
        src.unlink()
    return paths


def _tokenizer_summary(tok_meta: Mapping[str, Any]) -> dict[str, Any]:
    bulky = ("tokens", "scores", "token_type", "precompiled_charsmap", "merges", "chat_template")
    summary = {k: v for k, v in tok_meta.items() if k.rsplit(".", 1)[-1] not in bulky}
    summary["n_tokens"] = len(tok_meta["tokenizer.ggml.tokens"])
    summary["has_chat_template"] = "tokenizer.chat_template" in tok_meta
    return summary


def lora_tensors(llm: nn.Module) -> tuple[dict[str, np.ndarray], float]:
    """A peft-wrapped LM's LoRA as llama.cpp adapter tensors: <base tensor>.lora_a (r, in) and .lora_b (out, r)
    (numpy order; GGUF order reversed), B rows in the base tensor's convention; and the alpha (scale alpha / r)."""
    cfg = llm.config
    fam = family_for(cfg.model_type)
    peft_cfg = _peft_config(llm)
    table = tensor_name_table(cfg.num_hidden_layers, tied=False, family=fam.name)
    pairs: dict[str, dict[str, np.ndarray]] = {}
    for k, v in llm.state_dict().items():
        if ".lora_A." not in k and ".lora_B." not in k:
            continue
        module = k.removeprefix("base_model.model.").split(".lora_")[0]
        gg = table.get(f"{module}.weight")
        if gg is None:
            raise GGUFExportError(f"LoRA on {module}: not a {fam.name} tensor llama.cpp can adapt")
        pairs.setdefault(gg, {})["a" if ".lora_A." in k else "b"] = v.detach().to(torch.float32).cpu().numpy()
    if not pairs:
        raise ValueError("the LLM holds no LoRA adapter: load the checkpoint with merge=False")
    out = {}
    for gg, ab in sorted(pairs.items()):
        out[f"{gg}.lora_a"] = np.ascontiguousarray(ab["a"])
        out[f"{gg}.lora_b"] = np.ascontiguousarray(convention(fam, cfg, gg, ab["b"]))
    return out, float(peft_cfg.lora_alpha)


def _peft_config(llm: nn.Module) -> Any:
    cfgs = getattr(llm, "peft_config", None)
    if not cfgs:
        raise ValueError("the LLM holds no LoRA adapter (no peft_config): load the checkpoint with merge=False")
    if len(cfgs) != 1:
        raise ValueError(f"one LoRA adapter expected, the LLM holds {sorted(cfgs)}")
    c = next(iter(cfgs.values()))
    unsupported = {"use_rslora": c.use_rslora, "use_dora": getattr(c, "use_dora", False),
                   "rank_pattern": bool(c.rank_pattern), "alpha_pattern": bool(c.alpha_pattern), "bias": c.bias}
    if any(v for k, v in unsupported.items() if k != "bias") or c.bias != "none":
        raise ValueError(f"LoRA settings llama.cpp's adapter cannot express: {unsupported} (it scales by alpha / r)")
    return c


def export_lora_adapter(model: nn.Module, out_path: str | Path) -> dict[str, Any]:
    """The LoRA of an unmerged EmotionLLM as a llama.cpp GGUF adapter (F32); returns {file, sha256, bytes, ...}."""
    import gguf

    llm = getattr(model, "llm", model)
    tensors, alpha = lora_tensors(llm)
    arch = family_for(llm.config.model_type).arch
    meta = {gguf.Keys.General.ARCHITECTURE: arch, gguf.Keys.General.TYPE: gguf.GGUFType.ADAPTER,
            gguf.Keys.General.NAME: "emo-edge-lora", gguf.Keys.Adapter.TYPE: "lora",
            gguf.Keys.Adapter.LORA_ALPHA: alpha}
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda tmp: write_gguf(tmp, tensors, meta))
    check = verify_gguf(out, {n: tuple(reversed(a.shape)) for n, a in tensors.items()}, meta)
    rank = {int(a.shape[0]) for n, a in tensors.items() if n.endswith(".lora_a")}
    return {"file": out.name, "sha256": sha256_file(out), "bytes": out.stat().st_size, "alpha": alpha,
            "rank": sorted(rank), "n_adapted": len(tensors) // 2, **check}


def export_base_plus_lora(model: nn.Module, out_dir: str | Path, quants: Sequence[str] = ("q4_k_m",),
                          threads: int = 2, clips: Any = None, max_new_tokens: int = 16,
                          source_gguf: str | Path | None = None) -> dict[str, Any]:
    """The base+lora form: the base GGUF (the vendor's `source_gguf` copied untouched, else the frozen base
    exported here in `quants`) + the adapter; parity of llama.cpp (base + adapter) vs PyTorch with the LoRA.

    Returns export_llm's report with "form", "base" {quant: {file, sha256, source}}, "adapter" added.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if source_gguf is not None:
        report = _vendor_base(model, out, Path(source_gguf))
    else:
        report = export_llm(model, out, quants, threads, source_gguf=None, base=True)
    adapter = export_lora_adapter(model, out / ADAPTER_FILE)
    variants = variants_for({q: out / f["file"] for q, f in report["files"].items()}, out / ADAPTER_FILE)
    report["parity"] = ({"skipped": "no clips given"} if clips is None else
                        check_llm_parity(model, variants, clips, max_new_tokens, threads))
    report.update(form="base+lora", adapter=adapter)
    return report


def _vendor_base(model: nn.Module, out: Path, source: Path) -> dict[str, Any]:
    """The vendor's GGUF copied into the bundle as it is; its quantisation read from general.file_type."""
    import gguf

    reader = gguf.GGUFReader(str(source))
    ftype = int(reader.fields["general.file_type"].contents()) if "general.file_type" in reader.fields else None
    quant = next((q for q, t in QUANTS.items() if t == ftype), f"ftype{ftype}")
    dst = out / gguf_filename(quant, base=True)
    shutil.copyfile(source, dst)
    digest = sha256_file(dst)
    if digest != sha256_file(source):
        raise GGUFExportError(f"copy of {source} to {dst} differs from its source")
    arch = str(reader.fields["general.architecture"].contents())
    llm = backbone(model, allow_lora=True)
    if arch != family_for(llm.config.model_type).arch:
        raise ValueError(f"{source}: architecture {arch!r}, the backbone is {llm.config.model_type!r}")
    info = {"file": dst.name, "sha256": digest, "bytes": dst.stat().st_size, "source": str(source),
            "tensor_types": dict(Counter(t.tensor_type.name for t in reader.tensors))}
    return {"arch": arch, "files": {quant: info}, "metadata": {"general.architecture": arch},
            "tokenizer": _tokenizer_summary(gguf_tokenizer_fields(source)), "versions": versions()}


# ---------------------------------------------------------------------------------------------
# read-back
# ---------------------------------------------------------------------------------------------


def verify_gguf(path: Path, shapes: Mapping[str, tuple[int, ...]], meta: Mapping[str, Any]) -> dict[str, Any]:
    """Read `path` back with GGUFReader: every tensor present with its (GGUF-order) shape, every metadata
    value as written. Returns {"n_tensors", "tensor_types": {ggml type: count}}."""
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as e:
        raise GGUFExportError(f"{path}: unreadable as GGUF: {e}") from e
    got = {t.name: t for t in reader.tensors}
    if set(got) != set(shapes):
        raise GGUFExportError(f"{path}: tensors differ: missing {sorted(set(shapes) - set(got))[:4]}, "
                              f"extra {sorted(set(got) - set(shapes))[:4]}")
    for name, want in shapes.items():
        if tuple(int(d) for d in got[name].shape) != want:
            raise GGUFExportError(f"{path}: tensor {name} has shape {tuple(got[name].shape)}, expected {want}")
    for key, want in meta.items():
        field = reader.fields.get(key)
        value = None if field is None else field.contents()
        if isinstance(want, bytes):
            value = None if value is None else bytes(np.asarray(value, dtype=np.uint8))
        if not _same(value, want):
            raise GGUFExportError(f"{path}: metadata {key} is {str(value)[:60]}, expected {str(want)[:60]}")
    return {"n_tensors": len(got), "tensor_types": dict(Counter(t.tensor_type.name for t in got.values()))}


def _same(got: Any, want: Any) -> bool:
    if isinstance(want, float):
        return got is not None and np.isclose(float(got), want, rtol=1e-6)
    if isinstance(want, list) and want and isinstance(want[0], float):
        return got is not None and np.allclose(np.asarray(got, np.float64), want, rtol=1e-6)
    return got == want


# ---------------------------------------------------------------------------------------------
# parity
# ---------------------------------------------------------------------------------------------


def check_llm_parity(model: nn.Module, variants: Mapping[str, Mapping[str, str | Path]], clips: Any,
                     max_new_tokens: int = 16, threads: int = 2) -> dict[str, Any]:
    """llama.cpp vs PyTorch on real clips through the PyTorch perception (see the module docstring).

    variants: name -> {"model": GGUF path, "lora": adapter path (optional), "attention": "default" | "exact"
    (optional; `variants_for` runs the F32 file with exact attention, so that it checks the conversion alone)}.
    """
    batch = parity_batch(clips)
    with torch.no_grad():
        p = model.perception(batch.image, batch.frames, batch.mel, batch.present)
    suffixes = model.with_evidence(batch.suffixes, p, batch.present)  # as served: the readings opening the prompt
    return llm_parity(model, variants, p["tokens"], p["token_mask"], suffixes, max_new_tokens, threads)


def llm_parity(model: nn.Module, variants: Mapping[str, Mapping[str, str | Path]], mm: torch.Tensor,
               mm_mask: torch.Tensor, suffixes: Sequence[str], max_new_tokens: int = 16,
               threads: int = 2) -> dict[str, Any]:
    """Multimodal tokens mm (B, N, n_embd) with mask (B, N) and the suffix texts: PyTorch's greedy answers and
    logits at every position vs each llama.cpp variant's, teacher-forced on PyTorch's answer tokens."""
    from emo_edge.labels import parse_label

    ref = [torch_greedy(model, mm[i], mm_mask[i], s, max_new_tokens) for i, s in enumerate(suffixes)]
    ref_answers = [model.tok.decode(ids).strip() for ids, _ in ref]
    first = np.stack([lg[len(lg) - len(ids) - 1] for ids, lg in ref])  # (B, V) at the first answer position
    report: dict[str, Any] = {"metric": METRIC, "n": len(ref), "max_new_tokens": max_new_tokens,
                              "torch": {"answers": ref_answers, "labels": [parse_label(a) for a in ref_answers],
                                        "logit_range": float(max(np.ptp(lg) for _, lg in ref)),
                                        "top2_margins": _top2_margins(first)},
                              "quants": {}}
    n_ctx = max(len(lg) for _, lg in ref) + max_new_tokens + 8
    mm_np, mask_np = mm.float().numpy(), mm_mask.float().numpy()
    for name, v in variants.items():
        att = v.get("attention", "default")
        with LlamaCppLM(v["model"], n_ctx=n_ctx, n_threads=threads, lora=v.get("lora"), attention=att) as lm:
            got = [_llama_run(lm, mm_np[i], mask_np[i], s, ids, max_new_tokens, getattr(model, "chat", None))
                   for i, (s, (ids, _)) in enumerate(zip(suffixes, ref, strict=True))]
        report["quants"][name] = {**_compare(ref, ref_answers, got, report["torch"]["labels"]), "attention": att}
    return report


def variants_for(paths: Mapping[str, Path], lora: Path | None = None) -> dict[str, dict[str, Any]]:
    """Parity variants per quantisation: F32 with exact attention (the conversion alone), the rest as they run."""
    return {q: {"model": p, "lora": lora, "attention": "exact" if q == "f32" else "default"} for q, p in paths.items()}


def _llama_run(lm: LlamaCppLM, mm: np.ndarray, mask: np.ndarray, suffix: str, answer_ids: Sequence[int],
               max_new_tokens: int, chat: tuple[str, str] | None = None) -> tuple[str, np.ndarray]:
    """llama.cpp's own greedy answer, then its logits at every prompt position and along `answer_ids`."""
    lm.prefill(lm.prefix_ids(chat=chat), mm, mask, lm.suffix_ids(suffix, chat))
    answer = lm.generate(max_new_tokens)
    prompt = lm.prefill(lm.prefix_ids(chat=chat), mm, mask, lm.suffix_ids(suffix, chat), all_logits=True)
    along = lm.feed_tokens(answer_ids, all_logits=True)
    return answer, np.concatenate([prompt, along])


def _compare(ref: Sequence[tuple[list[int], np.ndarray]], ref_answers: Sequence[str],
             got: Sequence[tuple[str, np.ndarray]], ref_labels: Sequence[Any]) -> dict[str, Any]:
    from emo_edge.labels import parse_label

    answers = [a for a, _ in got]
    diffs, first, top1 = [], [], []
    for (ids, want), (_, have) in zip(ref, got, strict=True):
        if have.shape != want.shape:
            raise GGUFExportError(f"llama.cpp gave {have.shape} logits, PyTorch {want.shape}: prompts differ")
        d = np.abs(have - want).max(axis=-1)  # (positions,)
        n_ans = len(ids) + 1
        diffs.append(float(d.max()))
        first.append(float(d[-n_ans]))
        top1 += list(have[-n_ans:].argmax(-1) == want[-n_ans:].argmax(-1))
    labels = [parse_label(a) for a in answers]
    return {"answers": answers, "labels": labels, "identical_answers": _share(answers, ref_answers),
            "same_label": _share(labels, ref_labels), "max_abs_logit_diff": max(diffs),
            "max_abs_logit_diff_first": max(first), "top1_agreement": float(np.mean(top1))}


@torch.no_grad()
def torch_greedy(model: nn.Module, mm: torch.Tensor, mm_mask: torch.Tensor, suffix: str,
                 max_new_tokens: int) -> tuple[list[int], np.ndarray]:
    """One unpadded prompt: PyTorch's greedy answer ids (EOS left out) and the logits (n_attended + n_answer, V)
    at every attended prompt position and after each answer token (full recompute: a reference, not fast)."""
    inputs = model.assemble(mm[None], mm_mask[None], [suffix], None)
    inputs.pop("labels")
    embeds, mask, pos = inputs["inputs_embeds"], inputs["attention_mask"], inputs["position_ids"]
    emb = model.llm.get_input_embeddings()
    ids: list[int] = []
    while True:  # one forward more than answer tokens: the last gives the logits after the last token
        logits = model.llm(inputs_embeds=embeds, attention_mask=mask, position_ids=pos).logits[0]
        nxt = int(logits[-1].argmax())
        if nxt == model.tok.eos_id or len(ids) == max_new_tokens:
            break
        ids.append(nxt)
        embeds = torch.cat([embeds, emb(torch.tensor([[nxt]]))], dim=1)
        mask = torch.cat([mask, mask.new_ones((1, 1))], dim=1)
        pos = torch.cat([pos, pos[:, -1:] + 1], dim=1)
    keep = mask[0].bool()
    return ids, logits[keep].float().numpy()


def _top2_margins(logits: np.ndarray) -> list[float]:
    """Per prompt, top-1 minus top-2 logit at the first answer position: a flip needs an error about this big."""
    top2 = np.sort(logits, axis=-1)[:, -2:]
    return [round(float(x), 5) for x in top2[:, 1] - top2[:, 0]]


def _share(a: Sequence[Any], b: Sequence[Any]) -> float:
    return float(np.mean([x == y for x, y in zip(a, b, strict=True)]))


def parity_batch(clips: Any) -> Any:
    """The first MAX_CLIPS clips (FeatureSet or mapping) as an "emotion" Batch, with a copy of the first
    clip without audio appended, so that masked multimodal tokens are always covered."""
    from emo_edge.model.inputs import to_batch

    get = clips.get if isinstance(clips, Mapping) else lambda k, d=None: getattr(clips, k, d)
    image, frames, mel = (np.asarray(get(k))[:MAX_CLIPS] for k in ("image", "frames", "mel"))
    n = len(image)
    present = get("present", None)
    present = np.ones((n, 3), np.float32) if present is None else np.asarray(present, np.float32)[:n]
    subtitles = get("subtitles", None)
    if subtitles is None:  # a FeatureSet carries them in its records
        subtitles = [r.subtitle for r in get("records", None) or []] or [None] * n
    take = [*range(n), 0]
    video_on, audio_on = present[take, 1].copy(), present[take, 2].copy()
    audio_on[-1], video_on[-1] = 0.0, 1.0
    return to_batch(frames[take], image[take], mel[take].astype(np.float32), video_on, audio_on,
                    ["emotion"] * len(take), [subtitles[i] for i in take])


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def versions() -> dict[str, str]:
    from importlib.metadata import version

    return {"torch": torch.__version__, "gguf": version("gguf"), "llama_cpp_python": version("llama_cpp_python"),
            "numpy": np.__version__}
