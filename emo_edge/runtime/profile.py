"""Export target profiles as data: what a bundle's target asks of the machine that runs it.

A profile (a YAML file, see `emo_edge.export.profiles.load_profile`) records, per target:

    perception  backend (onnxruntime | tensorrt), execution providers in order, threads, a
                precision per graph of `io_spec.GRAPHS` (fp32 | fp16 | int8) and the int8 QDQ layout
    tensorrt    engine build settings: workspace and the batch range of the optimisation profile
    llm         GGUF quantization (f16 | q8_0 | q4_k_m) and llama.cpp's n_ctx, n_threads, n_gpu_layers
    runtime     how the live stream shares the CPU between the fast path and the LLM (llm_pause_for_fast,
                llm_threads)
    tokens      optional *recommended* LLM token budget; the budget is fixed by training, so a
                profile can only confirm the checkpoint's (`check_model` rejects any other)

int8 means the explicit-quantization (QDQ) graphs of `emo_edge.export.quantize`; fp16 exists only
on a TensorRT path (TensorRT builds it from the fp32 graph). The exporter records the profile in the
bundle's manifest and the runtime makes its execution plan from it, so the dataclasses live here,
torch-free, with the runtime.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from emo_edge.config import STREAMS, ModelConfig, TokenBudget, from_dict
from emo_edge.runtime.io_spec import GRAPHS

PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")
BACKENDS: tuple[str, ...] = ("onnxruntime", "tensorrt")
TRT_EP, CUDA_EP, CPU_EP = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"
PROVIDERS: tuple[str, ...] = (TRT_EP, CUDA_EP, CPU_EP)
LLM_QUANTS: tuple[str, ...] = ("f16", "q8_0", "q4_k_m")
INT8_LAYOUTS: tuple[str, ...] = ("auto", "tensorrt", "cpu", "transformer")


def _one_of(where: str, value: Any, options: tuple[str, ...]) -> None:
    if value not in options:
        raise ValueError(f"{where}: {value!r} is not valid; options: {', '.join(options)}")


def _at_least(where: str, value: Any, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"{where}: must be an integer >= {low}, got {value!r}")


@dataclass
class PerceptionProfile:
    """How the four perception graphs run on the target."""

    backend: str = "onnxruntime"  # onnxruntime: the .onnx files; tensorrt: engines built on the device
    # ONNX Runtime providers, most preferred first; with backend tensorrt they are the ORT route
    # (TensorRT EP, same precisions) used where the native tensorrt bindings are absent
    providers: list[str] = field(default_factory=lambda: [CPU_EP])
    threads: int = 2  # intra-op threads per ONNX Runtime session
    precision: dict[str, str] = field(default_factory=lambda: dict.fromkeys(GRAPHS, "fp32"))
    # the QDQ layout of the int8 graphs (`emo_edge.export.quantize`): tensorrt | cpu | transformer | auto (tensorrt
    # when the profile runs TensorRT, else cpu, whose integer kernels ONNX Runtime's CPU provider fuses; transformer:
    # CPU kernels for the weight MatMuls of transformer encoders)
    int8_layout: str = "auto"

    def __post_init__(self) -> None:
        _one_of("perception.backend", self.backend, BACKENDS)
        _one_of("perception.int8_layout", self.int8_layout, INT8_LAYOUTS)
        _at_least("perception.threads", self.threads, 1)
        if not self.providers or len(set(self.providers)) != len(self.providers):
            raise ValueError(f"perception.providers: need a non-empty list without repeats, got {self.providers}")
        for p in self.providers:
            _one_of("perception.providers", p, PROVIDERS)
        if not isinstance(self.precision, dict) or sorted(self.precision) != sorted(GRAPHS):
            got = sorted(self.precision) if isinstance(self.precision, dict) else self.precision
            raise ValueError(f"perception.precision: need one entry per graph {list(GRAPHS)}, got {got}")
        for graph in GRAPHS:  # run order, whatever the file's key order
            _one_of(f"perception.precision.{graph}", self.precision[graph], PRECISIONS)
        fp16 = [g for g, v in self.precision.items() if v == "fp16"]
        if fp16 and not self.uses_tensorrt:
            raise ValueError(f"perception.precision: fp16 for {fp16} needs TensorRT (backend: tensorrt, or "
                             f"{TRT_EP} in perception.providers); ONNX Runtime's CPU/CUDA providers run fp32 or int8")

    @property
    def uses_tensorrt(self) -> bool:
        return self.backend == "tensorrt" or TRT_EP in self.providers

    @property
    def quant_layout(self) -> str:
        """The int8 layout to export: int8_layout, with auto resolved."""
        if self.int8_layout != "auto":
            return self.int8_layout
        return "tensorrt" if self.uses_tensorrt else "cpu"

    def graphs_at(self, precision: str) -> list[str]:
        """The graphs to run at `precision`, in run order."""
        _one_of("precision", precision, PRECISIONS)
        return [g for g in GRAPHS if self.precision[g] == precision]


@dataclass
class TensorRTProfile:
    """Engine build settings (used by `emo_edge.export.tensorrt`)."""

    workspace_mb: int = 1024  # MiB the builder may use for tactics
    min_batch: int = 1  # optimisation profile over the io_spec batch axis
    opt_batch: int = 1
    max_batch: int = 4

    def __post_init__(self) -> None:
        _at_least("tensorrt.workspace_mb", self.workspace_mb, 1)
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise ValueError(f"tensorrt: need 1 <= min_batch <= opt_batch <= max_batch, got "
                             f"{self.min_batch}, {self.opt_batch}, {self.max_batch}")


AUTO_THREADS = 4  # the most llama.cpp threads `llm.n_threads: 0` tries


@dataclass
class LLMProfile:
    """The GGUF model and llama.cpp's context settings."""

    quantization: str = "q8_0"  # f16 | q8_0 | q4_k_m
    n_ctx: int = 512  # tokens of context (prompt + multimodal tokens + answer)
    # CPU threads for the layers that stay on the CPU; 0: auto, the fastest of 1..AUTO_THREADS (at most the
    # machine's cores) by a short decode timing when the bundle loads its LLM
    n_threads: int = 2
    n_gpu_layers: int = 0  # layers offloaded to the GPU; -1 = all, 0 = CPU only

    def __post_init__(self) -> None:
        _one_of("llm.quantization", self.quantization, LLM_QUANTS)
        _at_least("llm.n_ctx", self.n_ctx, 1)
        _at_least("llm.n_threads", self.n_threads, 0)
        _at_least("llm.n_gpu_layers", self.n_gpu_layers, -1)


