"""INT8 QDQ graphs from real calibration clips, and export profiles.

The tiny checkpoint is barely trained (a few steps), so its head is near chance: these tests check
that INT8 keeps what fp32 decides (label agreement), not that either is accurate.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from emo_edge.config import load_preset
from emo_edge.export.profiles import list_profiles, load_profile, profile_from_dict
from emo_edge.runtime.io_spec import GRAPHS, SPEC_FILE, as_io_spec

onnx = pytest.importorskip("onnx")  # the `export` extra
pytest.importorskip("onnxruntime")

from emo_edge.export.quantize import (  # noqa: E402  (after the importorskip of its dependencies)
    SUMMARY_FILE,
    QuantSettings,
    calibrate,
    compare_int8,
    frontend_for,
    load_calibration_set,
    load_manifest,
    presence,
)
from emo_edge.runtime.perception import OrtPerception  # noqa: E402

MIN_AGREEMENT = 0.8  # head labels, int8 vs fp32


@pytest.fixture(scope="module")
def fp32_dir(tiny_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from emo_edge.checkpoint import load_checkpoint
    from emo_edge.export.onnx_export import export_perception

    out = tmp_path_factory.mktemp("fp32")
    export_perception(load_checkpoint(tiny_ckpt), None, out, threads=1)
    return out


@pytest.fixture(scope="module")
def manifest(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("calib") / "tiny-val.yaml"
    path.write_text(yaml.safe_dump({"data": str(synth_dir), "split": "val", "n_clips": 12, "seed": 0}))
    return path


@pytest.fixture(scope="module")
def int8(fp32_dir: Path, manifest: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("int8")
    return out, calibrate(fp32_dir, manifest, out, settings=QuantSettings(batch_size=4), threads=1)


@pytest.fixture(scope="module")
def test_clips(fp32_dir: Path, synth_dir: Path):
    from emo_edge.data.features import load_features

    return load_features(synth_dir / "test.jsonl", frontend_for(as_io_spec(fp32_dir / SPEC_FILE)), workers=1,
                         progress=False)


def io_of(path: Path) -> list[tuple[str, int, str]]:
    """(name, rank, batch axis) of each graph input and output as the file declares them."""
    model = onnx.load(str(path))
    return [(v.name, len(v.type.tensor_type.shape.dim), v.type.tensor_type.shape.dim[0].dim_param)
            for v in (*model.graph.input, *model.graph.output)]


def test_qdq_graphs_are_written_with_the_same_io(int8, fp32_dir):
    out, summary = int8
    assert as_io_spec(out / SPEC_FILE) == as_io_spec(fp32_dir / SPEC_FILE)
    for name in GRAPHS:
        path = out / f"{name}.onnx"
        onnx.checker.check_model(str(path), full_check=True)
        ops = {n.op_type for n in onnx.load(str(path)).graph.node}
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops, name
        assert io_of(path) == io_of(fp32_dir / f"{name}.onnx"), name  # full shapes: OrtPerception checks them
        graph = summary["graphs"][name]
        assert graph["precision"] == "int8" and graph["quantize_nodes"] > 0 and graph["per_channel_weights"] > 0
        assert all(lo < 0 < hi for lo, hi in graph["activation_ranges"].values()), name  # symmetric int8
    assert json.loads((out / SUMMARY_FILE).read_text()) == summary
    assert not list(out.glob("*.tmp.onnx"))


def test_calibration_record_names_the_clips(int8):
    clips = int8[1]["clips"]
    assert clips["source"] == "manifest" and clips["n"] == 12 == len(clips["ids"])
    assert all(i.startswith("synthemo-val-") for i in clips["ids"])
    assert sum(clips["presence"].values()) == 12
    settings = int8[1]["settings"]
    assert settings["format"] == "QDQ" and settings["activations"] == "int8" and settings["method"] == "minmax"
    assert settings["extra_options"]["ActivationSymmetric"] and not settings["extra_options"]["QuantizeBias"]


def test_int8_runs_in_the_runtime_and_agrees_with_fp32(int8, fp32_dir, test_clips):
    out, _ = int8
    n = len(test_clips)
    present = np.ones((n, 3), np.float32)
    got = OrtPerception(out, threads=1).run(test_clips.image, test_clips.frames, test_clips.mel, present)
    assert got["tokens"].shape[0] == n and np.isfinite(got["tokens"]).all()
    report = compare_int8(fp32_dir, out, test_clips, threads=1)
    print("int8 vs fp32 on the tiny test split:", json.dumps(report))  # shown with pytest -s
    assert report["n"] == n and report["labelled"] == n
    assert report["label_agreement"] >= MIN_AGREEMENT, report
    assert abs(report["accuracy_int8"] - report["accuracy_fp32"]) <= 1 - MIN_AGREEMENT, report
    assert report["tokens_max_rel_diff"] < 0.25 and report["fused_max_rel_diff"] < 0.25, report


def test_cpu_layout_quantizes_convs_for_onnx_runtimes_integer_kernels(fp32_dir, test_clips, tmp_path):
    """The cpu layout: Conv only, uint8 activations, a Q/DQ pair after each Conv (so ONNX Runtime fuses
    DQ -> Conv -> Q into QLinearConv); weight MatMuls stay float. The tensorrt layout (the `int8` fixture)
    quantizes the weight MatMuls and puts no Q/DQ after a weighted op."""
    encoders = ["image_encoder", "video_encoder", "audio_encoder"]
    summary = calibrate(fp32_dir, test_clips, tmp_path, n=6, graphs=encoders,
                        settings=QuantSettings(layout="cpu", batch_size=3), threads=1)
    assert summary["settings"]["layout"] == "cpu" and summary["settings"]["activations"] == "uint8"
    assert summary["settings"]["ops"] == ["Conv"] and "OpTypesToExcludeOutputQuantization" not in \
        summary["settings"]["extra_options"]
    for name in encoders:
        model = onnx.load(str(tmp_path / f"{name}.onnx"))
        producer = {o: n for n in model.graph.node for o in n.output}
        convs = [n for n in model.graph.node if n.op_type == "Conv"]
        assert convs, name
        for conv in convs:  # every input of every Conv is dequantized
            assert all(producer[i].op_type == "DequantizeLinear" for i in conv.input[:2] if i in producer), name
        consumers = [n for n in model.graph.node if convs[0].output[0] in n.input]
        assert any(n.op_type == "QuantizeLinear" for n in consumers), name  # output Q/DQ: fusable
        matmul_inputs = [i for n in model.graph.node if n.op_type == "MatMul" for i in n.input]
        assert not any(producer.get(i) is not None and producer[i].op_type == "DequantizeLinear"
                       for i in matmul_inputs), name
        zps = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.UINT8]
        assert zps, name  # uint8 activation zero points
    report = compare_int8(fp32_dir, tmp_path, test_clips, threads=1)
    assert report["label_agreement"] >= MIN_AGREEMENT, report
    with pytest.raises(ValueError, match="QuantSettings.layout: 'gpu' is not valid; options: tensorrt, cpu"):
        QuantSettings(layout="gpu")
    assert QuantSettings().activations == "int8"
    assert QuantSettings(layout="cpu", activations="int8").activations == "int8"


def test_graphs_left_out_are_copied_as_fp32(fp32_dir, test_clips, tmp_path):
    summary = calibrate(fp32_dir, test_clips, tmp_path, n=6, graphs=["audio_encoder"], threads=1)
    assert summary["clips"]["n"] == 6 and summary["clips"]["source"] == "FeatureSet"
    for name in GRAPHS:
        same = (tmp_path / f"{name}.onnx").read_bytes() == (fp32_dir / f"{name}.onnx").read_bytes()
        assert same == (name != "audio_encoder"), name
        assert summary["graphs"][name]["precision"] == ("int8" if name == "audio_encoder" else "fp32")
    OrtPerception(tmp_path, threads=1)
    with pytest.raises(ValueError, match=r"unknown graph\(s\) \['decoder'\]"):
        calibrate(fp32_dir, test_clips, tmp_path, graphs=["decoder"])


def test_manifest_draws_are_seeded_prefixes(manifest, fp32_dir, tmp_path):
    m = load_manifest(manifest)
    fe = frontend_for(as_io_spec(fp32_dir / SPEC_FILE))
    four, eight = load_calibration_set(m, fe, n=4), load_calibration_set(m, fe, n=8)
    assert {r.id for r in four.records} <= {r.id for r in eight.records}
    assert four.image.dtype == np.uint8 and four.mel.dtype == np.float16
    p = presence(400, 0.25, seed=0)
    assert 0.15 < float((p.min(1) == 0).mean()) < 0.35 and np.array_equal(p[:, 0], p[:, 1])
    shipped = load_manifest(Path(__file__).resolve().parents[1] / "calibration" / "synthemo-val.yaml")
    assert shipped.split == "val" and Path(shipped.data).name == "synthemo-v2"  # the data the default trained on
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: x\nclips: 3\n")
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['clips'\]"):
        load_manifest(bad)


def test_bad_settings_and_frontends_are_named(fp32_dir):
    with pytest.raises(ValueError, match="method: 'kl' is not valid; options: minmax, entropy, percentile"):
        QuantSettings(method="kl")
    with pytest.raises(ValueError, match="QuantSettings.activations: 'int4' is not valid"):
        QuantSettings(activations="int4")
    with pytest.raises(ValueError, match="do not match the exported graphs"):
        frontend_for(as_io_spec(fp32_dir / SPEC_FILE), load_preset("edge-small").model)


# ---------------------------------------------------------------------------------------------
# export profiles
# ---------------------------------------------------------------------------------------------


def test_shipped_profiles_load_and_fit_edge_small():
    assert {"cpu-x86", "jetson-orin-agx", "jetson-orin-nano"} <= set(list_profiles())
    cfg = load_preset("edge-small").model
    for name in list_profiles():
        p = load_profile(name)
        assert p.name == name and sorted(p.perception.precision) == sorted(GRAPHS)
        p.check_model(cfg)
    nano = load_profile("jetson-orin-nano")
    assert nano.perception.graphs_at("int8") == ["image_encoder", "video_encoder", "audio_encoder"]
    assert nano.llm.quantization == "q4_k_m" and nano.llm.n_gpu_layers == -1
    assert load_profile("cpu-x86").perception.providers == ["CPUExecutionProvider"]
    # the live stream's CPU split: on the 2-core CPU the LLM decodes on one core and pauses for the fast path
    assert load_profile("cpu-x86").runtime.llm_threads == 1 and nano.runtime.llm_pause_for_fast
    # the int8 QDQ layout follows the runtime: TensorRT's rules on a Jetson, ONNX Runtime's CPU kernels on x86
    assert load_profile("cpu-x86").perception.quant_layout == "cpu"
    assert nano.perception.quant_layout == load_profile("jetson-orin-agx").perception.quant_layout == "tensorrt"


def test_profile_by_path(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({"llm": {"quantization": "f16"}}))
    p = load_profile(path)
    assert p.name == "mine" and p.llm.quantization == "f16" and p.perception.backend == "onnxruntime"
    with pytest.raises(ValueError, match="unknown export profile 'nope'; available: .*cpu-x86"):
        load_profile("nope")


BASE = yaml.safe_load((Path(__file__).resolve().parents[1] / "export" / "cpu-x86.yaml").read_text())


@pytest.mark.parametrize("section, key, value, expect", [
    ("perception", "backend", "openvino", r"perception.backend: 'openvino' is not valid; options: onnxruntime, "
                                          "tensorrt"),
    ("perception", "providers", ["CoreMLExecutionProvider"], r"perception.providers: 'CoreMLExecutionProvider'"),
    ("perception", "precision", {"image_encoder": "int4"}, r"perception.precision: need one entry per graph"),
    ("perception", "precision", dict.fromkeys(GRAPHS, "bf16"), r"precision.image_encoder: 'bf16' is not valid; "
                                                               "options: fp32, fp16, int8"),
    ("perception", "precision", dict.fromkeys(GRAPHS, "fp16"), r"fp16 .* needs TensorRT"),
    ("perception", "threads", 0, r"perception.threads: must be an integer >= 1, got 0"),
    ("perception", "int8_layout", "vnni", r"perception.int8_layout: 'vnni' is not valid; options: auto, tensorrt, cpu"),
    ("llm", "quantization", "q5_k", r"llm.quantization: 'q5_k' is not valid; options: f16, q8_0, q4_k_m"),
    ("llm", "n_gpu_layers", -2, r"llm.n_gpu_layers: must be an integer >= -1"),
    ("tensorrt", "max_batch", 0, r"tensorrt: need 1 <= min_batch <= opt_batch <= max_batch"),
    ("llm", "n_batch", 8, r"llm: unknown key\(s\) \['n_batch'\]"),
    ("runtime", "llm_threads", 0, r"runtime.llm_threads: must be an integer >= 1, got 0"),
    ("runtime", "llm_pause_for_fast", "yes", r"runtime.llm_pause_for_fast: must be true or false"),
])
def test_bad_profiles_name_the_field(tmp_path, section, key, value, expect):
    data = json.loads(json.dumps(BASE))
    data[section][key] = value
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match=expect):
        load_profile(path)


def test_token_budget_must_be_the_checkpoints():
    edge = load_preset("edge-small").model
    fusion_only = profile_from_dict({"tokens": {"fusion": 16, "image": 0, "video": 0, "audio": 0}}, name="nano16")
    with pytest.raises(ValueError, match="trained with .* needs retraining"):
        fusion_only.check_model(edge)
    same = profile_from_dict({"tokens": {"fusion": 16, "image": 16, "video": 8, "audio": 8, "attributes": 10}},
                             name="same")
    same.check_model(edge)
    no_attributes = profile_from_dict({"tokens": {"fusion": 16, "image": 16, "video": 8, "audio": 8}}, name="old")
    with pytest.raises(ValueError, match="'attributes': 0}.* 'attributes': 10}; a different budget needs retraining"):
        no_attributes.check_model(edge)
    with pytest.raises(ValueError, match="tokens.image must be a square number"):
        profile_from_dict({"tokens": {"fusion": 4, "image": 3, "video": 0, "audio": 0}})
    with pytest.raises(ValueError, match=r"tokens: expected a mapping over"):
        profile_from_dict({"tokens": {"text": 4}})
    with pytest.raises(ValueError, match="exceeds the model's llm.max_position=256"):
        load_profile("cpu-x86").check_model(load_preset("tiny").model)


def test_profiles_import_without_torch(tmp_path):
    import subprocess
    import sys

    code = ("import sys; sys.modules['torch'] = None\n"
            "from emo_edge.export.profiles import load_profile; import emo_edge.export.quantize\n"
            "import emo_edge.export.tensorrt\nprint(load_profile('jetson-orin-nano').llm.quantization)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "q4_k_m", proc.stderr
