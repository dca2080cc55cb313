"""The language model on llama.cpp (llama-cpp-python's low-level API): numpy in, text out, never torch.

The prompt is fed exactly as `emo_edge.model.mllm.EmotionLLM` lays it out:

    [BOS] tokenize(PREFIX)  <multimodal tokens>  tokenize(suffix)  -> greedy answer until EOG

Text goes through a token batch, the multimodal tokens (float32 rows of width n_embd from the
perception graphs) through a separate `llama_batch.embd` batch, with positions continuing across
the three spans. A multimodal token whose mask is 0 is not fed at all and takes no position, which
is what the PyTorch model does by masking it out of attention and counting positions over
attended tokens only.

Backbone quirks live in one table, `emo_edge.llm_families`; `embed_scale` applies the one the runtime
needs: some backbones scale the input embeddings by sqrt(n_embd) on the token path only, so a text
token's embedding row fed through `embd` must be pre-multiplied (in float32) to stand for that token.

A bundle's LLM comes in one of two forms (`llm.form`): a merged GGUF, or the base model's GGUF plus a
GGUF LoRA adapter that llama.cpp applies at load (`lora=`; `llama_adapter_lora_init` +
`llama_set_adapters_lora`, scale alpha / r as the adapter file records).
"""

from __future__ import annotations

import codecs
import ctypes
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emo_edge.llm_families import token_embd_scale
from emo_edge.prompts import PREFIX

# llama.cpp's CPU backend runs on OpenMP threads, which by default spin after each decode call, waiting for
# the next. In the live runtime the next call waits on purpose (between tokens while the fast path runs, or
# for the next request): spinning then takes the cores from the perception and the rest of the robot. Set
# before libgomp loads (it reads the variable once); an OMP_WAIT_POLICY already set is left as it is.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

try:  # optional: the core package installs without llama-cpp-python
    import llama_cpp as _llama_cpp
except ImportError as e:  # pragma: no cover - depends on the environment
    _llama_cpp, _LLAMA_IMPORT_ERROR = None, e

PREFILL_CHUNK = 32  # prompt positions per llama_decode call when a gate may pause the prompt (a pause waits one)
UNK_SURFACE = " \u2047 "  # what SentencePiece's decode writes for the unknown token
# attention mode -> (KV-cache ggml_type, flash_attn_type): llama.cpp's default is an F16 KV cache and flash
# attention where the backend has it (on the CPU it rounds q to F16); "exact" keeps both in F32, for parity checks
ATTENTION = {"default": (1, -1), "exact": (0, 0)}  # GGML_TYPE_F16 / F32; LLAMA_FLASH_ATTN_TYPE_AUTO / DISABLED
LOG_LINES = 64  # llama.cpp log lines kept to explain a failure


def embed_scale(arch: str, n_embd: int) -> np.float32:
    """The float32 factor by which a token-embedding row is multiplied to be fed through `embd` as that token."""
    quirk = token_embd_scale(arch)
    if quirk is None:
        return np.float32(1.0)
    assert quirk == "sqrt_n_embd", quirk
    return np.sqrt(np.float32(n_embd), dtype=np.float32)


def require_llama_cpp() -> Any:
    if _llama_cpp is None:
        raise ImportError("llama-cpp-python is not installed: pip install llama-cpp-python "
                          "(CMAKE_ARGS='-DGGML_CUDA=on' on a Jetson)") from _LLAMA_IMPORT_ERROR
    return _llama_cpp


class DecodeStopped(Exception):
    """A gate stopped the prompt being fed (the request was withdrawn)."""


