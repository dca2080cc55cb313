"""Perception -> ONNX: parity with eager PyTorch, dynamic batch, and the torch-free ONNX Runtime runner."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from emo_edge.config import load_preset, to_dict
from emo_edge.export.onnx_export import export_perception
from emo_edge.model.perception import Perception
from emo_edge.runtime.io_spec import (
    BATCH,
    GRAPHS,
    SPEC_FILE,
    IOSpec,
    as_io_spec,
    build_io_spec,
    dummy_inputs,
    dynamic_axes,
    trt_profile,
)
from emo_edge.runtime.perception import OrtPerception, preprocess

onnx = pytest.importorskip("onnx")  # the `export` extra
pytest.importorskip("onnxruntime")

CFG = load_preset("tiny").model
RTOL = 1e-4  # max |ort - torch| / max |torch|, per output


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Perception, Path, dict]:
    torch.manual_seed(0)
    perception = Perception(CFG, CFG.llm.hidden).eval()
    out = tmp_path_factory.mktemp("onnx")
    real = {k: v for k, v in clips(3, seed=2).items() if k != "present"}  # stands in for a FeatureSet
    return perception, out, export_perception(perception, CFG, out, real_inputs=real, threads=1)


def rel_err(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / (np.abs(want).max() + 1e-12))


def eager(perception: Perception, clips: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The training path: to_batch (image tied to the video flag) then Perception.forward."""
    from emo_edge.model.inputs import to_batch

    p, n = clips["present"], len(clips["present"])
    batch = to_batch(clips["frames"], clips["image"], clips["mel"], p[:, 1], p[:, 2], ["emotion"] * n, [None] * n)
    with torch.no_grad():
        return {k: v.numpy() for k, v in perception(batch.image, batch.frames, batch.mel, batch.present).items()}


def clips(batch: int, seed: int = 1) -> dict[str, np.ndarray]:
    x = dummy_inputs(build_io_spec(CFG).runtime_inputs, batch, seed)
    x["mel"] = x["mel"].astype(np.float16)  # as FeatureSet stores it
    x["present"] = np.ones((batch, 3), np.float32)
    x["present"][-1] = (1, 1, 0) if batch > 1 else 1  # the last clip without audio
    return x


def test_files_and_spec_are_written(exported):
    _, out, report = exported
    assert sorted(report["files"]) == sorted(GRAPHS)
    for name in GRAPHS:
        assert (out / f"{name}.onnx").is_file() and len(report["files"][name]["sha256"]) == 64
    assert not list(out.glob("*.tmp"))
    assert as_io_spec(out / SPEC_FILE) == build_io_spec(CFG)
    assert set(report["versions"]) >= {"torch", "onnx", "onnxruntime"}


def test_parity_with_eager_at_batch_1_and_3(exported):
    parity = exported[2]["parity"]
    assert parity["providers"] == ["CPUExecutionProvider"]
    for graph, per_batch in parity["graphs"].items():
        assert set(per_batch) == {"batch_1", "batch_3"}, graph
        for outputs in per_batch.values():
            for name, err in outputs.items():
                assert err["max_rel_err"] <= RTOL, (graph, name, err)
    fusion = parity["graphs"]["fusion"]["batch_3"]
    assert fusion["logits"]["label_agreement"] == 1.0 and fusion["token_mask"]["max_abs_err"] == 0.0
    assert parity["pipeline_real"]["n"] == 3 and parity["pipeline_real"]["outputs"]["tokens"]["max_rel_err"] <= RTOL
    assert parity["worst"]["max_rel_err"] <= RTOL and parity["worst"]["label_agreement"] == 1.0


def test_batch_axis_is_dynamic_in_the_files(exported):
    _, out, _ = exported
    spec = build_io_spec(CFG)
    for name, graph in spec.graphs.items():
        model = onnx.load(str(out / graph.filename))
        for value in (*model.graph.input, *model.graph.output):
            assert value.type.tensor_type.shape.dim[0].dim_param == BATCH, (name, value.name)
    rt = OrtPerception(out, threads=1)
    for b in (1, 3):
        assert rt.run(**clips(b))["tokens"].shape == (b, CFG.tokens.total, CFG.llm.hidden)


