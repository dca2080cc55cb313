"""edge-base: real-size shapes (SigLIP-B/16, Whisper-base) built from configs; random weights only when asked; export
through the same path (parity vs eager, ONNX Runtime's fusions, the transformer INT8 layout) and the external-data
format for paper-shaped encoders. The graphs here run at reduced depth (and, for paper, a shorter window and fewer
frames) so the suite stays cheap; the real-size ones are timed by scripts/bench_edge_base.sh."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from emo_edge.config import load_preset, to_dict


def reduced(name: str, depth: int = 1, **frontend) -> dict:
    """A preset's dict with every encoder at `depth` layers (widths, heads, patch and MLP kept)."""
    p = to_dict(load_preset(name))
    m = p["model"]
    for enc in (m["image_encoder"], m["video_encoder"]["frame"], m["audio_encoder"]):
        enc["depth"] = depth
    m["video_encoder"]["temporal_depth"] = 1
    m["frontend"].update(frontend)
    return p


def write_preset(p: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(p))
    return path


def test_edge_base_has_the_siglip_b16_and_whisper_base_shapes():
    from emo_edge.model.backbones import SiglipTower, WhisperAudioEncoder
    from emo_edge.model.perception import Perception
    from emo_edge.runtime.io_spec import sizes

    cfg = load_preset("edge-base").model
    with torch.device("meta"):
        perc = Perception(cfg, cfg.llm.hidden, allow_random=True)
    for tower, size in ((perc.image_encoder.vit, 224), (perc.video_encoder.frame, 64)):
        assert isinstance(tower, SiglipTower)
        c = tower.model.config
        assert (c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.intermediate_size, c.patch_size,
                c.image_size) == (768, 12, 12, 3072, 16, size)
    assert isinstance(perc.audio_encoder, WhisperAudioEncoder)
    c = perc.audio_encoder.encoder.config
    assert (c.d_model, c.encoder_layers, c.encoder_attention_heads, c.encoder_ffn_dim, c.num_mel_bins) == (
        512, 6, 8, 2048, 80)
    assert c.max_source_positions == 200  # the 4 s window's positions, not Whisper's 1500 (30 s)
    z = sizes(cfg)
    assert (z["Ni"], z["Wi"], z["Nv"], z["Wv"], z["Na"], z["Wa"]) == (196, 768, 8, 768, 200, 512)


def test_edge_small_is_unchanged_by_the_new_fields():
    """The shipped default's config loads as before: built-in encoders, no random-weight question."""
    from emo_edge.checkpoint import DEFAULT_CHECKPOINT
    from emo_edge.config import load_model_config
    from emo_edge.model.perception import random_towers

    for cfg in (load_preset("edge-small").model, load_model_config(DEFAULT_CHECKPOINT / "config.yaml")):
        assert (cfg.image_encoder.arch, cfg.video_encoder.frame.arch, cfg.audio_encoder.arch) == ("builtin",) * 3
        assert not cfg.audio_encoder.cut_to_window and random_towers(cfg) == []


def test_random_weights_are_refused_unless_asked(tmp_path):
    from emo_edge.checkpoint import init_checkpoint
    from emo_edge.model.perception import Perception

    cfg = load_preset("edge-base").model
    with pytest.raises(ValueError, match=r"image_encoder \(arch siglip\).*audio_encoder \(arch whisper\).*"
                                         r"--random-weights"):
        Perception(cfg, 256)
    with pytest.raises(ValueError, match="--random-weights"):
        init_checkpoint("edge-base", tmp_path / "ckpt")
    assert not (tmp_path / "ckpt").exists()
    from typer.testing import CliRunner

    from emo_edge.cli import app

    res = CliRunner().invoke(app, ["init", "--preset", "edge-base", "--out", str(tmp_path / "ckpt")])
    assert res.exit_code == 2 and "--random-weights" in res.output and not (tmp_path / "ckpt").exists()
    with pytest.raises(ValueError, match="arch 'vit' is not valid; options: builtin, siglip"):
        dataclasses.replace(cfg.image_encoder, arch="vit")


@pytest.fixture(scope="module")
def base_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """edge-base at depth 1 (real widths), random weights, the shipped default's LLM."""
    from emo_edge.checkpoint import init_checkpoint

    work = tmp_path_factory.mktemp("edge-base")
    with pytest.warns(UserWarning, match="prompts it without them"):  # edge-base has no attribute head
        return init_checkpoint(write_preset(reduced("edge-base"), work / "edge-base-d1.yaml"), work / "ckpt",
                               random_weights=True)