class _LlamaLog:
    """Routes llama.cpp's log into a short ring buffer: quiet by default, quoted when something fails."""

    def __init__(self) -> None:
        self.lines: deque[str] = deque(maxlen=LOG_LINES)
        self._callback: Any = None  # the ctypes callback must outlive every llama.cpp call

    def install(self, lib: Any) -> None:
        if self._callback is None:
            self._callback = lib.llama_log_callback(self._on_log)
            lib.llama_log_set(self._callback, ctypes.c_void_p())
            lib.llama_backend_init()

    def _on_log(self, level: int, text: bytes, user_data: Any) -> None:
        line = text.decode("utf-8", "replace").rstrip("\n") if text else ""
        if line.strip():
            self.lines.append(line)

    def mark(self) -> int:
        self.lines.clear()
        return 0

    def cause(self, n: int = 6) -> str:
        """The last log lines that look like errors, else the last lines at all."""
        errors = [x for x in self.lines if any(w in x.lower() for w in ("error", "failed", "invalid", "unknown"))]
        picked = (errors or list(self.lines))[-n:]
        return " | ".join(x.strip() for x in picked) or "llama.cpp logged nothing"


LLAMA_LOG = _LlamaLog()


def llama_lib() -> Any:
    """llama_cpp with its log routed into `LLAMA_LOG` (and the backend initialised) once per process."""
    lib = require_llama_cpp()
    LLAMA_LOG.install(lib)
    return lib


