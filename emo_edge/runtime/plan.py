"""The execution plan: what runs where, decided by the bundle's target profile and checked against this machine.

    perception  backend onnxruntime: the graph set (fp32 | int8 dir), providers in order with their
                options (TensorRT EP: fp16/int8 flags, workspace, profile shapes, engine + timing caches
                under the bundle's engines/ dir; one session per graph, since those are per graph), or
                one merged session on CUDA / CPU; backend tensorrt: the bundle's engines through
                `TrtPerception`. Precision per graph; intra-op threads.
    llm         the GGUF file of the target's quantisation; llama.cpp n_ctx, n_threads, n_gpu_layers.

`make_plan` is pure: it takes the machine's capabilities (`Machine.probe()` reads them) so every
profile's plan can be checked anywhere. Where the machine lacks what the plan needs it raises a
BundleError naming what is missing and how to get it, unless `fallback="cpu"`: then perception runs
on ONNX Runtime's CPU provider (fp16 graphs as their fp32 files, int8 QDQ graphs as they are) and the
LLM on the CPU, and the plan says `fallback: true` with the reasons. Nothing is downgraded silently.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emo_edge.runtime.io_spec import GRAPHS
from emo_edge.runtime.manifest import BundleError, Manifest
from emo_edge.runtime.profile import CPU_EP, CUDA_EP, TRT_EP
from emo_edge.runtime.tensorrt import ort_trt_provider_options

log = logging.getLogger("emo_edge.runtime")
FALLBACKS: tuple[str, ...] = ("cpu",)
ENGINE_DIR = "engines"  # in the bundle: native engines, and the TensorRT EP's engine and timing caches
ORT_TRT_CACHE = f"{ENGINE_DIR}/ort-trt"
GPU_HOW = ("no NVIDIA GPU is visible (no /dev/nvidia0 or Jetson /dev/nvhost-ctrl-gpu): run on the target "
           "device, or pass --fallback cpu")
ORT_HOW = {TRT_EP: "pip install onnxruntime-gpu built with TensorRT (on a Jetson: the JetPack onnxruntime-gpu "
                   "wheel from NVIDIA's Jetson AI Lab index)",
           CUDA_EP: "pip install onnxruntime-gpu (on a Jetson: the JetPack onnxruntime-gpu wheel)"}
LLAMA_HOW = ("llama-cpp-python here is built without GPU offload: reinstall it with CUDA, "
             "CMAKE_ARGS='-DGGML_CUDA=on' pip install --force-reinstall --no-binary llama-cpp-python llama-cpp-python")


@dataclass(frozen=True)
class Machine:
    """What this machine offers the plan."""

    ort_providers: tuple[str, ...]  # onnxruntime.get_available_providers()
    tensorrt: str | None  # None when the tensorrt bindings import and a GPU is visible, else why not
    gpu: bool  # an NVIDIA GPU is visible
    llama_gpu_offload: bool  # llama_cpp.llama_supports_gpu_offload()
    engine_meta: dict[str, Any] | None = None  # this device's `current_engine_meta()` where TensorRT runs

    @classmethod
    def probe(cls) -> Machine:
        from emo_edge.runtime.tensorrt import current_engine_meta, gpu_count, tensorrt_unavailable_reason

        try:
            import onnxruntime as ort

            providers = tuple(ort.get_available_providers())
        except ImportError:
            providers = ()
        try:
            import llama_cpp

            offload = bool(llama_cpp.llama_supports_gpu_offload())
        except ImportError:
            offload = False
        trt = tensorrt_unavailable_reason()
        return cls(providers, trt, gpu_count() > 0, offload, current_engine_meta() if trt is None else None)


@dataclass
class PerceptionPlan:
    backend: str  # onnxruntime | tensorrt
    precision: dict[str, str]  # graph -> fp32 | fp16 | int8, as it will run
    threads: int  # intra-op threads per session
    graphs_dir: str | None = None  # onnxruntime: bundle-relative dir of the .onnx files
    providers: list[str] = field(default_factory=list)  # onnxruntime: in order
    # onnxruntime: graph -> one options dict per provider (aligned with `providers`); one merged session when
    # every graph's options are empty, else a session per graph
    provider_options: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    engines: dict[str, str] = field(default_factory=dict)  # tensorrt: graph -> bundle-relative engine file

    @property
    def merged(self) -> bool:
        return not any(o for opts in self.provider_options.values() for o in opts)


@dataclass
class LLMPlan:
    file: str  # bundle-relative GGUF
    quant: str
    n_ctx: int
    n_threads: int  # 0: auto (`Bundle.llm` times 1..AUTO_THREADS and keeps the fastest)
    n_gpu_layers: int  # -1: all layers on the GPU, 0: CPU only
    lora: str | None = None  # bundle-relative GGUF LoRA adapter llama.cpp applies at load (form base+lora)


@dataclass
class ExecutionPlan:
    target: str
    perception: PerceptionPlan
    llm: LLMPlan
    fallback: bool = False
    reasons: list[str] = field(default_factory=list)  # why the fallback was needed (empty without one)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def describe(self) -> list[str]:
        """The plan as short lines for a console, a log and /diagnostics."""
        p, m = self.perception, self.llm
        prec = ", ".join(f"{g}={v}" for g, v in p.precision.items())
        if p.backend == "tensorrt":
            where = "TensorRT engines " + ", ".join(p.engines.values())
        else:
            where = f"ONNX Runtime {p.graphs_dir} on {' > '.join(p.providers)} " + (
                "(one merged session)" if p.merged else "(a session per graph)")
        lines = [f"target {self.target}" + (" - FALLBACK to cpu" if self.fallback else ""),
                 f"perception: {where}; {prec}; threads {p.threads}",
                 f"llm: llama.cpp {m.file} ({m.quant}), n_ctx {m.n_ctx}, "
                 f"n_threads {m.n_threads or 'auto (the fastest, timed at load)'}, "
                 f"n_gpu_layers {m.n_gpu_layers}" + (f", LoRA adapter {m.lora}" if m.lora else "")]
        for name, opts in p.provider_options.items():
            for prov, o in zip(p.providers, opts, strict=True):
                if o:
                    lines.append(f"  {name} {prov}: " + ", ".join(f"{k}={v}" for k, v in o.items()))
        lines += [f"fallback reason: {r}" for r in self.reasons]
        return lines


def make_plan(manifest: Manifest, root: Path, machine: Machine, precision: str | None = None,
              quant: str | None = None, threads: int | None = None, fallback: str | None = None) -> ExecutionPlan:
    """The plan for `manifest`'s target on `machine`; `precision` (fp32 | int8 graph set), `quant` and `threads`
    override the profile. BundleError naming what is missing, unless `fallback` is "cpu"."""
    if fallback is not None and fallback not in FALLBACKS:
        raise ValueError(f"fallback {fallback!r} is not valid; options: {', '.join(FALLBACKS)} (or none)")
    profile = manifest.target
    quant = quant or manifest.default_quant
    if quant not in manifest.llm.files:
        raise BundleError(f"bundle {root}: no {quant} LLM; it has {sorted(manifest.llm.files)}")
    perception, missing = _perception(manifest, root, machine, precision, threads)
    llm = LLMPlan(manifest.llm.files[quant], quant, profile.llm.n_ctx, threads or profile.llm.n_threads,
                  profile.llm.n_gpu_layers, manifest.llm.adapter if manifest.llm.form == "base+lora" else None)
    if llm.n_gpu_layers != 0 and not machine.llama_gpu_offload:
        missing.append(f"llama.cpp n_gpu_layers={llm.n_gpu_layers}: {LLAMA_HOW}")
    plan = ExecutionPlan(profile.name, perception, llm)
    if not missing:
        return plan
    if fallback is None:
        raise BundleError(f"bundle {root} (target {profile.name}) cannot run as planned on this machine: "
                          + "; ".join(missing) + ". Pass --fallback cpu (node parameter fallback:=cpu) to run it "
                          "on the CPU instead")
    cpu = _cpu_plan(manifest, root, precision, threads, llm, missing)
    log.warning("bundle %s: target %s falls back to the CPU: %s", root, profile.name, "; ".join(missing))
    return cpu


def _entry(manifest: Manifest, root: Path, precision: str | None) -> str:
    name = precision or manifest.perception_entry
    if name not in manifest.perception:
        raise BundleError(f"bundle {root}: no {name} perception graphs; it has {sorted(manifest.perception)}")
    return name


def _perception(manifest: Manifest, root: Path, machine: Machine, precision: str | None,
                threads: int | None) -> tuple[PerceptionPlan, list[str]]:
    """The profile's perception route and what this machine lacks for it."""
    p = manifest.target.perception
    entry = _entry(manifest, root, precision)
    want = dict(p.precision) if precision is None else dict(manifest.perception[entry].precision)
    threads = threads or p.threads
    if p.backend == "tensorrt" and machine.tensorrt is None:
        engines = {e.graph: e.file for e in manifest.engines if e.precision == want[e.graph]}
        missing = [f"no TensorRT engine for {g} at {want[g]} in the bundle: build them on this device with "
                   f"`emo-edge engines build {root}`" for g in GRAPHS if g not in engines]
        return PerceptionPlan("tensorrt", want, threads, engines=engines), missing
    missing = [] if p.backend == "onnxruntime" or TRT_EP in machine.ort_providers else [
        f"perception backend tensorrt: {machine.tensorrt}"]
    providers = list(p.providers)
    missing += [f"{name}: not in this onnxruntime build (installed: {', '.join(machine.ort_providers) or 'none'}); "
                f"{ORT_HOW[name]}" for name in providers if name != CPU_EP and name not in machine.ort_providers]
    if any(name != CPU_EP for name in providers) and not machine.gpu:
        missing.append(f"{' and '.join(n for n in providers if n != CPU_EP)}: {GPU_HOW}")
    options = _provider_options(manifest, root, providers)
    return PerceptionPlan("onnxruntime", want, threads, manifest.perception[entry].dir, providers, options), missing


