"""The merged LLM -> GGUF f16 -> Q8_0 / Q4_K_M (llama.cpp), each read back and checked against PyTorch.

Only a merged backbone is exported (LoRA folded in by `load_checkpoint(path, merge=True)`); the
perception graphs go to ONNX separately (`onnx_export`). Supported backbone: LLaMA (Hugging Face
`model_type` "llama") with our SentencePiece tokenizer.

f16 is written here with gguf-py's typed `GGUFWriter` through one explicit name table
(`tensor_name_table`), q/k rows permuted from Hugging Face's rotate-half layout to llama.cpp's
interleaved rope pairs. The tokenizer is the SentencePiece model itself: a unigram model is stored as
llama.cpp's UGM vocabulary ("t5", which is SentencePiece's unigram Viterbi with its normaliser
charsmap), a BPE model as llama.cpp's SPM vocabulary ("llama"). BOS: `add_bos_token` is true, as
the PyTorch model starts every prompt with BOS; the runtime (`emo_edge.runtime.llm`) reads the flag
and prepends BOS itself, tokenizing text spans without special tokens.

The quantised files are made in-process by `llama_model_quantize`; llama.cpp falls back to another
type for a tensor whose rows are not a multiple of the k-quant block (256), so tiny test models get
Q5_0/Q8_0 where Q4_K/Q6_K would stand: the report lists the tensor types of every file.

Parity (`check_llm_parity`), per quant, on real clips through the PyTorch perception:
    identical_answers = share of clips whose greedy answer equals `EmotionLLM.generate`'s
    same_label        = share whose parsed emotion label (`parse_label`) equals PyTorch's (None == None)
    max_abs_logit_diff = max |llama.cpp - torch| over the vocabulary at the first answer position
    top1_agreement    = share of clips with the same argmax there
    torch.top2_margins = PyTorch's top-1 minus top-2 logit there, per clip (how close each call was)
"""

from __future__ import annotations

import ctypes
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from emo_edge.fileio import atomic_write, sha256_file
from emo_edge.model.tokenizer import SPM_FILE
from emo_edge.runtime.llm import LLAMA_LOG, LlamaCppLM, llama_lib

SUPPORTED_ARCHS = {"llama": "llama"}  # Hugging Face model_type -> GGUF general.architecture
QUANTS = {"f16": 1, "q8_0": 7, "q4_k_m": 15}  # name -> llama_ftype (LLAMA_FTYPE_MOSTLY_*)
MAX_CLIPS = 8  # real clips used for the parity check
METRIC = ("identical_answers / same_label = shares of clips agreeing with PyTorch greedy answers / parsed labels; "
          "max_abs_logit_diff = max |llama.cpp - torch| at the first answer position; top1_agreement there")
# Hugging Face LLaMA module -> GGUF tensor (per block: blk.{i}.<name>)
BLOCK_NAMES = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
# sentencepiece ModelProto.SentencePiece.Type -> GGUF token type (the numbers happen to agree; named here)
SPM_TOKEN_TYPES = {1: "NORMAL", 2: "UNKNOWN", 3: "CONTROL", 4: "USER_DEFINED", 5: "UNUSED", 6: "BYTE"}
SPM_MODELS = {1: "t5", 2: "llama"}  # TrainerSpec.model_type unigram / bpe -> tokenizer.ggml.model


class GGUFExportError(RuntimeError):
    """A GGUF export, quantisation or read-back check failed; the cause is chained or quoted."""


def gguf_filename(quant: str) -> str:
    return f"llm-{quant}.gguf"


def tensor_name_table(n_layers: int, tied: bool) -> dict[str, str]:
    """Hugging Face LLaMA parameter name -> GGUF tensor name (the one place names are mapped)."""
    table = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight"}
    if not tied:
        table["lm_head.weight"] = "output.weight"
    for i in range(n_layers):
        for hf, gg in BLOCK_NAMES.items():
            table[f"model.layers.{i}.{hf}.weight"] = f"blk.{i}.{gg}.weight"
    return table


