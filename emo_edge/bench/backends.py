"""The backends `emo-edge bench` times, behind two small interfaces.

Perception (`graph_call`, `perceive`): PyTorch eager fp32 from the checkpoint (the reference), ONNX
Runtime on each execution provider present here with the bundle's fp32 and INT8 QDQ graphs, and
TensorRT engines when the bundle holds engines built on this device. LLM (`prefill`, `step`): the
merged transformers model (greedy, KV-cached, as `EmotionLLM.generate`) and llama.cpp on each GGUF
quantisation in the bundle. `available_backends` lists what exists and, for the rest, why not.

Only the PyTorch backends import torch; the others run as the torch-free runtime does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emo_edge.runtime.bundle import QUANTS, softmax
from emo_edge.runtime.llm import greedy_decode
from emo_edge.runtime.manifest import Manifest

TORCH = "torch-eager-fp32"
ORT_MADE = "onnxruntime-made"
ORT_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "trt": "TensorrtExecutionProvider"}


@dataclass(frozen=True)
class BackendSpec:
    """One backend to time: kind 'perception' or 'llm', a name, and what it needs to open."""

    kind: str
    name: str
    engine: str  # torch | onnxruntime | tensorrt | transformers | llama.cpp
    precision: str = "fp32"  # perception: fp32 | int8 | fp16; llm: fp32 | f16 | q8_0 | q4_k_m
    provider: str | None = None  # ONNX Runtime execution provider
    graph_precision: dict[str, str] = field(default_factory=dict)  # per graph, from the manifest


@dataclass(frozen=True)
class Unavailable:
    name: str
    reason: str


# ---------------------------------------------------------------------------------------------
# what exists here
# ---------------------------------------------------------------------------------------------


def _ort_providers() -> list[str]:
    try:
        import onnxruntime as ort
    except ImportError:
        return []
    return list(ort.get_available_providers())


def available_backends(manifest: Manifest, checkpoint: str | None) -> tuple[list[BackendSpec], list[Unavailable]]:
    """Every backend this machine and bundle can run, and the missing ones with the reason."""
    ok: list[BackendSpec] = []
    missing: list[Unavailable] = []
    if checkpoint is not None:
        ok.append(BackendSpec("perception", TORCH, "torch"))
    else:
        missing.append(Unavailable(TORCH, "no --checkpoint given (the PyTorch reference needs it)"))
    installed = _ort_providers()
    for short, provider in ORT_PROVIDERS.items():
        for prec, entry in manifest.perception.items():
            name = f"ort-{short}-{prec}"
            if provider in installed:
                ok.append(BackendSpec("perception", name, "onnxruntime", prec, provider, dict(entry.precision)))
            else:
                missing.append(Unavailable(name, f"not available here: {provider} is not in this onnxruntime build "
                                                 f"(installed: {', '.join(installed) or 'none'})"))
    missing += _tensorrt_status(manifest, ok)
    if checkpoint is not None:
        ok.append(BackendSpec("llm", "transformers-fp32", "transformers", "fp32"))
    else:
        missing.append(Unavailable("transformers-fp32", "no --checkpoint given"))
    for quant in manifest.llm.files:
        ok.append(BackendSpec("llm", f"llama.cpp-{quant}", "llama.cpp", quant))
    for quant in QUANTS:
        if quant not in manifest.llm.files:
            missing.append(Unavailable(f"llama.cpp-{quant}", f"the bundle holds no {quant} GGUF (export with "
                                                              f"--llm-quant {quant})"))
    return ok, missing


def _tensorrt_status(manifest: Manifest, ok: list[BackendSpec]) -> list[Unavailable]:
    from emo_edge.runtime.tensorrt import tensorrt_unavailable_reason

    reason = tensorrt_unavailable_reason()
    engines = manifest.engines
    names = [f"tensorrt-{p}" for p in ("fp16", "int8")]
    if reason is not None:
        return [Unavailable(n, f"not available here: {reason}") for n in names]
    if not engines:
        return [Unavailable(n, "the bundle holds no TensorRT engines (they are built on the device that runs them)")
                for n in names]
    precs = sorted({e.precision for e in engines})
    ok += [BackendSpec("perception", f"tensorrt-{p}", "tensorrt", p) for p in precs]
    return [Unavailable(n, "the bundle holds no engines at this precision") for n in names
            if n.split("-")[1] not in precs]


# ---------------------------------------------------------------------------------------------
# perception
# ---------------------------------------------------------------------------------------------


class TorchPerception:
    """The reference: eager PyTorch fp32, the checkpoint's perception, stage by stage at the export boundaries."""

    def __init__(self, checkpoint: str | Path, threads: int, model: Any = None):
        import torch

        from emo_edge.checkpoint import load_checkpoint

        torch.set_num_threads(threads)
        self.torch = torch
        self.model = model if model is not None else load_checkpoint(checkpoint, merge=True)
        self.p = self.model.perception

    def graph_call(self, graph: str, feeds: dict[str, np.ndarray]) -> Callable[[], Any]:
        from emo_edge.export.onnx_export import stage_outputs

        x = {k: self.torch.from_numpy(v) for k, v in feeds.items()}

        def call() -> Any:
            with self.torch.inference_mode():
                return stage_outputs(self.p, graph, x)
        return call

    def perceive(self, image: np.ndarray, frames: np.ndarray, mel: np.ndarray, present: np.ndarray) -> dict:
        """Runtime arrays -> tokens, token_mask, logits and, with an attribute head, attributes (the probabilities,
        as the exported fusion graph gives them) (numpy), converting as `to_batch` does."""
        t = self.torch
        with t.inference_mode():
            p = t.from_numpy(np.asarray(present, np.float32))
            # NHWC uint8 -> contiguous NCHW float, as the runtime's `preprocess`
            img = t.from_numpy(image).permute(0, 3, 1, 2).contiguous().float() / 255.0
            frm = t.from_numpy(frames).permute(0, 1, 4, 2, 3).contiguous().float() / 255.0
            img, frm = img * p[:, 0, None, None, None], frm * p[:, 1, None, None, None, None]
            out = self.p(img, frm, t.from_numpy(np.asarray(mel, np.float32)) * p[:, 2, None, None], p)
            got = {k: out[k].numpy() for k in ("tokens", "token_mask", "logits")}
            if "attributes" in out:
                got["attributes"] = t.sigmoid(out["attributes"]).numpy()
            return got

    def close(self) -> None:
        pass


