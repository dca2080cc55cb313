"""The execution plan: the target profile decides what runs, field by field; a machine without what it needs
refuses with the reason, or runs on the CPU when asked, visibly.

The expected values below are written out from export/*.yaml (and the tiny preset's frontend: image 64 px,
4 frames of 32 px), not computed by the code under test. `Machine` is the plan's input (what a device
offers); here it is given literally for a Jetson with and without the tensorrt bindings.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from emo_edge.config import load_preset
from emo_edge.export.profiles import load_profile
from emo_edge.runtime.bundle import BundleError, load_bundle
from emo_edge.runtime.io_spec import build_io_spec
from emo_edge.runtime.manifest import (
    FORMAT_VERSION,
    CheckpointInfo,
    EngineMeta,
    EngineRecord,
    LLMFiles,
    Manifest,
    ModelInfo,
    Parity,
    PerceptionEntry,
    TokenLayout,
)
from emo_edge.runtime.plan import Machine, make_plan

TRT, CUDA, CPU = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"
GRAPHS = ("image_encoder", "video_encoder", "audio_encoder", "fusion")
ORIN = {"tensorrt": "10.3.0", "gpu": "Orin", "compute_capability": "8.7", "flags": []}
JETSON_ORT = Machine((TRT, CUDA, CPU), "tensorrt is not installed", gpu=True, llama_gpu_offload=True)
JETSON_TRT = Machine((TRT, CUDA, CPU), None, gpu=True, llama_gpu_offload=True, engine_meta=ORIN)
CPU_ONLY = Machine((CPU,), "tensorrt is not installed", gpu=False, llama_gpu_offload=False)
ROOT = Path("/robot/bundle")


def manifest_for(target: str, engines: list[EngineRecord] | None = None) -> Manifest:
    """A manifest as the exporter writes it for `target` (the tiny preset's model), without exporting."""
    profile = load_profile(target)
    cfg = load_preset("tiny").model
    entries = {"fp32": PerceptionEntry("perception/fp32", [f"{g}.onnx" for g in GRAPHS], dict.fromkeys(GRAPHS, "fp32"))}
    int8 = [g for g in GRAPHS if profile.perception.precision[g] == "int8"]
    if int8:
        entries["int8"] = PerceptionEntry("perception/int8", [f"{g}.onnx" for g in GRAPHS],
                                          {g: "int8" if g in int8 else "fp32" for g in GRAPHS})
    quant = profile.llm.quantization
    return Manifest(FORMAT_VERSION, "now", "0", {}, {}, profile, CheckpointInfo("c", "tiny", "0" * 64, {}),
                    ModelInfo(cfg.frontend, "llama", 32), ["neutral"], {}, TokenLayout([], {}, 0),
                    build_io_spec(cfg, llm_width=32), entries,
                    LLMFiles({"f16": "llm/llm-f16.gguf", quant: f"llm/llm-{quant}.gguf"}, "llm/tokenizer.model", {},
                             {}, "merged"),
                    engines or [], Parity(0, {}, None, {}), {})


def trt_options(graph: str, fp16: bool, int8: bool, workspace: int, shapes: tuple[str, str, str]) -> dict:
    return {"trt_fp16_enable": fp16, "trt_int8_enable": int8, "trt_max_workspace_size": workspace,
            "trt_engine_cache_enable": True, "trt_engine_cache_path": f"{ROOT}/engines/ort-trt/{graph}",
            "trt_timing_cache_enable": True, "trt_timing_cache_path": f"{ROOT}/engines/ort-trt",
            "trt_profile_min_shapes": shapes[0], "trt_profile_opt_shapes": shapes[1],
            "trt_profile_max_shapes": shapes[2]}


def image_shapes(max_batch: int) -> tuple[str, str, str]:
    return "image:1x3x64x64", "image:1x3x64x64", f"image:{max_batch}x3x64x64"


def test_cpu_x86_plan() -> None:
    plan = make_plan(manifest_for("cpu-x86"), ROOT, CPU_ONLY)
    p, m = plan.perception, plan.llm
    assert (p.backend, p.graphs_dir, p.providers, p.threads) == ("onnxruntime", "perception/int8", [CPU], 2)
    assert p.precision == {"image_encoder": "int8", "video_encoder": "int8", "audio_encoder": "int8", "fusion": "fp32"}
    assert p.provider_options == {g: [{}] for g in GRAPHS} and p.merged and p.engines == {}
    assert (m.file, m.quant, m.n_ctx, m.n_threads, m.n_gpu_layers) == ("llm/llm-q8_0.gguf", "q8_0", 512, 0, 0)
    assert "n_threads auto" in plan.describe()[2]  # llama.cpp's threads timed at load
    assert not plan.fallback and plan.reasons == [] and plan.target == "cpu-x86"


def test_orin_agx_plan_onnxruntime_route() -> None:
    """backend tensorrt without the tensorrt bindings: the profile's ONNX Runtime route, TensorRT EP first."""
    plan = make_plan(manifest_for("jetson-orin-agx"), ROOT, JETSON_ORT)
    p, m = plan.perception, plan.llm
    assert (p.backend, p.graphs_dir, p.providers, p.threads) == ("onnxruntime", "perception/fp32", [TRT, CUDA, CPU], 2)
    assert p.precision == dict.fromkeys(GRAPHS, "fp16") and not p.merged
    assert p.provider_options["image_encoder"] == [trt_options("image_encoder", True, False, 2147483648,
                                                               image_shapes(4)), {}, {}]
    for g in GRAPHS:
        trt = p.provider_options[g][0]
        assert (trt["trt_fp16_enable"], trt["trt_int8_enable"], trt["trt_max_workspace_size"]) == (True, False,
                                                                                                    2147483648)
        assert trt["trt_engine_cache_path"] == f"{ROOT}/engines/ort-trt/{g}"
    fusion = p.provider_options["fusion"][0]
    assert fusion["trt_profile_max_shapes"].startswith("image_feats:4x") and "present:4x3" in fusion[
        "trt_profile_max_shapes"]
    assert (m.file, m.quant, m.n_ctx, m.n_threads, m.n_gpu_layers) == ("llm/llm-q8_0.gguf", "q8_0", 512, 8, -1)
    assert not plan.fallback


def test_orin_nano_plan_onnxruntime_route() -> None:
    plan = make_plan(manifest_for("jetson-orin-nano"), ROOT, JETSON_ORT)
    p, m = plan.perception, plan.llm
    assert (p.backend, p.graphs_dir, p.providers, p.threads) == ("onnxruntime", "perception/int8", [TRT, CUDA, CPU], 2)
    assert p.precision == {"image_encoder": "int8", "video_encoder": "int8", "audio_encoder": "int8", "fusion": "fp16"}
    assert p.provider_options["image_encoder"] == [trt_options("image_encoder", True, True, 536870912,
                                                               image_shapes(2)), {}, {}]
    for g, int8 in (("video_encoder", True), ("audio_encoder", True), ("fusion", False)):
        trt = p.provider_options[g][0]
        assert (trt["trt_fp16_enable"], trt["trt_int8_enable"], trt["trt_max_workspace_size"]) == (True, int8,
                                                                                                    536870912)
    assert p.provider_options["video_encoder"][0]["trt_profile_max_shapes"] == "frames:2x4x3x32x32"
    assert (m.file, m.quant, m.n_ctx, m.n_threads, m.n_gpu_layers) == ("llm/llm-q4_k_m.gguf", "q4_k_m", 512, 4, -1)


def engines_for(precisions: dict[str, str]) -> list[EngineRecord]:
    return [EngineRecord(g, p, f"engines/{g}-{p}.engine", f"perception/fp32/{g}.onnx",
                         EngineMeta("10.3.0", "Orin", "8.7", ["FP16"]), {}) for g, p in precisions.items()]


def test_orin_plans_tensorrt_engines() -> None:
    agx = make_plan(manifest_for("jetson-orin-agx", engines_for(dict.fromkeys(GRAPHS, "fp16"))), ROOT, JETSON_TRT)
    assert agx.perception.backend == "tensorrt" and agx.perception.graphs_dir is None
    assert agx.perception.engines == {g: f"engines/{g}-fp16.engine" for g in GRAPHS}
    assert agx.perception.precision == dict.fromkeys(GRAPHS, "fp16") and agx.llm.n_gpu_layers == -1
    nano = {"image_encoder": "int8", "video_encoder": "int8", "audio_encoder": "int8", "fusion": "fp16"}
    plan = make_plan(manifest_for("jetson-orin-nano", engines_for(nano)), ROOT, JETSON_TRT)
    assert plan.perception.engines["fusion"] == "engines/fusion-fp16.engine"
    assert plan.perception.engines["audio_encoder"] == "engines/audio_encoder-int8.engine"


def test_tensorrt_without_engines_is_refused() -> None:
    with pytest.raises(BundleError, match=r"no TensorRT engine for image_encoder at fp16.*emo-edge engines build"):
        make_plan(manifest_for("jetson-orin-agx"), ROOT, JETSON_TRT)
    wrong = engines_for(dict.fromkeys(GRAPHS, "fp32"))  # built at another precision than the profile asks
    with pytest.raises(BundleError, match="no TensorRT engine for fusion at fp16"):
        make_plan(manifest_for("jetson-orin-agx", wrong), ROOT, JETSON_TRT)


@pytest.mark.parametrize("target", ["jetson-orin-agx", "jetson-orin-nano"])
def test_jetson_on_a_cpu_refuses_naming_what_is_missing(target: str) -> None:
    with pytest.raises(BundleError) as e:
        make_plan(manifest_for(target), ROOT, CPU_ONLY)
    msg = str(e.value)
    for needed in ("tensorrt is not installed", "TensorrtExecutionProvider: not in this onnxruntime build",
                   "no NVIDIA GPU is visible", "n_gpu_layers=-1", "CMAKE_ARGS='-DGGML_CUDA=on'", "--fallback cpu"):
        assert needed in msg, (needed, msg)


def test_cpu_fallback_is_marked_and_runs_cpu_only() -> None:
    agx = make_plan(manifest_for("jetson-orin-agx"), ROOT, CPU_ONLY, fallback="cpu")
    assert agx.fallback and len(agx.reasons) == 5 and "no NVIDIA GPU" in " ".join(agx.reasons)
    assert (agx.perception.backend, agx.perception.graphs_dir, agx.perception.providers) == (
        "onnxruntime", "perception/fp32", [CPU])
    assert agx.perception.precision == dict.fromkeys(GRAPHS, "fp32") and agx.perception.merged
    assert (agx.llm.n_gpu_layers, agx.llm.n_threads, agx.llm.quant) == (0, min(8, os.cpu_count()), "q8_0")
    nano = make_plan(manifest_for("jetson-orin-nano"), ROOT, CPU_ONLY, fallback="cpu")
    assert nano.perception.graphs_dir == "perception/int8"
    assert nano.perception.precision == {"image_encoder": "int8", "video_encoder": "int8", "audio_encoder": "int8",
                                         "fusion": "fp32"}
    assert "FALLBACK" in nano.describe()[0]


def test_fallback_is_not_taken_when_nothing_is_missing() -> None:
    plan = make_plan(manifest_for("jetson-orin-nano"), ROOT, JETSON_ORT, fallback="cpu")
    assert not plan.fallback and plan.perception.providers == [TRT, CUDA, CPU]


def test_bad_fallback_value_names_the_options() -> None:
    with pytest.raises(ValueError, match="fallback 'gpu' is not valid; options: cpu"):
        make_plan(manifest_for("cpu-x86"), ROOT, CPU_ONLY, fallback="gpu")


def test_llama_without_gpu_offload_alone_is_named() -> None:
    machine = Machine((TRT, CUDA, CPU), "tensorrt is not installed", gpu=True, llama_gpu_offload=False)
    with pytest.raises(BundleError, match=r"n_gpu_layers=-1: llama-cpp-python here is built without GPU offload") as e:
        make_plan(manifest_for("jetson-orin-nano"), ROOT, machine)
    assert "TensorrtExecutionProvider" not in str(e.value)


# ---------------------------------------------------------------------------------------------
# a real jetson-orin-nano bundle (the tiny checkpoint) on this machine
# ---------------------------------------------------------------------------------------------


def test_nano_bundle_records_its_target(nano_bundle: Path) -> None:
    from emo_edge.runtime.bundle import read_manifest

    m = read_manifest(nano_bundle)
    assert m.target.name == "jetson-orin-nano" and m.default_quant == "q4_k_m" and "q4_k_m" in m.llm.files
    assert m.perception["int8"].precision == {"image_encoder": "int8", "video_encoder": "int8",
                                              "audio_encoder": "int8", "fusion": "fp32"}
    assert m.target.perception.precision["fusion"] == "fp16" and m.engines == []


def test_bundle_directory_is_readable_like_any_other(nano_bundle: Path) -> None:
    """The bundle is built in a staging directory and renamed into place: it must not keep mkdtemp's owner-only
    mode (a node running as another user, or a copy made with its modes, could not read it)."""
    from emo_edge.fileio import current_umask

    assert nano_bundle.stat().st_mode & 0o777 == 0o777 & ~current_umask()
    assert all(p.stat().st_mode & 0o044 == 0o044 & ~current_umask() for p in nano_bundle.rglob("*"))


def test_nano_bundle_refuses_here_and_runs_with_fallback(nano_bundle: Path) -> None:
    import numpy as np

    if Machine.probe().gpu:
        pytest.skip("this machine has an NVIDIA GPU: the refusal is checked on CPU-only machines")
    with pytest.raises(BundleError, match=r"cannot run as planned on this machine.*no NVIDIA GPU is visible"):
        load_bundle(nano_bundle)
    b = load_bundle(nano_bundle, fallback="cpu")
    try:
        assert b.plan.fallback and b.plan.perception.providers == [CPU] and b.plan.llm.n_gpu_layers == 0
        spec = b.manifest.io_spec
        x = {t.name: np.zeros(t.concrete(1), t.dtype) for t in spec.runtime_inputs}
        out = b.perception.run(**x)
        assert out["tokens"].shape[0] == 1 and b.perception.providers == [CPU]
        assert isinstance(b.llm.answer(out["tokens"][0], out["token_mask"][0], " Answer:", max_new_tokens=4), str)
    finally:
        b.close()


def test_info_prints_the_plan(nano_bundle: Path) -> None:
    from typer.testing import CliRunner

    from emo_edge.cli import app

    res = CliRunner().invoke(app, ["info", "--bundle", str(nano_bundle), "--fallback", "cpu"])
    out = " ".join(res.output.split())  # rich wraps long lines
    assert res.exit_code == 0, res.output
    assert "target jetson-orin-nano - FALLBACK to cpu" in out and "n_gpu_layers 0" in out
    refused = CliRunner().invoke(app, ["info", "--bundle", str(nano_bundle)])
    if not Machine.probe().gpu:
        assert refused.exit_code == 2 and "no NVIDIA GPU is visible" in " ".join(refused.output.split())