def rope_interleave(w: np.ndarray, n_head: int) -> np.ndarray:
    """q/k projection rows (n_head * head_dim, in): per head, Hugging Face's rotate-half order
    (pairs i, i + head_dim/2) -> llama.cpp's interleaved pairs (2i, 2i + 1)."""
    assert w.shape[0] % (2 * n_head) == 0, (w.shape, n_head)
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


# ---------------------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------------------


def export_llm(model: nn.Module, out_dir: str | Path, quants: Sequence[str] = ("f16", "q8_0", "q4_k_m"),
               threads: int = 2, clips: Any = None, max_new_tokens: int = 16) -> dict[str, Any]:
    """Write llm-f16.gguf and the requested quantisations to `out_dir`, read each back, check parity.

    model: a merged EmotionLLM (no LoRA modules). quants: names from QUANTS; f16 is always written
    (it is the source of the others). clips: real clips for the parity check (a FeatureSet or a mapping
    with image, frames, mel and optionally present (N, 3) and subtitles), the first MAX_CLIPS used;
    None skips parity. Returns {"arch", "files": {quant: {file, sha256, bytes, tensor_types}},
    "metadata", "tokenizer", "versions", "parity"}.
    """
    bad = [q for q in quants if q not in QUANTS]
    if bad:
        raise ValueError(f"unknown quantisation(s) {bad}; choose from {', '.join(QUANTS)}")
    llm = backbone(model)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta, tok_meta = llama_metadata(llm.config), spm_metadata(model.tok, llm.get_input_embeddings().num_embeddings)
    tensors = gguf_tensors(llm)
    paths = {"f16": out / gguf_filename("f16")}
    atomic_write(paths["f16"], lambda tmp: write_f16(tmp, tensors, meta, tok_meta))
    for q in dict.fromkeys(quants):
        if q != "f16":
            paths[q] = out / gguf_filename(q)
            atomic_write(paths[q], lambda tmp, q=q: quantize(paths["f16"], tmp, q, threads))
    shapes = {name: tuple(reversed(arr.shape)) for name, arr in tensors.items()}
    files = {q: {"file": p.name, "sha256": sha256_file(p), "bytes": p.stat().st_size,
                 **verify_gguf(p, shapes, {**meta, **tok_meta, "general.file_type": QUANTS[q]})}
             for q, p in paths.items()}
    parity = (check_llm_parity(model, paths, clips, max_new_tokens, threads) if clips is not None
              else {"skipped": "no clips given"})
    bulky = ("tokens", "scores", "token_type", "precompiled_charsmap")
    tokenizer = {k: v for k, v in tok_meta.items() if k.rsplit(".", 1)[-1] not in bulky}
    tokenizer["n_tokens"] = len(tok_meta["tokenizer.ggml.tokens"])
    return {"arch": SUPPORTED_ARCHS[llm.config.model_type], "files": files, "metadata": dict(meta),
            "tokenizer": tokenizer, "versions": versions(), "parity": parity}


def backbone(model: nn.Module) -> nn.Module:
    """The Hugging Face LLaMA inside a merged EmotionLLM; ValueError for LoRA or an unsupported architecture."""
    llm = getattr(model, "llm", model)
    lora = [n for n, _ in llm.named_parameters() if "lora_" in n]
    if lora or hasattr(llm, "peft_config"):
        raise ValueError(f"the LLM still holds LoRA adapters ({lora[:2]}...): load the checkpoint with "
                         "load_checkpoint(path, merge=True) before exporting")
    cfg = llm.config
    if cfg.model_type not in SUPPORTED_ARCHS:
        raise ValueError(f"GGUF export supports the {', '.join(SUPPORTED_ARCHS)} architecture(s) only; "
                         f"this backbone is {cfg.model_type!r}")
    rope = _rope_parameters(cfg)
    unsupported = {"hidden_act": cfg.hidden_act != "silu", "attention_bias": bool(cfg.attention_bias),
                   "mlp_bias": bool(getattr(cfg, "mlp_bias", False)),
                   "rope_type": rope.get("rope_type", "default") != "default",
                   "pretraining_tp": getattr(cfg, "pretraining_tp", 1) != 1}
    if any(unsupported.values()):
        found = [k for k, v in unsupported.items() if v]
        raise ValueError(f"LLaMA variant not supported by the GGUF exporter: {found} "
                         "(needs silu, no biases, default rope, pretraining_tp 1)")
    return llm