class OrtBackend:
    """A bundle's perception graphs (fp32 or INT8 QDQ) on one ONNX Runtime execution provider."""

    def __init__(self, bundle: Path, manifest: Manifest, spec: BackendSpec, threads: int):
        from emo_edge.runtime.perception import OrtPerception

        providers = [spec.provider] + (["CPUExecutionProvider"] if spec.provider != "CPUExecutionProvider" else [])
        self.rt = OrtPerception(bundle / manifest.perception[spec.precision].dir, providers=providers,
                                threads=threads)

    def graph_call(self, graph: str, feeds: dict[str, np.ndarray]) -> Callable[[], Any]:
        return lambda: self.rt.run_graph(graph, feeds)

    def perceive(self, image: np.ndarray, frames: np.ndarray, mel: np.ndarray, present: np.ndarray) -> dict:
        return self.rt.run(image, frames, mel, present)

    def op_times(self, feeds: dict[str, np.ndarray], runs: int = 50) -> dict[str, Any]:
        """ONNX Runtime's profiler over `runs` merged-perception runs: kernel time per (graph, op type)."""
        return ort_op_times(self.rt, feeds, runs)

    def close(self) -> None:
        pass


def ort_op_times(rt: Any, feeds: dict[str, np.ndarray], runs: int = 50) -> dict[str, Any]:
    """Kernel microseconds per run by graph and op type, from ONNX Runtime's profiler on a second session of
    `rt`'s merged model (`OrtPerception.profiled_session`). `feeds`: the merged
    model's inputs (`preprocess` output). Shares are of the summed kernel time. Keys are `graph:op`, with graph
    ORT_MADE for nodes ONNX Runtime's optimiser created (their source graph is not recorded)."""
    import json
    import tempfile
    from collections import Counter

    with tempfile.TemporaryDirectory(prefix="emo-ort-prof-") as tmp:
        sess = rt.profiled_session(str(Path(tmp) / "prof"))
        for _ in range(runs):
            sess.run(None, feeds)
        events = json.loads(Path(sess.end_profiling()).read_text())
    us: Counter[str] = Counter()
    for e in events:
        if e.get("cat") == "Node" and str(e.get("name", "")).endswith("_kernel_time"):
            # nodes ONNX Runtime made itself (fusions such as BiasGelu, layout transposes) carry no graph name
            graph = e["name"].split("/", 1)[0] if "/" in e["name"] else ORT_MADE
            us[f"{graph}:{e['args'].get('op_name', '?')}"] += e["dur"]
    total = sum(us.values()) or 1
    return {"runs": runs, "kernel_us_per_run": total / runs,
            "by_graph_op": {k: {"us_per_run": v / runs, "share": v / total} for k, v in us.most_common()}}


class TrtBackend:
    """The bundle's TensorRT engines at one precision, through the runtime's own `TrtPerception` (the runner a
    bundle planned for TensorRT uses). Unverified here: no GPU."""

    def __init__(self, bundle: Path, manifest: Manifest, spec: BackendSpec):
        from emo_edge.runtime.bundle import check_engines
        from emo_edge.runtime.tensorrt import TrtPerception

        check_engines(bundle, manifest)
        engines = {e.graph: bundle / e.file for e in manifest.engines if e.precision == spec.precision}
        self.rt = TrtPerception(engines, manifest.io_spec)

    def graph_call(self, graph: str, feeds: dict[str, np.ndarray]) -> Callable[[], Any]:
        return lambda: self.rt.run_graph(graph, feeds)

    def perceive(self, image: np.ndarray, frames: np.ndarray, mel: np.ndarray, present: np.ndarray) -> dict:
        return self.rt.run(image, frames, mel, present)

    def close(self) -> None:
        self.rt.close()