def test_runtime_equals_eager_from_uint8(exported):
    perception, out, _ = exported
    x = clips(3)
    got, want = OrtPerception(out, to_dict(CFG), threads=1).run(**x), eager(perception, x)
    for name in ("fused", "logits", "va", "tokens", "token_mask"):
        assert rel_err(got[name], want[name]) <= RTOL, name
    assert np.array_equal(got["logits"].argmax(1), want["logits"].argmax(1))
    assert np.array_equal(got["token_mask"], want["token_mask"]) and got["token_mask"][-1].min() == 0


def test_numpy_preprocess_is_to_batch(exported):
    from emo_edge.model.inputs import to_batch

    x = clips(2)
    x["present"][-1] = (0, 0, 1)
    b = to_batch(x["frames"], x["image"], x["mel"], x["present"][:, 1], x["present"][:, 2], ["emotion"] * 2, [None] * 2)
    ours = preprocess(**x)
    for name, ref in (("image", b.image), ("frames", b.frames), ("mel", b.mel), ("present", b.present)):
        assert ours[name].dtype == np.float32 and np.array_equal(ours[name], ref.numpy()), name


@pytest.mark.parametrize("name, bad, expect", [
    ("image", lambda x: x.astype(np.float32) / 255, r"'image' expected \(batch, 64, 64, 3\) uint8, got .* float32"),
    ("frames", lambda x: x[:, :, :16], r"'frames' expected \(batch, 4, 32, 32, 3\) uint8, got \(2, 4, 16, 32, 3\)"),
    ("mel", lambda x: x[:, :, :-1], r"'mel' expected \(batch, 32, 201\) float32"),
    ("mel", lambda x: x.astype(np.int16), r"'mel' expected .* float32, got .* int16"),
    ("present", lambda x: x[:1], r"'present' has batch 1, but 'image' has 2"),
])
def test_wrong_inputs_name_the_tensor(exported, name, bad, expect):
    rt = OrtPerception(exported[1], threads=1)
    x = clips(2)
    x[name] = bad(x[name])
    with pytest.raises(ValueError, match=expect):
        rt.run(**x)


def test_stage_inputs_are_checked_and_files_match_the_config(exported):
    out = exported[1]
    rt = OrtPerception(out, threads=1)
    with pytest.raises(ValueError, match=r"image_encoder: input 'image' expected \(batch, 3, 64, 64\) float32"):
        rt.encode_image(np.zeros((1, 3, 32, 32), np.float32))
    with pytest.raises(ValueError, match="fusion: expected inputs"):
        rt.run_graph("fusion", {"present": np.ones((1, 3), np.float32)})
    edge = load_preset("edge-small").model
    with pytest.raises(ValueError, match=r"fusion: inputs/outputs .* are not the io spec's .*'attributes'\]\)"):
        OrtPerception(out, edge, threads=1)  # edge-small's fusion graph also reads the attributes
    edge.head.attributes = edge.tokens.attributes = 0
    with pytest.raises(ValueError, match="do not match the io spec"):
        OrtPerception(out, edge, threads=1)  # the same outputs, other shapes
    with pytest.raises(ValueError, match="not available"):
        OrtPerception(out, providers=["NoSuchExecutionProvider"])


def test_io_spec_axes_profiles_and_round_trip():
    spec = build_io_spec(CFG)
    fusion = spec.graphs["fusion"]
    assert fusion.input_names == ["image_feats", "video_feats", "audio_feats", "present"]
    assert fusion.output_names == ["fused", "logits", "va", "tokens", "token_mask"]
    assert dynamic_axes(fusion)["tokens"] == {0: BATCH}
    assert trt_profile(spec.graphs["image_encoder"])["image"] == ((1, 3, 64, 64), (1, 3, 64, 64), (8, 3, 64, 64))
    feeds = dummy_inputs(fusion, batch=5)
    assert feeds["present"].shape == (5, 3) and feeds["present"].max(1).min() == 1
    assert all(a.dtype == np.float32 for a in feeds.values())
    assert IOSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="min_batch"):
        trt_profile(fusion, 2, 1, 8)


