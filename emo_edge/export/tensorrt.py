"""Building TensorRT engines from the bundle's ONNX graphs, on the device that will run them.

`build_engine` parses one graph (fp32 for FP32/FP16, the QDQ graph of `emo_edge.export.quantize` for
INT8; the implicit INT8 calibrators are deprecated since TensorRT 10.1 and never used) with the
settings of `emo_edge.runtime.tensorrt.engine_build_config`: builder flags, workspace, one optimisation
profile over the io_spec batch axis and a timing cache. It returns the build record the runtime checks
(`check_engine_meta`) before it loads the engine. `emo_edge.export.engines` builds a bundle's set.

Unverified here (no TensorRT): written against the TensorRT 10 Python API; `tests/test_tensorrt_logic.py`
has a GPU test.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from emo_edge.runtime.tensorrt import _tensorrt, current_engine_meta, meta_path


class EngineBuildError(RuntimeError):
    """TensorRT could not parse or build a graph; the parser errors or the cause are included."""


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