class LlamaCppLM:
    """A GGUF causal LM on llama.cpp, prompted with text and multimodal embeddings.

    gguf_path: the model file (`llm-<quant>.gguf` from `emo_edge.export.gguf_export`, or any GGUF).
    n_ctx: context length in tokens (prompt + answer); n_batch: most tokens per llama_decode call.
    n_threads: CPU threads; n_gpu_layers: layers offloaded to a GPU build (0 on CPU).
    lora: a GGUF LoRA adapter for this model, applied at load with `lora_scale` times its alpha / r.
    attention: "default" (F16 KV cache, flash attention) or "exact" (both F32: what parity checks of an F32 file use).
    """

    def __init__(self, gguf_path: str | Path, n_ctx: int = 512, n_threads: int = 2, n_batch: int = 512,
                 n_gpu_layers: int = 0, lora: str | Path | None = None, lora_scale: float = 1.0,
                 attention: str = "default"):
        self.path = Path(gguf_path)
        self.lora = None if lora is None else Path(lora)
        for p in (self.path, self.lora):
            if p is not None and not p.is_file():
                raise FileNotFoundError(f"{p}: no such GGUF file")
        if attention not in ATTENTION:
            raise ValueError(f"attention must be one of {', '.join(ATTENTION)}, got {attention!r}")
        if n_batch < 1 or n_ctx < 1:
            raise ValueError(f"n_ctx and n_batch must be >= 1, got n_ctx={n_ctx}, n_batch={n_batch}")
        self._lib = lib = llama_lib()
        self._model = self._ctx = self._tok_batch = self._embd_batch = None
        self._load(n_ctx, n_threads, n_batch, n_gpu_layers, *ATTENTION[attention])
        if self.lora is not None:
            self._apply_lora(lora_scale)
        self.vocab = lib.llama_model_get_vocab(self._model)
        self.n_embd: int = lib.llama_model_n_embd(self._model)
        self.n_vocab: int = lib.llama_vocab_n_tokens(self.vocab)
        self.n_ctx, self.n_batch = n_ctx, n_batch
        self.arch = self.meta("general.architecture") or "unknown"
        self.bos_id: int | None = self._special(lib.llama_vocab_bos(self.vocab))
        self.eos_id: int | None = self._special(lib.llama_vocab_eos(self.vocab))
        self.unk_id: int | None = self._special_by_key("tokenizer.ggml.unknown_token_id")
        self.add_bos: bool = bool(lib.llama_vocab_get_add_bos(self.vocab)) and self.bos_id is not None
        # two batches, allocated once: token ids (batch.embd NULL) and float rows (batch.token NULL)
        self._tok_batch = lib.llama_batch_init(n_batch, 0, 1)
        self._embd_batch = lib.llama_batch_init(n_batch, self.n_embd, 1)
        self._gate: Callable[[], bool] | None = None  # asked between prompt chunks while `answer` feeds one
        self.n_past = 0  # positions used so far in the current prompt
        self._logits: np.ndarray | None = None  # (n_vocab,) after the last fed position

    def _load(self, n_ctx: int, n_threads: int, n_batch: int, n_gpu_layers: int, kv_type: int, flash: int) -> None:
        lib = self._lib
        LLAMA_LOG.mark()
        mp = lib.llama_model_default_params()
        mp.n_gpu_layers = n_gpu_layers
        self._model = lib.llama_model_load_from_file(str(self.path).encode(), mp)
        if not self._model:
            raise RuntimeError(f"llama.cpp could not load {self.path}: {LLAMA_LOG.cause()}")
        cp = lib.llama_context_default_params()
        cp.n_ctx, cp.n_batch, cp.n_ubatch = n_ctx, n_batch, n_batch
        cp.n_threads, cp.n_threads_batch = n_threads, n_threads
        cp.type_k = cp.type_v = kv_type
        cp.flash_attn_type = flash
        self._ctx = lib.llama_init_from_model(self._model, cp)
        if not self._ctx:
            self.close()
            raise RuntimeError(f"llama.cpp could not create a context for {self.path} (n_ctx={n_ctx}): "
                               f"{LLAMA_LOG.cause()}")

    def _apply_lora(self, scale: float) -> None:
        """Load the adapter (owned by the model from then on: freed with it) and set it on the context."""
        lib = self._lib
        LLAMA_LOG.mark()
        adapter = lib.llama_adapter_lora_init(self._model, str(self.lora).encode())
        if not adapter:
            self.close()
            raise RuntimeError(f"llama.cpp could not load the LoRA adapter {self.lora} for {self.path}: "
                               f"{LLAMA_LOG.cause()}")
        adapters = (lib.llama_adapter_lora_p_ctypes * 1)(adapter)
        rc = lib.llama_set_adapters_lora(self._ctx, adapters, 1, (ctypes.c_float * 1)(scale))
        if rc != 0:
            self.close()
            raise RuntimeError(f"llama_set_adapters_lora returned {rc} for {self.lora}: {LLAMA_LOG.cause()}")

    # -- lifetime ---------------------------------------------------------------------------
    def close(self) -> None:
        """Free the batches, the context and the model (idempotent)."""
        lib = getattr(self, "_lib", None)
        if lib is None:
            return
        for name in ("_tok_batch", "_embd_batch"):
            if getattr(self, name, None) is not None:
                lib.llama_batch_free(getattr(self, name))
                setattr(self, name, None)
        if getattr(self, "_ctx", None):
            lib.llama_free(self._ctx)
        if getattr(self, "_model", None):
            lib.llama_model_free(self._model)
        self._ctx = self._model = None

    def __enter__(self) -> LlamaCppLM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown may have torn the library down already
            pass

    def set_threads(self, n_threads: int) -> None:
        """CPU threads for the next decode calls (generation and prompt alike)."""
        if n_threads < 1:
            raise ValueError(f"n_threads must be >= 1, got {n_threads}")
        self._lib.llama_set_n_threads(self._ctx, n_threads, n_threads)

    @property
    def threads(self) -> int:
        """The CPU threads decode calls use now."""
        return int(self._lib.llama_n_threads(self._ctx))

    def fastest_threads(self, candidates: Sequence[int], tokens: int = 16, rounds: int = 3) -> dict[str, Any]:
        """Time single-token decodes at each thread count of `candidates` (interleaved over `rounds`, `tokens` per
        count and round, after a short prompt), keep the fastest, and return {"chosen", "ms_per_token": {count:
        median ms}}. llama.cpp's threads meet at every operation, so a small model on a few cores can decode
        fastest on one (the default's Q4_K_M LLM on a 2-core EPYC: 0.19 ms a token on 1 thread, 2.45 ms on 2)."""
        counts = sorted({int(c) for c in candidates})
        if not counts or counts[0] < 1:
            raise ValueError(f"thread counts must be >= 1, got {list(candidates)}")
        prompt = [self.bos_id] if self.bos_id is not None else self.tokenize("a")
        times: dict[int, list[float]] = {c: [] for c in counts}
        for _ in range(rounds):
            for c in counts:
                self.set_threads(c)
                self.reset()
                self.feed_tokens(prompt)
                for i in range(tokens):
                    t = time.perf_counter()
                    self.feed_tokens([(prompt[0] + 1 + i) % self.n_vocab])
                    times[c].append((time.perf_counter() - t) * 1e3)
        self.reset()
        ms = {c: float(np.median(v)) for c, v in times.items()}
        chosen = min(ms, key=ms.__getitem__)
        self.set_threads(chosen)
        return {"chosen": chosen, "ms_per_token": ms}

    # -- vocabulary ---------------------------------------------------------------------------
    def meta(self, key: str) -> str | None:
        """A GGUF metadata value as a string (None when the key is absent)."""
        buf = ctypes.create_string_buffer(256)
        n = self._lib.llama_model_meta_val_str(self._model, key.encode(), buf, len(buf))
        if n < 0:
            return None
        if n >= len(buf):
            buf = ctypes.create_string_buffer(n + 1)
            self._lib.llama_model_meta_val_str(self._model, key.encode(), buf, len(buf))
        return buf.value.decode("utf-8", "replace")

    def _special(self, token: int) -> int | None:
        return None if token < 0 else int(token)

    def _special_by_key(self, key: str) -> int | None:
        value = self.meta(key)
        return int(value) if value is not None and int(value) >= 0 else None

    def tokenize(self, text: str, special: bool = False) -> list[int]:
        """Token ids of `text` without BOS/EOS (the model's own tokenizer, as stored in the GGUF); `special`:
        special-token text (a chat template's turn markers) becomes those tokens."""
        data = text.encode("utf-8")
        cap = len(data) + 8
        for _ in range(2):
            buf = (self._lib.llama_token * cap)()
            n = self._lib.llama_tokenize(self.vocab, data, len(data), buf, cap, False, special)
            if n >= 0:
                return list(buf[:n])
            cap = -n  # too small: llama.cpp says how many it needs
        raise RuntimeError(f"llama_tokenize failed for {text[:40]!r}")

    def piece(self, token: int) -> bytes:
        """The bytes a token stands for (control tokens give b''; unknown gives SentencePiece's surface)."""
        if token == self.unk_id:
            return UNK_SURFACE.encode()
        buf = ctypes.create_string_buffer(64)
        n = self._lib.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self._lib.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, False)
        return buf.raw[:n]

    def is_eog(self, token: int) -> bool:
        return bool(self._lib.llama_vocab_is_eog(self.vocab, token))

    def embd_from_token_rows(self, rows: np.ndarray) -> np.ndarray:
        """Token-embedding rows (n, n_embd) -> what to feed through `embd` to stand for those tokens."""
        return np.asarray(rows, dtype=np.float32) * embed_scale(self.arch, self.n_embd)

    # -- feeding ----------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget the current prompt (clears the KV memory)."""
        self._lib.llama_memory_clear(self._lib.llama_get_memory(self._ctx), True)
        self.n_past, self._logits = 0, None

    def feed_tokens(self, ids: Sequence[int], all_logits: bool = False) -> np.ndarray | None:
        """Append token ids at the next positions; returns the logits after the last one (n_vocab,),
        or at each of them (n, n_vocab) with `all_logits` (None when nothing was fed before)."""
        ids = [int(t) for t in ids]
        bad = [t for t in ids if not 0 <= t < self.n_vocab]
        if bad:
            raise ValueError(f"token ids {bad[:5]} outside the vocabulary of {self.n_vocab}")
        return self._feed(len(ids), all_logits, self._tok_batch, lambda b, s, n: _fill_tokens(b, ids[s:s + n]))

    def feed_embeddings(self, rows: np.ndarray, all_logits: bool = False) -> np.ndarray | None:
        """Append float rows (n, n_embd) at the next positions, fed as they are (see `embd_from_token_rows`);
        returns logits as `feed_tokens` does."""
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        if rows.ndim != 2 or rows.shape[1] != self.n_embd:
            raise ValueError(f"embeddings must be (n, {self.n_embd}) for this model, got {rows.shape}")
        return self._feed(len(rows), all_logits, self._embd_batch, lambda b, s, n: _fill_embd(b, rows[s:s + n]))

    def _feed(self, n_total: int, all_logits: bool, batch: Any, fill: Callable[[Any, int, int], None]) -> Any:
        if n_total == 0:
            if all_logits:
                return np.zeros((0, self.n_vocab), np.float32)
            return None if self._logits is None else self._logits.copy()
        if self.n_past + n_total > self.n_ctx:
            raise ValueError(f"prompt needs {self.n_past + n_total} positions, more than n_ctx={self.n_ctx}")
        out = []
        step = self.n_batch if self._gate is None else min(self.n_batch, PREFILL_CHUNK)
        for s in range(0, n_total, step):
            if self._gate is not None and not self._gate():
                raise DecodeStopped
            n = min(step, n_total - s)
            fill(batch, s, n)
            _fill_meta(batch, n, self.n_past, all_logits)
            self._decode(batch)
            self.n_past += n
            out += [self._logits_ith(i) for i in range(n)] if all_logits else []
        self._logits = out[-1] if all_logits else self._logits_ith(-1)
        return np.stack(out) if all_logits else self._logits.copy()

    def _decode(self, batch: Any) -> None:
        LLAMA_LOG.mark()
        rc = self._lib.llama_decode(self._ctx, batch)
        if rc != 0:
            why = "no KV slot (n_ctx too small?)" if rc == 1 else LLAMA_LOG.cause()
            raise RuntimeError(f"llama_decode returned {rc} at position {self.n_past}: {why}")

    def _logits_ith(self, i: int) -> np.ndarray:
        ptr = self._lib.llama_get_logits_ith(self._ctx, i)
        if not ptr:
            raise RuntimeError(f"llama.cpp has no logits for output {i}")
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy()

    # -- prompting ------------------------------------------------------------------------------
    def prefill(self, prefix_ids: Sequence[int], mm_embeds: np.ndarray, mm_mask: np.ndarray,
                suffix_ids: Sequence[int], all_logits: bool = False) -> np.ndarray:
        """A fresh prompt: prefix ids, the present multimodal tokens, suffix ids (positions continuing).

        mm_embeds (N, n_embd) float32 and mm_mask (N,) from the perception graphs; a token whose mask
        is 0 is skipped and takes no position. Returns the logits (n_vocab,) after the last position,
        or (n_fed, n_vocab) at every fed position with `all_logits`.
        """
        mm = np.asarray(mm_embeds, dtype=np.float32)
        mask = np.asarray(mm_mask)
        if mm.ndim != 2 or mask.shape != (mm.shape[0],):
            raise ValueError(f"mm_embeds must be (N, n_embd) and mm_mask (N,), got {mm.shape} and {mask.shape}")
        self.reset()
        parts = [self.feed_tokens(prefix_ids, all_logits), self.feed_embeddings(mm[mask > 0.5], all_logits),
                 self.feed_tokens(suffix_ids, all_logits)]
        if self._logits is None:
            raise ValueError("empty prompt: nothing to feed")
        return np.concatenate(parts) if all_logits else self._logits.copy()

    def prefix_ids(self, prefix_text: str = PREFIX, chat: tuple[str, str] | None = None) -> list[int]:
        """[BOS] (when the GGUF says add_bos) + [the chat template's text before the user turn] + the prefix's
        tokens: the start of every prompt."""
        before = self.tokenize(chat[0], special=True) if chat else []
        return ([self.bos_id] if self.add_bos else []) + before + self.tokenize(prefix_text)

    def suffix_ids(self, suffix_text: str, chat: tuple[str, str] | None = None) -> list[int]:
        """The suffix's tokens + [the chat template's text after the user turn]: the end of every prompt."""
        return self.tokenize(suffix_text) + (self.tokenize(chat[1], special=True) if chat else [])

    def generate(self, max_new_tokens: int = 64, on_token: Callable[[str], None] | None = None,
                 gate: Callable[[], bool] | None = None) -> str:
        """Greedy continuation of the prefilled prompt until an end-of-generation token or the limit.

        Each decoded piece of text is passed to `on_token` as it is produced (leading spaces of the
        answer dropped); returns the answer stripped, as `EmotionLLM.generate` does. `gate` is called
        before each token is decoded: it may block (to leave the CPU to other work for a moment) and
        returns False to stop here (a cancelled request: the text so far is returned).
        """
        if self._logits is None:
            raise RuntimeError("generate() needs a prompt: call prefill() or answer() first")
        utf8 = codecs.getincrementaldecoder("utf-8")("replace")
        text = ""

        def emit(token: int) -> None:
            nonlocal text
            piece = utf8.decode(self.piece(token))
            if on_token is not None and (text + piece).strip():
                on_token(piece if text.strip() else piece.lstrip())
            text += piece

        greedy_decode(self._logits, lambda t: self.feed_tokens([t]), self.is_eog, max_new_tokens, on_token=emit,
                      gate=gate)
        return (text + utf8.decode(b"", final=True)).strip()

    def answer(self, mm_embeds: np.ndarray, mm_mask: np.ndarray, suffix_text: str, max_new_tokens: int = 64,
               on_token: Callable[[str], None] | None = None, prefix_text: str = PREFIX,
               gate: Callable[[], bool] | None = None, chat: tuple[str, str] | None = None) -> str:
        """The whole prompt from text and perception tokens (wrapped in `chat`, the chat template's text before
        and after the user turn, when given), then the greedy answer. `gate` (see `generate`) is
        also asked before the prompt and between its chunks, so a pause waits for at most PREFILL_CHUNK
        positions and a stop ends the answer empty."""
        if gate is not None and not gate():
            return ""
        self._gate = gate  # the prompt goes in chunks of PREFILL_CHUNK with the gate asked before each
        try:
            self.prefill(self.prefix_ids(prefix_text, chat), mm_embeds, mm_mask, self.suffix_ids(suffix_text, chat))
        except DecodeStopped:
            return ""
        finally:
            self._gate = None
        return self.generate(max_new_tokens, on_token, gate)

    def logits_for(self, mm_embeds: np.ndarray, mm_mask: np.ndarray, suffix_text: str, prefix_text: str = PREFIX,
                   all_logits: bool = False, chat: tuple[str, str] | None = None) -> np.ndarray:
        """Logits at the first answer position (n_vocab,), or at every fed position, for parity checks."""
        return self.prefill(self.prefix_ids(prefix_text, chat), mm_embeds, mm_mask, self.suffix_ids(suffix_text, chat),
                            all_logits=all_logits)


