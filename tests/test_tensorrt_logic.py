"""The TensorRT seam: build settings, version locks and provider options on the CPU; engines on a GPU."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from emo_edge.config import load_preset
from emo_edge.export.profiles import load_profile
from emo_edge.runtime.io_spec import GRAPHS, build_io_spec, dummy_inputs
from emo_edge.runtime.tensorrt import (
    EngineMismatchError,
    check_engine_meta,
    engine_build_config,
    engine_meta,
    meta_path,
    ort_trt_provider_options,
    profile_build_config,
    tensorrt_available,
    tensorrt_unavailable_reason,
)

CFG = load_preset("tiny").model
SPEC = build_io_spec(CFG)
ORIN = engine_meta("10.3.0", "Orin", (8, 7), ["INT8", "FP16"])


def test_build_config_takes_shapes_from_the_io_spec(tmp_path):
    cfg = engine_build_config("image_encoder", SPEC, "fp16", workspace_mb=256, timing_cache=tmp_path / "t.cache")
    assert cfg["flags"] == ["FP16"] and cfg["workspace_bytes"] == 256 << 20
    assert cfg["profile"] == {"image": {"min": [1, 3, 64, 64], "opt": [1, 3, 64, 64], "max": [8, 3, 64, 64]}}
    assert cfg["timing_cache"] == str(tmp_path / "t.cache")
    fusion = engine_build_config(SPEC.graphs["fusion"], SPEC, "int8", max_batch=4)
    assert list(fusion["profile"]) == ["image_feats", "video_feats", "audio_feats", "present"]
    assert fusion["profile"]["present"]["max"] == [4, 3] and fusion["flags"] == ["INT8", "FP16"]
    assert engine_build_config("audio_encoder", SPEC, "fp32")["flags"] == []
    json.dumps(fusion)  # plain data: it goes into build records


def test_build_config_rejects_bad_input():
    with pytest.raises(ValueError, match="precision 'int4' is not valid; options: fp32, fp16, int8"):
        engine_build_config("fusion", SPEC, "int4")
    with pytest.raises(ValueError, match=r"unknown graph 'decoder'; graphs: \['image_encoder'"):
        engine_build_config("decoder", SPEC, "fp16")
    with pytest.raises(ValueError, match="min_batch"):
        engine_build_config("fusion", SPEC, "fp16", min_batch=4, opt_batch=2)


def test_profile_build_config_follows_the_profile():
    nano = load_profile("jetson-orin-nano")
    enc, fusion = (profile_build_config(nano, g, SPEC) for g in ("video_encoder", "fusion"))
    assert enc["precision"] == "int8" and fusion["precision"] == "fp16"
    assert enc["workspace_bytes"] == nano.tensorrt.workspace_mb << 20
    assert enc["profile"]["frames"]["max"][0] == nano.tensorrt.max_batch


def test_engine_meta_matches_and_names_every_mismatch():
    assert ORIN["compute_capability"] == "8.7" and ORIN["flags"] == ["FP16", "INT8"]
    check_engine_meta(ORIN, engine_meta("10.3.0", "Orin", "8.7"))  # flags do not lock an engine
    with pytest.raises(EngineMismatchError, match=r"TensorRT version 10.3.0 \(engine\) != 10.7.0 \(this device\)"):
        check_engine_meta(ORIN, engine_meta("10.7.0", "Orin", "8.7"))
    with pytest.raises(EngineMismatchError, match=r"GPU Orin \(engine\) != NVIDIA H100.*compute capability 8.7"):
        check_engine_meta(ORIN, engine_meta("10.3.0", "NVIDIA H100", (9, 0)))
    with pytest.raises(EngineMismatchError, match="lacks"):
        check_engine_meta({"tensorrt": "10.3.0"}, ORIN)


def test_ort_provider_options_per_stage(tmp_path):
    nano = load_profile("jetson-orin-nano")
    enc = ort_trt_provider_options(nano, tmp_path, "image_encoder", SPEC)
    assert [p if isinstance(p, str) else p[0] for p in enc] == nano.perception.providers
    name, opts = enc[0]
    assert name == "TensorrtExecutionProvider"
    assert opts["trt_int8_enable"] and opts["trt_fp16_enable"] and opts["trt_engine_cache_enable"]
    assert opts["trt_engine_cache_path"] == str(tmp_path / "image_encoder")
    assert opts["trt_timing_cache_path"] == str(tmp_path) and opts["trt_max_workspace_size"] == 512 << 20
    assert opts["trt_profile_max_shapes"] == "image:2x3x64x64"
    fusion = dict([ort_trt_provider_options(nano, tmp_path, "fusion", SPEC)[0]])["TensorrtExecutionProvider"]
    assert fusion["trt_fp16_enable"] and not fusion["trt_int8_enable"]
    assert fusion["trt_profile_min_shapes"].startswith("image_feats:1x16x32,video_feats:1x4x32")
    assert "trt_profile_min_shapes" not in ort_trt_provider_options(nano, tmp_path, "fusion")[0][1]
    assert ort_trt_provider_options(load_profile("cpu-x86"), tmp_path, "fusion") == ["CPUExecutionProvider"]
    with pytest.raises(ValueError, match="unknown stage 'decoder'"):
        ort_trt_provider_options(nano, tmp_path, "decoder")


def test_availability_is_a_bool_with_a_reason(monkeypatch):
    import emo_edge.runtime.tensorrt as rt

    def missing():
        raise ImportError("tensorrt is not installed: test")

    # each of the three cases, whatever this machine has
    monkeypatch.setattr(rt, "_tensorrt", missing)
    assert rt.tensorrt_unavailable_reason() == "tensorrt is not installed: test" and not rt.tensorrt_available()
    monkeypatch.setattr(rt, "_tensorrt", lambda: object())
    monkeypatch.setattr(rt, "gpu_count", lambda: 0)
    assert "no NVIDIA GPU" in rt.tensorrt_unavailable_reason() and not rt.tensorrt_available()
    monkeypatch.setattr(rt, "gpu_count", lambda: 1)
    assert rt.tensorrt_unavailable_reason() is None and rt.tensorrt_available()
    monkeypatch.undo()
    # and this machine's answer: without the tensorrt package the reason says how to get it
    reason = tensorrt_unavailable_reason()
    assert tensorrt_available() is (reason is None)
    if importlib.util.find_spec("tensorrt") is None:
        assert reason is not None and "pip install tensorrt" in reason and "JetPack" in reason


def test_lazy_parts_say_what_is_missing(tmp_path):
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is installed: the GPU test covers the lazy parts")
    from emo_edge.export.tensorrt import build_engine
    from emo_edge.runtime.tensorrt import TrtRunner

    with pytest.raises(ImportError, match="tensorrt is not installed|cuda-python"):
        build_engine(tmp_path / "x.onnx", tmp_path / "x.engine", engine_build_config("fusion", SPEC, "fp16"))
    with pytest.raises(ImportError, match="tensorrt is not installed|cuda-python"):
        TrtRunner(tmp_path / "x.engine")
    assert meta_path(tmp_path / "x.engine").name == "x.engine.json"


@pytest.mark.gpu
@pytest.mark.parametrize("precision, rtol", [("fp32", 1e-4), ("fp16", 2e-2)])
def test_engine_builds_runs_and_matches_onnxruntime(tmp_path, precision, rtol):
    reason = tensorrt_unavailable_reason()
    if reason:
        pytest.skip(reason)
    torch = pytest.importorskip("torch")
    from emo_edge.export.onnx_export import export_perception
    from emo_edge.export.tensorrt import build_engine
    from emo_edge.model.perception import Perception
    from emo_edge.runtime.perception import CPU, OrtPerception
    from emo_edge.runtime.tensorrt import TrtRunner, current_engine_meta

    torch.manual_seed(0)
    export_perception(Perception(CFG, CFG.llm.hidden).eval(), CFG, tmp_path, threads=1)
    ort = OrtPerception(tmp_path, providers=[CPU], threads=1)
    for graph in GRAPHS:
        cfg = engine_build_config(graph, SPEC, precision, 256, tmp_path / "timing.cache", max_batch=4)
        engine = tmp_path / f"{graph}-{precision}.engine"
        meta = build_engine(tmp_path / f"{graph}.onnx", engine, cfg)
        check_engine_meta(meta, current_engine_meta())
        runner = TrtRunner(engine)
        try:
            for batch in (1, 3):
                feeds = dummy_inputs(SPEC.graphs[graph], batch, seed=batch)
                got, want = runner(feeds), ort.run_graph(graph, feeds)
                for name, ref in want.items():
                    err = np.abs(got[name] - ref).max() / (np.abs(ref).max() + 1e-12)
                    assert err <= rtol, (graph, name, batch, err)
        finally:
            runner.close()
    assert (tmp_path / "timing.cache").stat().st_size > 0