def _provider_options(manifest: Manifest, root: Path, providers: list[str]) -> dict[str, list[dict[str, Any]]]:
    """graph -> options per provider: the TensorRT EP's from the profile (`ort_trt_provider_options`), with its
    engine and timing caches under the bundle's engines/ directory; the other providers take none."""
    if TRT_EP not in providers:
        return {g: [{} for _ in providers] for g in GRAPHS}
    cache = root / ORT_TRT_CACHE
    out = {}
    for g in GRAPHS:
        listed = ort_trt_provider_options(manifest.target, cache, g, manifest.io_spec)
        out[g] = [item[1] if isinstance(item, tuple) else {} for item in listed]
    return out


def _cpu_plan(manifest: Manifest, root: Path, precision: str | None, threads: int | None, llm: LLMPlan,
              reasons: list[str]) -> ExecutionPlan:
    """The same bundle on ONNX Runtime's CPU provider and llama.cpp on the CPU (threads capped at the cores here):
    int8 graphs run their QDQ files, fp16 ones the fp32 files (the CPU has no fp16 path)."""
    stored = manifest.perception[_entry(manifest, root, precision)]
    perception = PerceptionPlan("onnxruntime", dict(stored.precision), threads or manifest.target.perception.threads,
                                stored.dir, [CPU_EP], {g: [{}] for g in GRAPHS})
    # the layers the profile meant for the GPU now need this CPU's cores, and no more threads than it has
    cpu_llm = dataclasses.replace(llm, n_gpu_layers=0, n_threads=min(llm.n_threads, os.cpu_count() or 1))
    return ExecutionPlan(manifest.target.name, perception, cpu_llm, fallback=True, reasons=list(reasons))