TORCH_FREE = """
import sys
sys.modules["torch"] = None  # any `import torch` now raises ImportError
import numpy as np
from emo_edge.runtime.perception import OrtPerception
rt = OrtPerception(sys.argv[1], threads=1)  # the spec from io_spec.json
np.savez(sys.argv[3], **rt.run(**np.load(sys.argv[2])))
assert sys.modules["torch"] is None
"""


def test_runtime_never_imports_torch(exported, tmp_path):
    perception, out, _ = exported
    x = clips(2)
    np.savez(tmp_path / "in.npz", **x)
    cmd = [sys.executable, "-c", TORCH_FREE, str(out), str(tmp_path / "in.npz"), str(tmp_path / "out.npz")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    got, want = np.load(tmp_path / "out.npz"), eager(perception, x)
    for name in ("fused", "logits", "va", "tokens", "token_mask"):
        assert rel_err(got[name], want[name]) <= RTOL, name


def test_merged_session_is_the_four_graphs_exactly(exported):
    """One merged session (the default) gives every output of the four sessions chained by name, bit for bit."""
    out = exported[1]
    x = clips(3)
    merged, chained = OrtPerception(out, threads=1), OrtPerception(out, threads=1, merged=False)
    got, want = merged.run(**x), chained.run(**x)
    assert sorted(got) == sorted(want) == sorted(
        ["fused", "logits", "va", "tokens", "token_mask", "image_feats", "video_feats", "audio_feats"])
    for name in want:
        assert got[name].dtype == want[name].dtype and np.array_equal(got[name], want[name]), name
    # stage runs still use each graph's own session, opened on first use
    assert np.array_equal(merged.encode_audio(preprocess(**x)["mel"]), want["audio_feats"])


def test_merge_rejects_a_graph_that_is_not_the_specs(exported, tmp_path):
    from emo_edge.runtime.merge import merge_perception

    out = exported[1]
    spec = as_io_spec(out / SPEC_FILE)
    models = {g: onnx.load(str(out / f"{g}.onnx")) for g in GRAPHS}
    with pytest.raises(ValueError, match=r"missing graph\(s\) \['fusion'\]"):
        merge_perception({g: m for g, m in models.items() if g != "fusion"}, spec)
    models["audio_encoder"].graph.output[0].name = "sound_feats"
    with pytest.raises(ValueError, match="audio_encoder: inputs/outputs .* not the io spec's"):
        merge_perception(models, spec)
    # a bundle directory with a renamed tensor fails at load with the directory named
    bad = tmp_path / "bad"
    bad.mkdir()
    for g in GRAPHS:
        onnx.save(models[g], str(bad / f"{g}.onnx"))
    (bad / SPEC_FILE).write_text((out / SPEC_FILE).read_text())
    with pytest.raises(ValueError, match=f"{bad}: audio_encoder"):
        OrtPerception(bad, threads=1)


def test_numpy_blas_is_held_to_one_thread_in_a_fresh_process():
    code = ("import numpy as np; from threadpoolctl import threadpool_info; "
            "from emo_edge.process import limit_numpy_blas; "
            "info = limit_numpy_blas(1); print(len(info), min(i['num_threads'] for i in threadpool_info() "
            "if i['user_api'] == 'blas'))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    n_libs, threads = map(int, proc.stdout.split())
    assert n_libs >= 1 and threads == 1
    with pytest.raises(ValueError, match="threads must be >= 1"):
        from emo_edge.process import limit_numpy_blas

        limit_numpy_blas(0)


def test_tune_process_sets_glibc_malloc_and_blas_in_a_fresh_process():
    code = ("import json; from emo_edge.process import tune_process; print(json.dumps(tune_process()))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    import json

    got = json.loads(proc.stdout)
    assert got["glibc_malloc_tuned"] is True  # Debian's glibc accepts the three mallopt settings
    assert got["numpy_blas"] and all(b["num_threads"] == 1 for b in got["numpy_blas"])