def _rope_parameters(cfg: Any) -> dict[str, Any]:
    """transformers 5 keeps rope settings in `rope_parameters`; 4.x in rope_theta / rope_scaling."""
    params = dict(getattr(cfg, "rope_parameters", None) or {})
    if "rope_theta" not in params:
        params["rope_theta"] = getattr(cfg, "rope_theta", 10000.0)
        params.setdefault("rope_type", (getattr(cfg, "rope_scaling", None) or {}).get("rope_type", "default"))
    return params


def _head_dim(cfg: Any) -> int:
    return getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads


def llama_metadata(cfg: Any) -> dict[str, Any]:
    """GGUF key -> value for the architecture (general.file_type added per file)."""
    a, hd = "llama", _head_dim(cfg)
    meta = {
        "general.architecture": a,
        "general.name": "emo-edge-llm",
        f"{a}.context_length": cfg.max_position_embeddings,
        f"{a}.embedding_length": cfg.hidden_size,
        f"{a}.block_count": cfg.num_hidden_layers,
        f"{a}.feed_forward_length": cfg.intermediate_size,
        f"{a}.attention.head_count": cfg.num_attention_heads,
        f"{a}.attention.head_count_kv": cfg.num_key_value_heads,
        f"{a}.attention.layer_norm_rms_epsilon": float(cfg.rms_norm_eps),
        f"{a}.rope.freq_base": float(_rope_parameters(cfg)["rope_theta"]),
        f"{a}.rope.dimension_count": hd,
        f"{a}.vocab_size": cfg.vocab_size,
    }
    if hd * cfg.num_attention_heads != cfg.hidden_size:  # llama.cpp assumes n_embd / n_head otherwise
        meta.update({f"{a}.attention.key_length": hd, f"{a}.attention.value_length": hd})
    return meta


def spm_metadata(tok: Any, n_rows: int) -> dict[str, Any]:
    """tokenizer.ggml.* from our SentencePiece model; padded with UNUSED tokens up to the embedding rows."""
    from sentencepiece import sentencepiece_model_pb2

    path = Path(tok.path) / SPM_FILE
    if getattr(tok, "_sp", None) is None or not path.is_file():
        raise ValueError(f"GGUF export needs our SentencePiece tokenizer ({SPM_FILE}); {tok.path} has a "
                         "Hugging Face tokenizer")
    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(path.read_bytes())
    kind = SPM_MODELS.get(proto.trainer_spec.model_type)
    if kind is None:
        raise ValueError(f"{path}: SentencePiece model type {proto.trainer_spec.model_type} not supported "
                         "(unigram or bpe)")
    pieces = list(proto.pieces)
    if len(pieces) > n_rows:
        raise ValueError(f"{path}: {len(pieces)} tokens but the embedding has only {n_rows} rows")
    extra = n_rows - len(pieces)  # rows no token uses: llama.cpp needs one token per row
    ns, t = proto.normalizer_spec, "tokenizer.ggml"
    meta = {
        f"{t}.model": kind,
        f"{t}.tokens": [p.piece for p in pieces] + [f"<unused{i}>" for i in range(extra)],
        f"{t}.scores": [float(p.score) for p in pieces] + [0.0] * extra,
        f"{t}.token_type": [_token_type(p.type) for p in pieces] + [_token_type(5)] * extra,
        f"{t}.bos_token_id": tok.bos_id, f"{t}.eos_token_id": tok.eos_id,
        f"{t}.unknown_token_id": proto.trainer_spec.unk_id, f"{t}.padding_token_id": tok.pad_id,
        f"{t}.add_bos_token": True, f"{t}.add_eos_token": False,
        f"{t}.add_space_prefix": bool(ns.add_dummy_prefix),
        f"{t}.remove_extra_whitespaces": bool(ns.remove_extra_whitespaces),
    }
    if kind == "t5" and ns.precompiled_charsmap:
        meta[f"{t}.precompiled_charsmap"] = bytes(ns.precompiled_charsmap)
    return meta


