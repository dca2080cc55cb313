"""TensorRT in the runtime: the engine build record and its check, the ONNX Runtime TensorRT-EP options, and
the engine runner (pure parts CPU-testable; tensorrt / cuda-python imported lazily).

Two routes to TensorRT, both from the bundle's ONNX files and both set by the target profile:

- native engines (`emo-edge engines build`, `emo_edge.export.tensorrt.build_engine`) run by `TrtRunner`
  through TensorRT 10's name-based tensor API; `TrtPerception` chains the four engines as the
  ONNX Runtime perception chains its graphs.
- ONNX Runtime's TensorRT execution provider: `ort_trt_provider_options` (precision flags, workspace,
  optimisation profile shapes, engine and timing caches).

Engines are locked to the TensorRT version and the GPU they were built on: `check_engine_meta`
compares the build record with the device before an engine is loaded (a BundleError naming both).

Verified here (no GPU): the pure functions. `TrtRunner`, `TrtPerception` and `current_engine_meta` are
written against the TensorRT 10 Python API, untested on this machine; `tests/test_tensorrt_logic.py`
has a GPU test for them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from emo_edge.runtime.io_spec import GraphSpec, IOSpec, as_io_spec, trt_profile, validate
from emo_edge.runtime.manifest import BundleError
from emo_edge.runtime.profile import PRECISIONS, TRT_EP, ExportProfile

ENGINE_SUFFIX = ".engine"
# builder flags per precision; INT8 honours the graph's Q/DQ scales and FP16 lets the layers left
# unquantized (LayerNorm, Softmax, attention) run in half instead of fp32
FLAGS: dict[str, list[str]] = {"fp32": [], "fp16": ["FP16"], "int8": ["INT8", "FP16"]}
META_KEYS: tuple[tuple[str, str], ...] = (("tensorrt", "TensorRT version"), ("gpu", "GPU"),
                                          ("compute_capability", "compute capability"))


class EngineMismatchError(BundleError):
    """An engine built with another TensorRT version or on another GPU."""


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
        raise EngineMismatchError(f"engine build record lacks {missing}: rebuild it on this device "
                                  "(emo-edge engines build BUNDLE)")
    diffs = [f"{label} {recorded[key]} (engine) != {current.get(key)} (this device)"
             for key, label in META_KEYS if str(recorded[key]) != str(current.get(key))]
    if diffs:
        raise EngineMismatchError("TensorRT engines are locked to the TensorRT version and GPU they were built "
                                  f"with: {'; '.join(diffs)}. Rebuild it on this device: emo-edge engines build BUNDLE")


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


def gpu_count() -> int:
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
    return None if gpu_count() > 0 else "tensorrt imports but no NVIDIA GPU is visible"


def tensorrt_available() -> bool:
    return tensorrt_unavailable_reason() is None


def current_engine_meta(flags: list[str] | tuple[str, ...] = (), device: int = 0) -> dict[str, Any]:
    """engine_meta of this machine: the installed TensorRT and GPU `device`."""
    trt, cudart = _tensorrt(), _cudart()
    prop = _cuda(cudart.cudaGetDeviceProperties(device))
    name = prop.name.decode(errors="replace").rstrip("\x00") if isinstance(prop.name, bytes) else str(prop.name)
    return engine_meta(trt.__version__, name, (prop.major, prop.minor), flags)

class TrtRunner:
    """One engine, numpy in and out, through TensorRT 10's name-based I/O (set_input_shape,
    set_tensor_address, execute_async_v3) with cuda-python device buffers (grown as needed, reused).
    The build record next to the engine is checked against this device first. Unverified here (no GPU)."""

    def __init__(self, engine_path: str | Path, check_meta: bool = True):
        trt, self.cudart = _tensorrt(), _cudart()
        path = Path(engine_path)
        if check_meta:
            if not meta_path(path).is_file():
                raise EngineMismatchError(f"{meta_path(path)}: no build record; rebuild with emo-edge engines build")
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


class TrtPerception:
    """The four perception engines chained as `OrtPerception.run` chains its graphs: runtime arrays in
    (uint8 NHWC image/frames, float mel, presence flags), fused / logits / va / tokens / token_mask and the
    encoders' features out. engines: graph -> engine file. Unverified here (no GPU)."""

    def __init__(self, engines: Mapping[str, str | Path], spec: IOSpec):
        missing = [g for g in spec.graphs if g not in engines]
        if missing:
            raise BundleError(f"no TensorRT engine for graph(s) {missing}; build them: emo-edge engines build BUNDLE")
        self.spec = spec
        self.runners = {g: TrtRunner(engines[g]) for g in spec.graphs}
        self.providers = ["tensorrt"]

    def run_graph(self, name: str, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if name not in self.runners:
            raise ValueError(f"unknown graph {name!r}; graphs: {list(self.runners)}")
        validate(self.spec.graphs[name].inputs, feeds, where=name)
        return self.runners[name](feeds)

    def run(self, image: np.ndarray, frames: np.ndarray, mel: np.ndarray, present: np.ndarray) -> dict[str, np.ndarray]:
        from emo_edge.runtime.perception import check_runtime_inputs, preprocess

        x = preprocess(**check_runtime_inputs(self.spec, image, frames, mel, present, where="TrtPerception.run"))
        feats = {"image_feats": self.run_graph("image_encoder", {"image": x["image"]})["image_feats"],
                 "video_feats": self.run_graph("video_encoder", {"frames": x["frames"]})["video_feats"],
                 "audio_feats": self.run_graph("audio_encoder", {"mel": x["mel"]})["audio_feats"]}
        return {**self.run_graph("fusion", {**feats, "present": x["present"]}), **feats}

    def close(self) -> None:
        for r in self.runners.values():
            r.close()
