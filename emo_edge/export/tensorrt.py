"""The TensorRT seam: engine build settings and version checks (pure, CPU-testable) and a thin build/run layer.

Two routes to TensorRT, both from the same ONNX files:

- native engines: `build_engine` parses one graph (fp32 for FP32/FP16, the QDQ graph of
  `emo_edge.export.quantize` for INT8; the implicit INT8 calibrators are deprecated since TensorRT
  10.1 and never used), with one optimisation profile over the io_spec batch axis, a timing cache,
  and a `<engine>.json` build record; `TrtRunner` runs it with TensorRT 10's name-based tensor API.
- ONNX Runtime's TensorRT execution provider: `ort_trt_provider_options` (engine and timing caches).

Engines are locked to the TensorRT version and the GPU they were built on: `check_engine_meta`
compares the build record with the device before an engine is loaded. Build them on the target.

Verified here (no GPU): the pure functions. `build_engine`, `TrtRunner` and `current_engine_meta`
import tensorrt / cuda-python lazily and are written against the TensorRT 10 Python API, untested
on this machine; `tests/test_tensorrt_logic.py` has a GPU test for them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from emo_edge.export.io_spec import GraphSpec, as_io_spec, trt_profile
from emo_edge.export.profiles import PRECISIONS, TRT_EP, ExportProfile

ENGINE_SUFFIX = ".engine"
# builder flags per precision; INT8 honours the graph's Q/DQ scales and FP16 lets the layers left
# unquantized (LayerNorm, Softmax, attention) run in half instead of fp32
FLAGS: dict[str, list[str]] = {"fp32": [], "fp16": ["FP16"], "int8": ["INT8", "FP16"]}
META_KEYS: tuple[tuple[str, str], ...] = (("tensorrt", "TensorRT version"), ("gpu", "GPU"),
                                          ("compute_capability", "compute capability"))


class EngineMismatchError(RuntimeError):
    """An engine built with another TensorRT version or on another GPU."""


class EngineBuildError(RuntimeError):
    """TensorRT could not parse or build a graph; the parser errors or the cause are included."""


# ---------------------------------------------------------------------------------------------
# pure logic
# ---------------------------------------------------------------------------------------------


def engine_build_config(graph: str | GraphSpec, io_spec: Any, precision: str, workspace_mb: int = 1024,
                        timing_cache: str | Path | None = None, min_batch: int = 1, opt_batch: int = 1,
                        max_batch: int = 8) -> dict[str, Any]:
    """Everything `build_engine` sets, as plain data: builder flags, workspace, the optimisation profile
    ({input: {min, opt, max}} from `io_spec.trt_profile`) and the timing cache path."""
    spec = as_io_spec(io_spec)
    name = graph.name if isinstance(graph, GraphSpec) else graph
    if name not in spec.graphs:
        raise ValueError(f"unknown graph {name!r}; graphs: {list(spec.graphs)}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not valid; options: {', '.join(PRECISIONS)}")
    if workspace_mb < 1:
        raise ValueError(f"workspace_mb must be >= 1, got {workspace_mb}")
    shapes = trt_profile(spec.graphs[name], min_batch, opt_batch, max_batch)
    return {"graph": name, "precision": precision, "flags": list(FLAGS[precision]),
            "workspace_bytes": workspace_mb << 20,
            "profile": {k: {"min": list(lo), "opt": list(mid), "max": list(hi)} for k, (lo, mid, hi) in shapes.items()},
            "timing_cache": None if timing_cache is None else str(timing_cache)}


def profile_build_config(profile: ExportProfile, graph: str, io_spec: Any,
                         timing_cache: str | Path | None = None) -> dict[str, Any]:
    """`engine_build_config` with the precision, workspace and batch range of an export profile."""
    t = profile.tensorrt
    return engine_build_config(graph, io_spec, profile.perception.precision[graph], t.workspace_mb, timing_cache,
                               t.min_batch, t.opt_batch, t.max_batch)


def engine_meta(trt_version: str, gpu_name: str, compute_capability: str | tuple[int, int],
                flags: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """The build record an engine must match at load time (compute capability as "major.minor")."""
    cc = compute_capability if isinstance(compute_capability, str) else "{}.{}".format(*compute_capability)
    return {"tensorrt": str(trt_version), "gpu": str(gpu_name), "compute_capability": cc, "flags": sorted(flags)}


def check_engine_meta(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> None:
    """EngineMismatchError naming every difference in TensorRT version, GPU and compute capability."""
    missing = [key for key, _ in META_KEYS if key not in recorded]
    if missing:
        raise EngineMismatchError(f"engine build record lacks {missing}: rebuild the engine on this device")
    diffs = [f"{label} {recorded[key]} (engine) != {current.get(key)} (this device)"
             for key, label in META_KEYS if str(recorded[key]) != str(current.get(key))]
    if diffs:
        raise EngineMismatchError("TensorRT engines are locked to the TensorRT version and GPU they were built "
                                  f"with: {'; '.join(diffs)}. Rebuild the engine on this device (build_engine)")


def ort_trt_provider_options(profile: ExportProfile, cache_dir: str | Path, stage: str,
                             io_spec: Any = None) -> list[Any]:
    """ONNX Runtime `providers=` for one graph (`stage`, whose precision the profile sets) in the profile's order.

    The TensorRT EP gets FP16 / INT8 (INT8 reads the QDQ graph's scales; no calibration table),
    an engine cache in `cache_dir/<stage>` and a shared timing cache in `cache_dir`; with `io_spec`,
    the optimisation profile shapes too (else the EP derives them from the inputs it sees).
    """
    precision = profile.perception.precision.get(stage)
    if precision is None:
        raise ValueError(f"unknown stage {stage!r}; stages: {list(profile.perception.precision)}")
    cache = Path(cache_dir)
    providers: list[Any] = []
    for name in profile.perception.providers:
        if name == TRT_EP:
            opts: dict[str, Any] = {
                "trt_fp16_enable": precision in ("fp16", "int8"), "trt_int8_enable": precision == "int8",
                "trt_max_workspace_size": profile.tensorrt.workspace_mb << 20,
                "trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache / stage),
                "trt_timing_cache_enable": True, "trt_timing_cache_path": str(cache)}
            if io_spec is not None:
                opts.update(_ort_profile_shapes(profile_build_config(profile, stage, io_spec)["profile"]))
            providers.append((TRT_EP, opts))
        else:  # CUDA / CPU run the file as it is: an fp16 stage falls back to its fp32 graph there
            providers.append(name)
    return providers


def _ort_profile_shapes(shapes: Mapping[str, Mapping[str, list[int]]]) -> dict[str, str]:
    """{input: {min, opt, max}} -> trt_profile_{min,opt,max}_shapes strings ("name:1x3x64x64,other:...")."""
    return {f"trt_profile_{which}_shapes": ",".join(f"{k}:{'x'.join(map(str, v[which]))}" for k, v in shapes.items())
            for which in ("min", "opt", "max")}


def meta_path(engine_path: str | Path) -> Path:
    path = Path(engine_path)
    return path.with_name(path.name + ".json")


# ---------------------------------------------------------------------------------------------
# lazy parts: tensorrt and cuda-python are imported only here (unverified on a machine without a GPU)
# ---------------------------------------------------------------------------------------------


def _tensorrt() -> Any:
    try:
        import tensorrt
    except ImportError as e:
        raise ImportError("tensorrt is not installed: it comes with JetPack on a Jetson, or `pip install tensorrt` "
                          "on an x86 machine with an NVIDIA GPU") from e
    return tensorrt


def _cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError as e:
            raise ImportError("device buffers need cuda-python: pip install cuda-python") from e
    return cudart


def _cuda(result: Any) -> Any:
    """cuda-python returns (error, *values): raise on an error, return the value(s)."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise RuntimeError(f"CUDA call failed: {err}")
    return values[0] if len(values) == 1 else tuple(values)


def _gpu_count() -> int:
    try:
        return int(_cuda(_cudart().cudaGetDeviceCount()))
    except (ImportError, RuntimeError):  # no cuda-python, or no driver / device
        return int(Path("/dev/nvidia0").exists() or Path("/dev/nvhost-ctrl-gpu").exists())  # dGPU, Jetson iGPU


def tensorrt_unavailable_reason() -> str | None:
    """None when tensorrt imports and an NVIDIA GPU is present; else why not (for skips and messages)."""
    try:
        _tensorrt()
    except ImportError as e:
        return str(e)
    return None if _gpu_count() > 0 else "tensorrt imports but no NVIDIA GPU is visible"


def tensorrt_available() -> bool:
    return tensorrt_unavailable_reason() is None


def current_engine_meta(flags: list[str] | tuple[str, ...] = (), device: int = 0) -> dict[str, Any]:
    """engine_meta of this machine: the installed TensorRT and GPU `device`."""
    trt, cudart = _tensorrt(), _cudart()
    prop = _cuda(cudart.cudaGetDeviceProperties(device))
    name = prop.name.decode(errors="replace").rstrip("\x00") if isinstance(prop.name, bytes) else str(prop.name)
    return engine_meta(trt.__version__, name, (prop.major, prop.minor), flags)


def build_engine(onnx_path: str | Path, out_path: str | Path, cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Build and serialize one engine from an ONNX graph and an `engine_build_config`; returns the build record
    (also written to `<out_path>.json`). The timing cache, when named, is read first and written back."""
    trt = _tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineBuildError(f"{onnx_path}: TensorRT could not parse the graph: {errors}")
    config = _builder_config(trt, builder, cfg)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"{onnx_path}: TensorRT failed to build the {cfg['precision']} engine (see its log)")
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(bytes(serialized))
    tmp.replace(out)
    if cfg.get("timing_cache"):
        Path(cfg["timing_cache"]).write_bytes(bytes(config.get_timing_cache().serialize()))
    meta = {**current_engine_meta(cfg["flags"]), "graph": cfg["graph"], "precision": cfg["precision"],
            "onnx": Path(onnx_path).name, "profile": cfg["profile"]}
    meta_path(out).write_text(json.dumps(meta, indent=2))
    return meta


def _network_flags(trt: Any) -> int:
    """Explicit batch: a flag before TensorRT 10, the only mode since (where the flag is deprecated)."""
    if int(trt.__version__.split(".")[0]) >= 10:
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)


def _builder_config(trt: Any, builder: Any, cfg: Mapping[str, Any]) -> Any:
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(cfg["workspace_bytes"]))
    for flag in cfg["flags"]:
        if not hasattr(trt.BuilderFlag, flag):  # TensorRT 11 dropped precision flags for strong typing
            raise EngineBuildError(f"TensorRT {trt.__version__} has no BuilderFlag.{flag}; this seam targets "
                                   "TensorRT 10 (JetPack 6)")
        config.set_flag(getattr(trt.BuilderFlag, flag))
    profile = builder.create_optimization_profile()
    for name, shapes in cfg["profile"].items():
        profile.set_shape(name, shapes["min"], shapes["opt"], shapes["max"])
    config.add_optimization_profile(profile)
    cache_path = Path(cfg["timing_cache"]) if cfg.get("timing_cache") else None
    blob = cache_path.read_bytes() if cache_path is not None and cache_path.is_file() else b""
    config.set_timing_cache(config.create_timing_cache(blob), False)  # False: a mismatched cache is an error
    return config


class TrtRunner:
    """One engine, numpy in and out, through TensorRT 10's name-based I/O (set_input_shape,
    set_tensor_address, execute_async_v3) with cuda-python device buffers (grown as needed, reused).
    The build record next to the engine is checked against this device first. Unverified here (no GPU)."""

    def __init__(self, engine_path: str | Path, check_meta: bool = True):
        trt, self.cudart = _tensorrt(), _cudart()
        path = Path(engine_path)
        if check_meta:
            if not meta_path(path).is_file():
                raise EngineMismatchError(f"{meta_path(path)}: no build record; rebuild with build_engine")
            check_engine_meta(json.loads(meta_path(path).read_text()), current_engine_meta())
        self.engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise RuntimeError(f"{path}: TensorRT could not deserialize the engine")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        self.dtypes = {n: np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}
        self.stream = _cuda(self.cudart.cudaStreamCreate())
        self.buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes)

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if sorted(feeds) != sorted(self.inputs):
            raise ValueError(f"engine inputs are {self.inputs}, got {sorted(feeds)}")
        rt, kind = self.cudart, self.cudart.cudaMemcpyKind
        hosts = {n: np.ascontiguousarray(feeds[n], dtype=self.dtypes[n]) for n in self.inputs}
        for name, x in hosts.items():
            self.context.set_input_shape(name, x.shape)
            ptr = self._device(name, x.nbytes)
            _cuda(rt.cudaMemcpyAsync(ptr, x.ctypes.data, x.nbytes, kind.cudaMemcpyHostToDevice, self.stream))
        outs = {n: np.empty(tuple(self.context.get_tensor_shape(n)), self.dtypes[n]) for n in self.outputs}
        for name, y in outs.items():
            self._device(name, y.nbytes)
        for name, (ptr, _) in self.buffers.items():
            self.context.set_tensor_address(name, ptr)
        if not self.context.execute_async_v3(int(self.stream)):  # TensorRT takes the raw cudaStream_t handle
            raise RuntimeError("TensorRT execute_async_v3 failed")
        for name, y in outs.items():
            ptr = self.buffers[name][0]
            _cuda(rt.cudaMemcpyAsync(y.ctypes.data, ptr, y.nbytes, kind.cudaMemcpyDeviceToHost, self.stream))
        _cuda(rt.cudaStreamSynchronize(self.stream))  # `hosts` stays referenced until here
        return outs

    def _device(self, name: str, nbytes: int) -> int:
        ptr, size = self.buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                _cuda(self.cudart.cudaFree(ptr))
            ptr, size = int(_cuda(self.cudart.cudaMalloc(max(nbytes, 1)))), max(nbytes, 1)
            self.buffers[name] = (ptr, size)
        return ptr

    def close(self) -> None:
        for ptr, _ in self.buffers.values():
            _cuda(self.cudart.cudaFree(ptr))
        self.buffers.clear()
        _cuda(self.cudart.cudaStreamDestroy(self.stream))