def _token_type(spm_type: int) -> int:
    import gguf

    return int(gguf.TokenType[SPM_TOKEN_TYPES[spm_type]])


def gguf_tensors(llm: nn.Module) -> dict[str, np.ndarray]:
    """GGUF name -> array (2-D weights float16, norms float32), q/k permuted; every parameter mapped."""
    cfg = llm.config
    state = {k: v.detach().to(torch.float32).cpu().numpy() for k, v in llm.state_dict().items()}
    tied = bool(getattr(cfg, "tie_word_embeddings", False))
    if tied:
        state.pop("lm_head.weight", None)
    table = tensor_name_table(cfg.num_hidden_layers, tied)
    unmapped, missing = sorted(set(state) - set(table)), sorted(set(table) - set(state))
    if unmapped or missing:
        raise GGUFExportError(f"name table and model disagree: unmapped {unmapped[:4]}, missing {missing[:4]}")
    out = {}
    for hf_name, gg_name in table.items():
        w = state[hf_name]
        if gg_name.endswith("attn_q.weight"):
            w = rope_interleave(w, cfg.num_attention_heads)
        elif gg_name.endswith("attn_k.weight"):
            w = rope_interleave(w, cfg.num_key_value_heads)
        out[gg_name] = np.ascontiguousarray(w.astype(np.float16 if w.ndim == 2 else np.float32))
    return out


def write_f16(path: Path, tensors: Mapping[str, np.ndarray], meta: Mapping[str, Any],
              tok_meta: Mapping[str, Any]) -> None:
    import gguf

    w = gguf.GGUFWriter(str(path), meta["general.architecture"])  # writes general.architecture itself
    a = meta["general.architecture"]
    w.add_name(meta["general.name"])
    w.add_file_type(QUANTS["f16"])
    w.add_context_length(meta[f"{a}.context_length"])
    w.add_embedding_length(meta[f"{a}.embedding_length"])
    w.add_block_count(meta[f"{a}.block_count"])
    w.add_feed_forward_length(meta[f"{a}.feed_forward_length"])
    w.add_head_count(meta[f"{a}.attention.head_count"])
    w.add_head_count_kv(meta[f"{a}.attention.head_count_kv"])
    w.add_layer_norm_rms_eps(meta[f"{a}.attention.layer_norm_rms_epsilon"])
    w.add_rope_freq_base(meta[f"{a}.rope.freq_base"])
    w.add_rope_dimension_count(meta[f"{a}.rope.dimension_count"])
    w.add_vocab_size(meta[f"{a}.vocab_size"])
    if f"{a}.attention.key_length" in meta:
        w.add_key_length(meta[f"{a}.attention.key_length"])
        w.add_value_length(meta[f"{a}.attention.value_length"])
    _add_tokenizer(w, tok_meta)
    for name, arr in tensors.items():
        w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def _add_tokenizer(w: Any, m: Mapping[str, Any]) -> None:
    t = "tokenizer.ggml"
    w.add_tokenizer_model(m[f"{t}.model"])
    w.add_token_list(m[f"{t}.tokens"])
    w.add_token_scores(m[f"{t}.scores"])
    w.add_token_types(m[f"{t}.token_type"])
    w.add_bos_token_id(m[f"{t}.bos_token_id"])
    w.add_eos_token_id(m[f"{t}.eos_token_id"])
    w.add_unk_token_id(m[f"{t}.unknown_token_id"])
    w.add_pad_token_id(m[f"{t}.padding_token_id"])
    w.add_add_bos_token(m[f"{t}.add_bos_token"])
    w.add_add_eos_token(m[f"{t}.add_eos_token"])
    w.add_add_space_prefix(m[f"{t}.add_space_prefix"])
    w.add_remove_extra_whitespaces(m[f"{t}.remove_extra_whitespaces"])
    if f"{t}.precompiled_charsmap" in m:
        w.add_precompiled_charsmap(m[f"{t}.precompiled_charsmap"])


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


