"""emo-edge export end to end on the tiny checkpoint: the bundle, its manifest, torch-free use, refusals."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from emo_edge.runtime.bundle import MANIFEST, BundleError, load_bundle

PROFILE = {
    "name": "tiny-cpu",
    "description": "test profile: int8 encoders, fp32 fusion, q8_0 LLM",
    "perception": {"backend": "onnxruntime", "providers": ["CPUExecutionProvider"], "threads": 2,
                   "precision": {"image_encoder": "int8", "video_encoder": "int8", "audio_encoder": "int8",
                                 "fusion": "fp32"}},
    "llm": {"quantization": "q8_0", "n_ctx": 256, "n_threads": 2, "n_gpu_layers": 0},
}


@pytest.fixture(scope="module")
def bundle(tiny_ckpt, synth_dir, tmp_path_factory) -> Path:
    from emo_edge.export.bundle import build_bundle

    root = tmp_path_factory.mktemp("bundle")
    (root / "tiny-cpu.yaml").write_text(yaml.safe_dump(PROFILE))
    build_bundle(tiny_ckpt, root / "tiny-cpu.yaml", root / "b", data=synth_dir, calibration=synth_dir / "val.jsonl",
                 parity_clips=4)
    return root / "b"


def test_manifest_records_everything(bundle):
    m = json.loads((bundle / MANIFEST).read_text())
    assert m["format_version"] == 2 and m["labels"][0] == "neutral"
    assert m["target"]["name"] == "tiny-cpu" and m["target"]["llm"]["quantization"] == "q8_0" and m["engines"] == []
    assert {"onnxruntime", "torch"} <= set(m["versions"])
    assert m["token_layout"]["total"] == 12 and m["prompt"]["placeholder"] == "<mm>"
    assert set(m["llm"]["files"]) == {"f16", "q8_0"} and m["llm"]["tokenizer"] == "llm/tokenizer.model"
    assert m["perception"]["int8"]["precision"]["fusion"] == "fp32"
    par = m["parity"]
    assert par["perception_fp32_vs_torch"]["worst"]["max_rel_err"] <= 1e-4
    assert par["llm_vs_torch"]["quants"]["f16"]["identical_answers"] == 1.0
    for rel, entry in m["files"].items():
        assert (bundle / rel).is_file() and len(entry["sha256"]) == 64
    assert not [p for p in bundle.parent.iterdir() if ".partial-" in p.name]


def test_auto_llm_threads_are_timed_at_load_and_kept(bundle):
    """llm.n_threads 0: the bundle's LLM takes the fastest of 1..min(4, cores) threads, timed when it loads."""
    import dataclasses

    b = load_bundle(bundle)
    assert b.llm_threads is None
    b.plan.llm = dataclasses.replace(b.plan.llm, n_threads=0)
    lm = b.llm
    counts = list(range(1, min(4, os.cpu_count() or 1) + 1))
    assert sorted(b.llm_threads["ms_per_token"]) == counts
    assert lm.threads == b.llm_threads["chosen"] == min(counts, key=b.llm_threads["ms_per_token"].__getitem__)
    b.close()


def test_torch_free_bundle_eval(bundle, synth_dir, tmp_path):
    out = tmp_path / "r.json"
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from emo_edge.eval.evaluate import evaluate_bundle\n"
        f"evaluate_bundle({str(bundle)!r}, {str(synth_dir)!r}, json_out={str(out)!r}, progress=False)\n"
        "assert 'torch' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert res.returncode == 0, res.stderr[-3000:]
    r = json.loads(out.read_text())
    assert {"n", "acc", "waf", "uar", "war", "cue_recall", "per_class"} <= set(r)
    assert r["n"] == 12 and r["precision"] == "int8" and r["quant"] == "q8_0"