def greedy_decode(logits: np.ndarray, step: Callable[[int], np.ndarray], is_eog: Callable[[int], bool],
                  max_new_tokens: int, on_token: Callable[[int], None] | None = None,
                  stop_at_eog: bool = True, gate: Callable[[], bool] | None = None) -> list[int]:
    """The greedy decode loop after a prefill: argmax of `logits` (n_vocab,), hand the token to `on_token`, feed it
    back with `step` (-> the next logits), until an end-of-generation token (left out) or `max_new_tokens`.
    The last token is not fed: nothing reads its logits. `gate` is asked before each token: it may block, and
    False stops the loop there. The runtime answers and the bench times with this loop."""
    out: list[int] = []
    for k in range(max_new_tokens):
        if gate is not None and not gate():
            break
        token = int(np.argmax(logits))
        if stop_at_eog and is_eog(token):
            break
        out.append(token)
        if on_token is not None:
            on_token(token)
        if k + 1 < max_new_tokens:
            logits = step(token)
    return out


def _fill_tokens(batch: Any, ids: Sequence[int]) -> None:
    for i, t in enumerate(ids):
        batch.token[i] = t


def _fill_embd(batch: Any, rows: np.ndarray) -> None:
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    ctypes.memmove(batch.embd, rows.ctypes.data, rows.nbytes)


def _fill_meta(batch: Any, n: int, pos0: int, all_logits: bool) -> None:
    """Positions pos0.., one sequence (0), logits for every row or only for the last."""
    batch.n_tokens = n
    for i in range(n):
        batch.pos[i] = pos0 + i
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = 0
        batch.logits[i] = all_logits or i == n - 1