def check_llm_parity(model: nn.Module, gguf_paths: Mapping[str, str | Path], clips: Any, max_new_tokens: int = 16,
                     threads: int = 2) -> dict[str, Any]:
    """llama.cpp answers and first-answer logits per GGUF vs PyTorch (see the module docstring)."""
    from emo_edge.labels import parse_label

    batch = parity_batch(clips)
    with torch.no_grad():
        p = model.perception(batch.image, batch.frames, batch.mel, batch.present)
        ref_answers = model.generate(batch, max_new_tokens=max_new_tokens, perception=p)
        ref_logits = torch_answer_logits(model, p["tokens"], p["token_mask"], batch.suffixes)
    mm, mask = p["tokens"].numpy(), p["token_mask"].numpy()
    n_ctx = _ctx_needed(model, batch.suffixes, max_new_tokens)
    ref_labels = [parse_label(a) for a in ref_answers]
    report: dict[str, Any] = {"metric": METRIC, "n": len(ref_answers), "max_new_tokens": max_new_tokens,
                              "torch": {"answers": ref_answers, "labels": ref_labels,
                                        "logit_range": float(ref_logits.max() - ref_logits.min()),
                                        "top2_margins": _top2_margins(ref_logits)},
                              "quants": {}}
    for quant, path in gguf_paths.items():
        answers, logits = [], []
        with LlamaCppLM(path, n_ctx=n_ctx, n_threads=threads) as lm:
            for i, suffix in enumerate(batch.suffixes):
                logits.append(lm.logits_for(mm[i], mask[i], suffix))
                answers.append(lm.generate(max_new_tokens))
        logits_a, labels = np.stack(logits), [parse_label(a) for a in answers]
        report["quants"][quant] = {
            "answers": answers, "labels": labels,
            "identical_answers": _share(answers, ref_answers), "same_label": _share(labels, ref_labels),
            "max_abs_logit_diff": float(np.abs(logits_a - ref_logits).max()),
            "top1_agreement": float(np.mean(logits_a.argmax(-1) == ref_logits.argmax(-1))),
        }
    return report


def _top2_margins(logits: np.ndarray) -> list[float]:
    """Per clip, top-1 minus top-2 logit at the first answer position: a flip needs an error about this big."""
    top2 = np.sort(logits, axis=-1)[:, -2:]
    return [round(float(x), 5) for x in top2[:, 1] - top2[:, 0]]


def _share(a: Sequence[Any], b: Sequence[Any]) -> float:
    return float(np.mean([x == y for x, y in zip(a, b, strict=True)]))


def _ctx_needed(model: nn.Module, suffixes: Sequence[str], max_new_tokens: int) -> int:
    longest = max(len(model.sequence_ids(s, None)[0]) for s in suffixes)
    return longest + max_new_tokens + 8


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


def torch_answer_logits(model: nn.Module, mm: torch.Tensor, mm_mask: torch.Tensor,
                        suffixes: Sequence[str]) -> np.ndarray:
    """PyTorch logits (B, V) at the first answer position, one unpadded sample at a time."""
    rows = []
    for i, suffix in enumerate(suffixes):
        inputs = model.assemble(mm[i:i + 1], mm_mask[i:i + 1], [suffix], None)
        inputs.pop("labels")
        rows.append(model.llm(**inputs).logits[0, -1].float().numpy())
    return np.stack(rows)


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def versions() -> dict[str, str]:
    from importlib.metadata import version

    return {"torch": torch.__version__, "gguf": version("gguf"), "llama_cpp_python": version("llama_cpp_python"),
            "numpy": np.__version__}