def _copy(bundle: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(bundle, dst)
    return dst


def test_tampered_file_is_refused(bundle, tmp_path):
    b = _copy(bundle, tmp_path)
    with (b / "perception/fp32/fusion.onnx").open("ab") as f:
        f.write(b"\0")
    with pytest.raises(BundleError, match="perception/fp32/fusion.onnx does not match its sha256"):
        load_bundle(b)


def test_wrong_format_version_is_refused(bundle, tmp_path):
    b = _copy(bundle, tmp_path)
    m = json.loads((b / MANIFEST).read_text())
    m["format_version"] = 99
    (b / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(BundleError, match="format version 99"):
        load_bundle(b)


def test_missing_tokenizer_is_refused(bundle, tmp_path):
    b = _copy(bundle, tmp_path)
    (b / "llm/tokenizer.model").unlink()
    with pytest.raises(BundleError, match="missing file llm/tokenizer.model"):
        load_bundle(b)


def test_failed_export_leaves_nothing(tiny_ckpt, synth_dir, tmp_path):
    from emo_edge.export.bundle import build_bundle

    (tmp_path / "p.yaml").write_text(yaml.safe_dump(PROFILE))
    with pytest.raises(Exception, match="nope"):
        build_bundle(tiny_ckpt, tmp_path / "p.yaml", tmp_path / "b", data=synth_dir,
                     calibration=tmp_path / "nope.yaml", parity_clips=4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.yaml"]


def test_existing_bundle_needs_force(bundle, tiny_ckpt):
    from emo_edge.export.bundle import build_bundle

    with pytest.raises(BundleError, match="--force"):
        build_bundle(tiny_ckpt, "cpu-x86", bundle)


@pytest.fixture(scope="module")
def lora_bundle(tiny_ckpt, synth_dir, tmp_path_factory) -> Path:
    """The base+lora form: the frozen base as GGUF (q8_0 and F32) + the LoRA as a GGUF adapter."""
    from emo_edge.export.bundle import build_bundle

    root = tmp_path_factory.mktemp("lora-bundle")
    profile = {**PROFILE, "perception": {**PROFILE["perception"], "precision": dict.fromkeys(
        ("image_encoder", "video_encoder", "audio_encoder", "fusion"), "fp32")}}
    (root / "p.yaml").write_text(yaml.safe_dump(profile))
    build_bundle(tiny_ckpt, root / "p.yaml", root / "b", data=synth_dir, llm_quants=("f32",), parity_clips=4,
                 llm_form="base+lora")
    return root / "b"


def test_base_plus_lora_bundle_records_and_runs_the_adapter(lora_bundle, bundle):
    from emo_edge.fileio import sha256_file

    m = json.loads((lora_bundle / MANIFEST).read_text())
    llm = m["llm"]
    assert llm["form"] == "base+lora" and set(llm["files"]) == {"q8_0", "f32"}
    assert llm["base"]["file"] == llm["files"]["q8_0"] and llm["base"]["sha256"] == sha256_file(
        lora_bundle / llm["base"]["file"])
    assert llm["adapter"] in m["files"] and llm["lora"]["alpha"] > 0 and llm["lora"]["n_adapted"] > 0
    assert m["files"][llm["adapter"]]["bytes"] < m["files"][llm["files"]["q8_0"]]["bytes"]
    f32 = m["parity"]["llm_vs_torch"]["quants"]["f32"]  # llama.cpp base + adapter vs PyTorch with the LoRA
    assert f32["max_abs_logit_diff"] <= 1e-3 and f32["identical_answers"] == 1.0 and f32["attention"] == "exact"
    merged = json.loads((bundle / MANIFEST).read_text())
    assert merged["llm"]["form"] == "merged" and merged["llm"]["adapter"] is None
    b = load_bundle(lora_bundle, quant="f32")
    try:
        assert b.llm.lora == lora_bundle / llm["adapter"]
    finally:
        b.close()


def test_base_plus_lora_bundle_refuses_a_tampered_adapter(lora_bundle, tmp_path):
    b = _copy(lora_bundle, tmp_path)
    adapter = json.loads((b / MANIFEST).read_text())["llm"]["adapter"]
    with (b / adapter).open("ab") as f:
        f.write(b"\0")
    with pytest.raises(BundleError, match="sha256"):
        load_bundle(b)
    m = json.loads((b / MANIFEST).read_text())
    del m["files"][adapter]
    (b / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(BundleError, match="adapter|lora"):
        load_bundle(b)


def test_manifest_round_trips_through_the_dataclass(bundle):
    from emo_edge.runtime.manifest import Manifest

    data = json.loads((bundle / MANIFEST).read_text())
    m = Manifest.from_dict(data)
    assert m.to_dict() == data
    assert m.perception["int8"].precision["image_encoder"] == "int8" and m.default_quant == "q8_0"
    assert m.model.frontend.image_size == 64 and m.perception_entry == "int8"


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.pop("labels"), r"manifest: missing field\(s\) \['labels'\]"),
    (lambda m: m.update(extra=1), r"manifest: unknown field\(s\) \['extra'\]"),
    (lambda m: m["perception"]["int8"].pop("dir"), r"manifest.perception.int8: missing field\(s\) \['dir'\]"),
    (lambda m: m["llm"].update(n_ctx=512), r"manifest.llm: unknown field\(s\) \['n_ctx'\]"),
    (lambda m: m["model"]["frontend"].pop("n_mels"), r"manifest.model.frontend: missing field\(s\) \['n_mels'\]"),
    (lambda m: m["token_layout"].update(total="12"), r"manifest.token_layout.total: expected int, got str"),
    (lambda m: m["target"]["llm"].update(quantization="q2"), r"manifest.target: llm.quantization: 'q2' is not valid"),
])
def test_manifest_fields_are_checked(bundle, tmp_path, edit, message):
    b = _copy(bundle, tmp_path)
    m = json.loads((b / MANIFEST).read_text())
    edit(m)
    (b / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(BundleError, match=message):
        load_bundle(b)
