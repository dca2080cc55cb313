"""`emo-edge engines build`: engines added to a bundle atomically, and refused at load when they do not belong.

The bookkeeping runs for real on a real jetson-orin-nano bundle (copying, hashing, the manifest, the
verification, the swap). Only the TensorRT build call itself is substituted (`fake_builder`: it writes
a stand-in engine file and returns a build record as `build_engine` does), since this machine has no
TensorRT; `test_tensorrt_logic.py` runs the real one on a GPU.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from emo_edge.export.engines import build_engines
from emo_edge.runtime.bundle import MANIFEST, BundleError, check_engines, load_bundle, read_manifest
from emo_edge.runtime.plan import Machine
from emo_edge.runtime.tensorrt import engine_meta, meta_path

ORIN = engine_meta("10.3.0", "Orin", "8.7")
JETSON = Machine(("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"), None, gpu=True,
                 llama_gpu_offload=True, engine_meta=ORIN)
NANO = {"image_encoder": "int8", "video_encoder": "int8", "audio_encoder": "int8", "fusion": "fp16"}


def fake_builder(calls: list[dict[str, Any]], device: dict[str, Any] = ORIN, fail_at: str | None = None):
    """Stands in for the TensorRT build call only: an engine file and its build record, as `build_engine` writes."""

    def build(onnx: Path, out: Path, cfg: Mapping[str, Any]) -> dict[str, Any]:
        calls.append({"onnx": onnx, "out": out, **cfg})
        if cfg["graph"] == fail_at:
            raise RuntimeError(f"TensorRT failed on {cfg['graph']}")
        assert onnx.is_file()
        out.write_bytes(b"engine " + onnx.read_bytes()[:64])
        meta = {**device, "flags": sorted(cfg["flags"]), "graph": cfg["graph"], "precision": cfg["precision"]}
        meta_path(out).write_text(json.dumps(meta))
        return meta
    return build


@pytest.fixture
def bundle(nano_bundle: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "b"
    shutil.copytree(nano_bundle, dst)
    return dst


def _siblings(b: Path) -> list[str]:
    return sorted(p.name for p in b.parent.iterdir() if p.name != b.name)


def test_engines_are_added_atomically(bundle: Path) -> None:
    calls: list[dict[str, Any]] = []
    before = (bundle / MANIFEST).read_text()
    m = build_engines(bundle, builder=fake_builder(calls), device=ORIN)
    assert [(e.graph, e.precision) for e in m.engines] == list(NANO.items())
    assert {e.graph: e.onnx for e in m.engines} == {
        "image_encoder": "perception/int8/image_encoder.onnx", "video_encoder": "perception/int8/video_encoder.onnx",
        "audio_encoder": "perception/int8/audio_encoder.onnx", "fusion": "perception/fp32/fusion.onnx"}
    assert {e.graph: e.meta.flags for e in m.engines} == {"image_encoder": ["FP16", "INT8"],
                                                          "video_encoder": ["FP16", "INT8"],
                                                          "audio_encoder": ["FP16", "INT8"], "fusion": ["FP16"]}
    assert {(e.meta.tensorrt, e.meta.gpu, e.meta.compute_capability) for e in m.engines} == {("10.3.0", "Orin", "8.7")}
    image = next(e for e in m.engines if e.graph == "image_encoder")
    assert image.profile == {"image": {"min": [1, 3, 64, 64], "opt": [1, 3, 64, 64], "max": [2, 3, 64, 64]}}
    # every build shared one timing cache, inside the hidden copy, never the bundle itself
    caches = {Path(c["timing_cache"]) for c in calls}
    assert len(caches) == 1 and next(iter(caches)).name == "timing.cache"
    assert next(iter(caches)).parent.parent.name.startswith(f".{bundle.name}.engines-")
    assert {c["workspace_bytes"] for c in calls} == {512 << 20}
    on_disk = read_manifest(bundle)
    assert (bundle / MANIFEST).read_text() != before and on_disk.engines == m.engines
    for e in m.engines:
        assert e.file in on_disk.files and (bundle / e.file).is_file()
    assert _siblings(bundle) == []
    plan = load_bundle(bundle, machine=JETSON).plan  # verified and planned as the device would
    assert plan.perception.backend == "tensorrt" and plan.perception.precision == NANO


def test_failed_build_leaves_the_bundle_as_it_was(bundle: Path) -> None:
    before = {p.relative_to(bundle): p.read_bytes() for p in bundle.rglob("*") if p.is_file()}
    with pytest.raises(RuntimeError, match="TensorRT failed on audio_encoder"):
        build_engines(bundle, builder=fake_builder([], fail_at="audio_encoder"), device=ORIN)
    after = {p.relative_to(bundle): p.read_bytes() for p in bundle.rglob("*") if p.is_file()}
    assert after == before and _siblings(bundle) == []


def test_engines_failing_verification_are_not_added(bundle: Path) -> None:
    before = (bundle / MANIFEST).read_text()
    other = engine_meta("10.3.0", "NVIDIA H100", "9.0")
    with pytest.raises(BundleError, match=r"engine engines/image_encoder-int8.engine \(image_encoder\).*GPU NVIDIA "
                                          r"H100 \(engine\) != Orin \(this device\)"):
        build_engines(bundle, builder=fake_builder([], device=other), device=ORIN)
    assert (bundle / MANIFEST).read_text() == before and not (bundle / "engines").exists()
    assert _siblings(bundle) == []


def test_engines_build_refuses_without_tensorrt(bundle: Path) -> None:
    from typer.testing import CliRunner

    from emo_edge.cli import app
    from emo_edge.runtime.tensorrt import tensorrt_unavailable_reason

    reason = tensorrt_unavailable_reason()
    if reason is None:
        pytest.skip("TensorRT is usable here: the refusal is for machines without it")
    before = (bundle / MANIFEST).read_text()
    res = CliRunner().invoke(app, ["engines", "build", str(bundle)])
    assert res.exit_code == 2
    out = " ".join(res.output.split())
    assert "cannot build TensorRT engines here" in out and "Build them on the target device" in out
    assert (bundle / MANIFEST).read_text() == before


@pytest.fixture
def with_engines(bundle: Path) -> Path:
    build_engines(bundle, builder=fake_builder([]), device=ORIN)
    return bundle


def _edit_manifest(b: Path, edit: Any) -> None:
    data = json.loads((b / MANIFEST).read_text())
    edit(data)
    (b / MANIFEST).write_text(json.dumps(data))


def test_engine_from_another_gpu_is_refused(with_engines: Path) -> None:
    def other_gpu(m: dict) -> None:
        m["engines"][1]["meta"].update(gpu="NVIDIA RTX 4090", compute_capability="8.9")

    _edit_manifest(with_engines, other_gpu)
    with pytest.raises(BundleError, match=r"engine engines/video_encoder-int8.engine \(video_encoder\): .*GPU NVIDIA "
                                          r"RTX 4090 \(engine\) != Orin \(this device\); compute capability 8.9"):
        load_bundle(with_engines, machine=JETSON)


def test_engine_from_another_tensorrt_is_refused(with_engines: Path) -> None:
    newer = {**ORIN, "tensorrt": "10.7.0"}
    with pytest.raises(BundleError, match=r"engine engines/image_encoder-int8.engine .*TensorRT version 10.3.0 "
                                          r"\(engine\) != 10.7.0 \(this device\)"):
        check_engines(with_engines, read_manifest(with_engines), newer)


def test_tampered_engine_metadata_is_refused(with_engines: Path) -> None:
    record = meta_path(with_engines / "engines/fusion-fp16.engine")
    record.write_text(record.read_text().replace("Orin", "Orin-modified"))
    with pytest.raises(BundleError, match=r"engines/fusion-fp16.engine.json does not match its sha256"):
        load_bundle(with_engines, machine=JETSON)


def test_engine_record_missing_a_field_is_refused(with_engines: Path) -> None:
    _edit_manifest(with_engines, lambda m: m["engines"][3]["meta"].pop("compute_capability"))
    with pytest.raises(BundleError, match=r"engines\[3\].meta: missing field\(s\) \['compute_capability'\]"):
        load_bundle(with_engines, machine=JETSON)


def test_missing_engine_file_is_refused(with_engines: Path) -> None:
    (with_engines / "engines/audio_encoder-int8.engine").unlink()
    with pytest.raises(BundleError, match="missing file engines/audio_encoder-int8.engine"):
        load_bundle(with_engines, machine=JETSON)
    m = read_manifest(with_engines)
    with pytest.raises(BundleError, match=r"engine engines/audio_encoder-int8.engine \(audio_encoder, int8\) is "
                                          "missing"):
        check_engines(with_engines, m, ORIN)