@dataclass
class RuntimeProfile:
    """How the live runtime shares the target's CPU between the fast path and the LLM (read from the manifest)."""

    llm_pause_for_fast: bool = True  # LLM decode waits between tokens while a fast-path update computes
    llm_threads: int | None = None  # llama.cpp threads while the live stream runs (None: llm.n_threads / the bundle's)

    def __post_init__(self) -> None:
        if not isinstance(self.llm_pause_for_fast, bool):
            raise ValueError(f"runtime.llm_pause_for_fast: must be true or false, got {self.llm_pause_for_fast!r}")
        if self.llm_threads is not None:
            _at_least("runtime.llm_threads", self.llm_threads, 1)


@dataclass
class ExportProfile:
    name: str
    description: str = ""
    perception: PerceptionProfile = field(default_factory=PerceptionProfile)
    tensorrt: TensorRTProfile = field(default_factory=TensorRTProfile)
    llm: LLMProfile = field(default_factory=LLMProfile)
    runtime: RuntimeProfile = field(default_factory=RuntimeProfile)
    tokens: dict[str, int] | None = None  # recommended token budget per stream; None: the checkpoint's

    def __post_init__(self) -> None:
        if self.tokens is not None:
            if not isinstance(self.tokens, dict) or set(self.tokens) - set(STREAMS):
                raise ValueError(f"tokens: expected a mapping over {list(STREAMS)} or null, got {self.tokens!r}")
            TokenBudget(**self.tokens)  # its own checks (non-negative, not empty, square image grid)

    def token_budget(self) -> TokenBudget | None:
        return None if self.tokens is None else TokenBudget(**self.tokens)

    def check_model(self, cfg: ModelConfig) -> None:
        """ValueError if this profile cannot serve a checkpoint with config `cfg`."""
        want = self.token_budget()
        if want is not None and want != cfg.tokens:
            raise ValueError(f"profile {self.name}: recommends tokens {dataclasses.asdict(want)} but the checkpoint "
                             f"was trained with {dataclasses.asdict(cfg.tokens)}; a different budget needs retraining "
                             "(remove `tokens` from the profile or train with that budget)")
        if self.llm.n_ctx <= cfg.tokens.total:
            raise ValueError(f"profile {self.name}: llm.n_ctx={self.llm.n_ctx} leaves no room next to the "
                             f"{cfg.tokens.total} multimodal tokens")
        if cfg.llm.path is None and self.llm.n_ctx > cfg.llm.max_position:
            raise ValueError(f"profile {self.name}: llm.n_ctx={self.llm.n_ctx} exceeds the model's "
                             f"llm.max_position={cfg.llm.max_position}")


def profile_from_dict(data: dict[str, Any], name: str = "") -> ExportProfile:
    """An ExportProfile from nested dicts (a YAML file's, or a manifest's `target`) through the one loader
    (`emo_edge.config.from_dict`); unknown or missing keys raise naming the valid ones."""
    return from_dict(ExportProfile, {"name": name, **data})