@pytest.fixture(scope="module")
def base_export(base_ckpt: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    from emo_edge.checkpoint import load_checkpoint
    from emo_edge.export.onnx_export import export_perception

    out = tmp_path_factory.mktemp("edge-base-onnx")
    with pytest.warns(UserWarning, match="RANDOM perception weights"):
        model = load_checkpoint(base_ckpt)
    return out, export_perception(model, None, out, threads=2)


def test_init_records_random_weights_and_the_bundle_manifest_carries_it(base_ckpt):
    from emo_edge.checkpoint import read_meta
    from emo_edge.export.bundle import _trained

    meta = read_meta(base_ckpt)
    assert meta["random_weights"] is True
    assert meta["random_towers"] == ["image_encoder (arch siglip)", "video_encoder.frame (arch siglip)",
                                     "audio_encoder (arch whisper)"]
    assert _trained(meta) == {"preset": meta["preset"], "seed": 0, "random_weights": True}
    assert _trained({"preset": "edge-small", "seed": 0}) == {"preset": "edge-small", "seed": 0}


def test_init_without_an_attribute_head_prompts_an_evidence_llm_without_the_readings(base_ckpt):
    """The default's LLM reads the attribute head's readings (llm.evidence); edge-base has no attribute head, so its
    checkpoint turns the words off and says so in meta.json, rather than a config that cannot load. Mutated (the
    flag kept), the fixture fails: ModelConfig refuses evidence without a head."""
    from emo_edge.checkpoint import DEFAULT_CHECKPOINT, read_meta
    from emo_edge.config import load_model_config

    assert load_model_config(DEFAULT_CHECKPOINT / "config.yaml").llm.evidence
    cfg = load_model_config(base_ckpt / "config.yaml")
    assert cfg.head.attributes == 0 and not cfg.llm.evidence
    assert read_meta(base_ckpt)["llm_evidence_dropped"] is True


def test_edge_base_exports_with_parity_and_onnx_runtime_fuses_its_norms(base_export):
    from emo_edge.export.ort_fusions import fusion_report

    out, report = base_export
    assert report["parity"]["worst"]["max_rel_err"] <= 1e-4
    fused = fusion_report(out, ["image_encoder", "audio_encoder"])
    # depth 1: the block's two LayerNorms and the tower's final one, fused (alone, or with the residual Add)
    for graph in ("image_encoder", "audio_encoder"):
        norms = fused[graph].get("LayerNormalization", 0) + fused[graph].get("SkipLayerNormalization", 0)
        assert norms == 3, (graph, fused[graph])


def test_transformer_int8_layout_runs_integer_matmuls(base_export, tmp_path):
    from emo_edge.export.ort_fusions import fusion_counts
    from emo_edge.export.quantize import QuantSettings, calibrate, compare_int8
    from emo_edge.runtime.io_spec import SPEC_FILE, as_io_spec, dummy_inputs

    fp32, _ = base_export
    spec = as_io_spec(fp32 / SPEC_FILE)
    clips = dummy_inputs(spec.runtime_inputs, 6, seed=3)
    clips["present"] = np.ones((6, 3), np.float32)
    summary = calibrate(fp32, clips, tmp_path, graphs=["image_encoder", "audio_encoder"],
                        settings=QuantSettings(layout="transformer"), threads=2)
    assert summary["settings"]["ops"] == ["MatMul", "Gemm"] and summary["settings"]["activations"] == "uint8"
    img = summary["graphs"]["image_encoder"]
    assert img["per_channel_weights"] == 6  # depth 1: q, k, v, out, fc1, fc2
    # every weight MatMul runs as one integer kernel with a float output; nothing left as QLinear* or float MatMul
    ops = fusion_counts(tmp_path / spec.graphs["image_encoder"].filename)
    assert ops.get("MatMulIntegerToFloat") == 6 and "QLinearMatMul" not in ops, ops
    check = compare_int8(fp32, tmp_path, clips, threads=2)
    assert check["fused_min_cosine"] >= 0.99


def test_whisper_cut_to_window_takes_the_first_positions(tmp_path):
    from transformers import WhisperConfig, WhisperModel

    from emo_edge.config import AudioEncoderConfig
    from emo_edge.model.backbones import WhisperAudioEncoder

    torch.manual_seed(0)
    cfg = WhisperConfig(num_mel_bins=16, d_model=32, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=64,
                        decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=64, vocab_size=64,
                        max_source_positions=150, max_target_positions=16, pad_token_id=0, bos_token_id=1,
                        eos_token_id=2, decoder_start_token_id=1, suppress_tokens=[], begin_suppress_tokens=[])
    WhisperModel(cfg).save_pretrained(tmp_path / "w")
    full = WhisperModel.from_pretrained(tmp_path / "w").get_encoder().embed_positions.weight
    ac = AudioEncoderConfig(width=32, heads=2, downsample=2, path=str(tmp_path / "w"), cut_to_window=True)
    enc = WhisperAudioEncoder(ac, n_mels=16, n_mel_frames=101)  # a 1 s window: 50 of the 150 positions
    torch.testing.assert_close(enc.encoder.embed_positions.weight, full[:50])
    assert enc(torch.randn(2, 16, 101)).shape == (2, 50, 32)
    with pytest.raises(ValueError, match="cut_to_window"):
        WhisperAudioEncoder(dataclasses.replace(ac, cut_to_window=False), n_mels=16, n_mel_frames=101)


def test_paper_shaped_encoders_export_with_external_data(tmp_path):
    """The paper's encoder widths, heads and patches at depth 1, 112 px views, a 1 s window and 2 frames; external
    data forced."""
    from emo_edge.config import Preset, from_dict
    from emo_edge.export.onnx_export import export_perception
    from emo_edge.model.perception import Perception

    p = reduced("paper", window_seconds=1.0, n_frames=2, image_size=112, frame_size=112)
    p["model"]["tokens"].update(image=16, video=8, audio=16)  # an 8 x 8 grid; 2 frames x 4 tokens; 51 audio tokens
    cfg = from_dict(Preset, p).model
    torch.manual_seed(0)
    perc = Perception(cfg, llm_width=64).eval()
    report = export_perception(perc, cfg, tmp_path, threads=2, external_data_bytes=1_000_000)
    for name, rec in report["files"].items():
        graph, data = tmp_path / rec["file"], tmp_path / rec["data"]
        assert rec["data"] == rec["file"] + ".data" and data.stat().st_size > 1_000_000, name
        assert graph.stat().st_size < data.stat().st_size / 10, name  # the weights live in the .data file
        # readable by whoever can read the graph (a node running as another user loads both)
        assert data.stat().st_mode & 0o777 == graph.stat().st_mode & 0o777, name
    assert report["parity"]["worst"]["max_rel_err"] <= 1e-4
    assert json.loads((tmp_path / "io_spec.json").read_text())["graphs"]["image_encoder"]


def test_edge_base_targets_carry_the_issues_goals():
    from types import SimpleNamespace

    from emo_edge.bench.analysis import targets

    parity = SimpleNamespace(perception_fp32_vs_torch={"worst": {"max_rel_err": 3e-5}},
                             perception_int8_vs_fp32={"fused_min_cosine": 0.985, "n": 8, "label_agreement": 0.5})
    m = SimpleNamespace(checkpoint=SimpleNamespace(name="edge-base"), perception_entry="int8", default_quant="q8_0",
                        parity=parity, perception={})
    stages = {"torch-eager-fp32": 900.0, "ort-cpu-fp32": 500.0, "ort-cpu-int8": 300.0}
    backends = {k: {"stages": {"perception": {"p50_ms": v}, "fast_path": {"p50_ms": v, "p95_ms": v * 1.1}}}
                for k, v in stages.items()}
    roofline = {"stages": [{"backend": "ort-cpu-int8", "stage": "perception", "p50_ms": 300.0, "flops": 65e9,
                            "fraction_of_bound": 0.5, "bound_ms": 150.0}]}
    t = {x["target"]: x for x in targets(backends, {"max_spread": 0.05}, None, m, roofline)}
    int8 = t["INT8 QDQ >= 1.5x ONNX Runtime fp32 (perception p50)"]
    assert int8["value"] == pytest.approx(500 / 300) and int8["met"] is True
    fast = t["fast path p95 <= 250 ms per update (ort-cpu-int8, 30 fps window)"]
    assert fast["value"] == pytest.approx(330.0) and fast["met"] is False and "50 % of this machine's roofline" in \
        fast["detail"]
    assert t["ONNX fp32 vs eager PyTorch: max rel. error <= 0.0001"]["met"] is True
    assert t["INT8 vs fp32: fusion-token cosine >= 0.99 (real clips)"]["met"] is False
    m.checkpoint.name = "edge-small"  # the default's goals and its five targets, unchanged
    t = [x["target"] for x in targets(backends, {"max_spread": 0.05}, None, m, roofline)]
    assert len(t) == 5 and "INT8 QDQ >= 1.3x ONNX Runtime fp32 (perception p50)" in t


def test_docs_page_keeps_named_sections(tmp_path, monkeypatch):
    from emo_edge.bench import report

    monkeypatch.setattr(report, "docs_markdown", lambda r: f"# Benchmarks\n\nmain run {r['n']}\n")
    monkeypatch.setattr(report, "section_markdown", lambda r, name: "\n".join(
        [report.SECTION.format("BEGIN", name), f"{name} run {r['n']}", report.SECTION.format("END", name)]))
    page = tmp_path / "benchmarks.md"
    report.update_docs(page, {"n": 1})
    report.update_docs(page, {"n": 2}, section="edge-base")
    report.update_docs(page, {"n": 3})  # the default's rerun rewrites its part and keeps edge-base's
    text = page.read_text()
    assert "main run 3" in text and "edge-base run 2" in text and "main run 1" not in text
    report.update_docs(page, {"n": 4}, section="edge-base")
    assert list(report.sections(page.read_text())) == ["edge-base"]
    assert "edge-base run 4" in page.read_text() and "edge-base run 2" not in page.read_text()