def open_perception(spec: BackendSpec, bundle: Path, manifest: Manifest, checkpoint: str | None,
                    threads: int) -> Any:
    if spec.engine == "torch":
        assert checkpoint is not None
        return TorchPerception(checkpoint, threads)
    if spec.engine == "onnxruntime":
        return OrtBackend(bundle, manifest, spec, threads)
    if spec.engine == "tensorrt":
        return TrtBackend(bundle, manifest, spec)
    raise ValueError(f"unknown perception engine {spec.engine!r}")


def head_label(out: dict[str, np.ndarray], labels: list[str]) -> list[str]:
    """The fast path's answer: the head's label per clip."""
    return [labels[i] for i in softmax(out["logits"]).argmax(axis=-1)]


# ---------------------------------------------------------------------------------------------
# LLM
# ---------------------------------------------------------------------------------------------


class LlamaCppBackend:
    """llama.cpp on one GGUF: the runtime's own `LlamaCppLM`."""

    def __init__(self, path: Path, n_ctx: int, threads: int, lora: Path | None = None):
        from emo_edge.runtime.llm import LlamaCppLM

        self.lm = LlamaCppLM(path, n_ctx=n_ctx, n_threads=threads, lora=lora)
        self._prefix = self.lm.prefix_ids()

    def prefill(self, mm: np.ndarray, mask: np.ndarray, suffix_text: str) -> np.ndarray:
        return self.lm.prefill(self._prefix, mm, mask, self.lm.tokenize(suffix_text))

    def step(self, token: int) -> np.ndarray:
        return self.lm.feed_tokens([token])

    def is_eos(self, token: int) -> bool:
        return self.lm.is_eog(token)

    def piece(self, token: int) -> str:
        return self.lm.piece(token).decode("utf-8", "replace")

    def close(self) -> None:
        self.lm.close()


class TransformersBackend:
    """The merged Hugging Face model, greedy with a KV cache, batch 1, laid out by `EmotionLLM.assemble`."""

    def __init__(self, model: Any, threads: int):
        import torch
        from transformers import DynamicCache

        torch.set_num_threads(threads)
        self.torch, self.model, self._cache_cls = torch, model, DynamicCache
        self.embed = model.llm.get_input_embeddings()
        self._state: tuple[Any, Any, Any] | None = None

    def prefill(self, mm: np.ndarray, mask: np.ndarray, suffix_text: str) -> np.ndarray:
        """[BOS] prefix, the present multimodal rows, the suffix: masked rows are left out and take no position,
        as in `EmotionLLM.assemble` (where they are masked) and in llama.cpp (where they are not fed)."""
        t = self.torch
        with t.inference_mode():
            rows = t.from_numpy(np.asarray(mm, np.float32)[np.asarray(mask) > 0.5])
            pre = self.embed(t.tensor(self.model._prefix_ids))
            suf = self.embed(t.tensor(self.model.tok.encode(suffix_text), dtype=t.long))
            x = t.cat([pre, rows.to(pre.dtype), suf])[None]  # (1, n, H)
            n = x.shape[1]
            cache = self._cache_cls()
            out = self.model.llm(inputs_embeds=x, attention_mask=t.ones((1, n), dtype=t.long),
                                 position_ids=t.arange(n)[None], cache=cache, use_cache=True)
            self._state = (cache, t.ones((1, n), dtype=t.long), t.tensor([[n]]))
            return out.logits[0, -1].numpy()

    def step(self, token: int) -> np.ndarray:
        t = self.torch
        assert self._state is not None, "prefill first"
        cache, mask, pos = self._state
        with t.inference_mode():
            mask = t.cat([mask, t.ones((1, 1), dtype=mask.dtype)], dim=1)
            emb = self.embed(t.tensor([[token]]))
            out = self.model.llm(inputs_embeds=emb, attention_mask=mask, position_ids=pos, cache=cache, use_cache=True)
            self._state = (cache, mask, pos + 1)
            return out.logits[0, -1].numpy()

    def is_eos(self, token: int) -> bool:
        return token == self.model.tok.eos_id

    def piece(self, token: int) -> str:
        return self.model.tok.decode([token])

    def close(self) -> None:
        self._state = None


def greedy(lm: Any, logits: np.ndarray, max_new_tokens: int, stop_at_eos: bool = True) -> list[int]:
    """Greedy continuation after a prefill: token ids (EOS excluded), by the runtime's own decode loop."""
    return greedy_decode(logits, lm.step, lm.is_eos, max_new_tokens, stop_at_eog=stop_at_eos)
