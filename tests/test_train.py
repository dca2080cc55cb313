"""Training, checkpoints, resume, DDP and evaluation on a tiny preset over real SynthEmo clips."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from emo_edge import checkpoint as ck
from emo_edge.checkpoint import load_checkpoint
from emo_edge.eval.evaluate import evaluate_checkpoint
from emo_edge.eval.metrics import classification_report, parse_label, reason_conclusion

REPORT_KEYS = {"n", "acc", "waf", "uar", "war", "cue_recall", "cue_precision", "answer_reason_consistency", "per_class"}


def test_checkpoint_layout_and_reload(tiny_ckpt):
    for name in (ck.CONFIG_FILE, ck.PERCEPTION_FILE, ck.META_FILE, "llm/config.json", "llm/tokenizer.model",
                 "lora/adapter_config.json", "log.jsonl"):
        assert (tiny_ckpt / name).is_file(), name
    rows = [json.loads(line) for line in (tiny_ckpt / "log.jsonl").read_text().splitlines()]
    assert {r["stage"] for r in rows} == {0, 1, 2}
    model = load_checkpoint(tiny_ckpt)
    assert model.cfg.name == "tiny" and any("lora_" in n for n, _ in model.llm.named_parameters())
    merged = load_checkpoint(tiny_ckpt, merge=True)
    assert not any("lora_" in n for n, _ in merged.llm.named_parameters())


def test_stage0_lowers_the_lm_loss(tiny_ckpt):
    rows = [json.loads(line) for line in (tiny_ckpt / "log.jsonl").read_text().splitlines()]
    losses = [r["lm_loss"] for r in rows if r["stage"] == 0 and "lm_loss" in r]  # training rows, not validation
    assert losses[-1] < losses[0]
    val = [r["val_lm_loss"] for r in rows if r["stage"] == 0 and "val_lm_loss" in r]
    assert len(val) == 2 and val[-1] < val[0]  # tiny: 6 steps, validated after steps 4 and 6


def _stage0_rows(out) -> dict[int, tuple[float, float]]:
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return {r["step"]: (r["lm_loss"], r["grad_norm"]) for r in rows if r["stage"] == 0 and "lm_loss" in r}


def test_stage0_stopped_and_resumed_repeats_the_uninterrupted_run(synth_dir, tmp_path):
    """Stage 0 goes through the one training loop: it validates, checkpoints its LLM with the train state, and a
    run stopped inside it (stop_after) and resumed repeats the uninterrupted one exactly: every logged loss and
    gradient norm, and the saved weights byte for byte (the text source replays its draws up to the position, the
    optimizer state is restored). Before, stage 0 had its own loop: no checkpoint until its end, no resume."""
    import torch

    from emo_edge.train.loop import STATE_FILE, train

    sched = {"lm_steps": 8, "log_every": 1, "eval_every": 3}
    full, cut = tmp_path / "full", tmp_path / "cut"
    train("tiny", synth_dir, full, stages=(0,), progress=False, overrides=sched)
    train("tiny", synth_dir, cut, stages=(0,), progress=False, overrides={**sched, "stop_after": 5})
    state = torch.load(cut / STATE_FILE, weights_only=False)
    assert (state["stage"], state["step"], state["data"]["batches"]) == (0, 5, 5)
    assert sorted(_stage0_rows(cut)) == [0, 1, 2, 3, 4]
    train("tiny", synth_dir, cut, stages=(0,), resume=True, progress=False, overrides=sched)
    assert _stage0_rows(cut) == _stage0_rows(full) and len(_stage0_rows(full)) == 8
    weights = "llm/model.safetensors"
    assert (cut / weights).read_bytes() == (full / weights).read_bytes()
    val = [json.loads(line) for line in (full / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in val if "val_lm_loss" in r] == [2, 5, 7]


def test_stage0_accumulation_equals_the_larger_batch(synth_dir, tmp_path):
    """Two micro-batches of 2 draw the same 4 sequences as one batch of 4, and the step's loss is the mean over
    every predicted token of the window, so the curves agree (float32 rounding apart)."""
    from emo_edge.train.loop import train

    base = {"lm_steps": 3, "log_every": 1}
    big, acc = tmp_path / "big", tmp_path / "acc"
    train("tiny", synth_dir, big, stages=(0,), progress=False, overrides={**base, "batch_size": 4})
    train("tiny", synth_dir, acc, stages=(0,), progress=False, overrides={**base, "batch_size": 2, "grad_accum": 2})
    a, b = _stage0_rows(big), _stage0_rows(acc)
    assert sorted(a) == sorted(b) == [0, 1, 2]
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=1e-5), step


def test_merged_and_adapter_models_agree(tiny_ckpt, synth_dir):
    import torch

    from emo_edge.data.features import load_features
    from emo_edge.model.inputs import to_batch

    a, b = load_checkpoint(tiny_ckpt), load_checkpoint(tiny_ckpt, merge=True)
    fs = load_features(synth_dir / "test.jsonl", a.cfg.frontend, limit=2, progress=False)
    on = np.ones(2, bool)
    batch = to_batch(fs.frames, fs.image, fs.mel, on, on, ["emotion"] * 2, [r.subtitle for r in fs.records],
                     [r.label for r in fs.records])
    with torch.no_grad():
        assert torch.allclose(a(batch)["lm_loss"], b(batch)["lm_loss"], atol=1e-4)


def test_eval_report_keys_and_png(tiny_ckpt, synth_dir, tmp_path):
    out = tmp_path / "eval.json"
    r = evaluate_checkpoint(tiny_ckpt, synth_dir, "llm", ("video", "audio", "text"), out, progress=False)
    saved = json.loads(out.read_text())
    assert REPORT_KEYS <= set(saved) and saved["n"] == r["n"] == 12
    assert set(saved["per_class"]) >= {"happy", "sad"}
    # the scores are those of the per-clip answers and reasons the report lists, recomputed here
    preds = saved["predictions"]
    truth, llm = [p["label"] for p in preds], [parse_label(p["answer"]) for p in preds]
    expected = classification_report(truth, llm)
    for key in ("acc", "waf", "uar", "war", "n_unparsed"):
        assert saved[key] == pytest.approx(expected[key]), key
    assert saved["head_acc"] == pytest.approx(np.mean([p["head"] == p["label"] for p in preds]))
    assert saved["answer_reason_consistency"] == pytest.approx(
        np.mean([a is not None and a == reason_conclusion(p["reason"]) for a, p in zip(llm, preds, strict=True)]))
    assert saved["cue_precision"] is None  # v1 records carry no cue options
    assert (tmp_path / "eval.confusion.png").stat().st_size > 1000
    head = evaluate_checkpoint(tiny_ckpt, synth_dir, "head", ("audio",), None, progress=False)
    assert head["cue_recall"] is None and head["modalities"] == ["audio"]


def test_resume_skips_finished_stages(synth_dir, tmp_path):
    from emo_edge.train.loop import train

    out = tmp_path / "r"
    train("tiny", synth_dir, out, stages=(0, 1), progress=False)
    n_before = len((out / "log.jsonl").read_text().splitlines())
    train("tiny", synth_dir, out, stages=(0, 1, 2), resume=True, progress=False)
    new = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()[n_before:]]
    assert new and {r["stage"] for r in new} == {2}


def test_ddp_two_gloo_ranks_stay_identical(synth_dir, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "emo_edge.train", "--preset", "tiny", "--data", str(synth_dir), "--out", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    meta = json.loads((out / ck.META_FILE).read_text())
    sums = meta["rank_param_checksums"]
    assert meta["world_size"] == 2 and len(sums) == 2
    assert sums[0] == pytest.approx(sums[1], rel=1e-12)


def test_bad_clips_are_reported_and_skipped(synth_dir, tmp_path):
    import shutil

    from emo_edge.data.features import load_features
    from emo_edge.data.schema import read_jsonl, write_jsonl

    recs = read_jsonl(synth_dir / "test.jsonl")[:4]
    for r in recs:
        for p in (r.video, r.audio):
            (tmp_path / p).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(synth_dir / p, tmp_path / p)
    (tmp_path / recs[0].video).write_bytes(b"garbage")  # unreadable video
    (tmp_path / recs[1].audio).unlink()  # missing audio
    write_jsonl(tmp_path / "test.jsonl", recs)
    fs = load_features(tmp_path / "test.jsonl", load_checkpoint_cfg(), progress=False, use_cache=False)
    assert len(fs) == 2 and len(fs.bad) == 2
    assert recs[0].id in fs.bad[0] and ("cannot open video" in fs.bad[0] or "no decodable" in fs.bad[0])
    assert recs[1].id in fs.bad[1] and "not found" in fs.bad[1]


def load_checkpoint_cfg():
    from emo_edge.config import load_preset

    return load_preset("tiny").model.frontend


def test_validate_counts_the_clips_it_asked(tiny_ckpt, synth_dir, monkeypatch):
    from emo_edge.config import load_preset
    from emo_edge.data.features import load_features
    from emo_edge.labels import LABELS
    from emo_edge.train.loop import validate

    model = load_checkpoint(tiny_ckpt)
    fs = load_features(synth_dir / "val.jsonl", load_preset("tiny").model.frontend, progress=False)
    truth = iter([LABELS[i] for i in fs.labels])
    # an LLM that is always right: the share must be exactly 1 whatever the batch and n_llm
    monkeypatch.setattr(model, "generate", lambda batch, **kw: [next(truth) for _ in batch.suffixes])
    assert validate(model, fs, n_llm=5)["val_llm_acc"] == 1.0


def test_lora_dir_holds_only_the_adapter(tiny_ckpt):
    assert sorted(p.name for p in (tiny_ckpt / ck.LORA_DIR).iterdir()) == ["adapter_config.json",
                                                                           "adapter_model.safetensors"]


def test_augmentation_is_one_consistent_transform_per_clip():
    from emo_edge.train.augment import augment_views

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    frames = np.repeat(image[:, None, ::2, ::2], 3, axis=1)  # every frame = the image at half size
    f2, i2 = augment_views(frames, image, np.random.default_rng(1), shift=0, scale=0, degrees=0, jitter=0)
    kinds = set()
    for i in range(len(image)):  # with only the flip left, each clip is either untouched or mirrored
        same, mirrored = np.array_equal(i2[i], image[i]), np.array_equal(i2[i], image[i, :, ::-1])
        assert same or mirrored
        kinds.add(same)
        want = frames[i] if same else frames[i, :, :, ::-1]
        assert np.array_equal(f2[i], want)  # ... and its frames got the same transform
    assert kinds == {True, False}
    f3, i3 = augment_views(frames, image, np.random.default_rng(2))
    assert i3.shape == image.shape and f3.dtype == np.uint8 and not np.array_equal(i3, image)


def test_encoder_warm_up_trains_perception_without_touching_lora(synth_dir, tmp_path):
    import torch
    from safetensors.torch import load_file

    from emo_edge.train.loop import train

    out = tmp_path / "w"
    train("tiny", synth_dir, out, stages=(0,), progress=False)
    train("tiny", synth_dir, out, stages=(1,), progress=False, overrides={"perception_steps": 0})
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    steps = [r for r in rows if r.get("stage") == 1 and "phase" in r]
    assert steps and {r["phase"] for r in steps} == {"encoders"} and all(r["lm_loss"] == 0 for r in steps)
    assert any("val_image_only_acc" in r and "val_llm_acc" not in r for r in rows)
    lora = load_file(str(out / ck.LORA_DIR / "adapter_model.safetensors"))
    assert all(torch.count_nonzero(v) == 0 for k, v in lora.items() if "lora_B" in k)  # still at its zero init


def test_isolated_warm_up_steps_the_encoders_unclipped(synth_dir, tmp_path):
    """`isolate_encoders` gives the warm-up an unclipped optimizer (clipping with betas (0.9, 0.98) kept the temporal
    view at chance, docs/synthemo-v2-training.md). With `grad_clip` 1e-9 the shared warm-up's steps shrink to nearly
    nothing, the isolated one's do not."""
    import shutil

    import torch
    from safetensors.torch import load_file

    from emo_edge.config import load_model_config
    from emo_edge.train.loop import build_model, train

    base = tmp_path / "stage0"
    train("tiny", synth_dir, base, stages=(0,), progress=False, overrides={"lm_steps": 2})
    moved = {}
    for isolate in (False, True):
        out = tmp_path / f"iso-{isolate}"
        shutil.copytree(base, out)
        train("tiny", synth_dir, out, stages=(1,), progress=False,
              overrides={"encoder_steps": 1, "perception_steps": 0, "grad_clip": 1e-9, "isolate_encoders": isolate,
                         "weight_decay": 0.0, "eval_every": 1000})
        moved[isolate] = load_file(str(out / ck.PERCEPTION_FILE))
    torch.manual_seed(0)  # the fresh model both runs started from, built as `run_curriculum` builds it
    fresh = build_model(load_model_config(base / ck.CONFIG_FILE), base, resume_lora=False).perception.state_dict()
    step = {iso: max(float((w[k] - fresh[k]).abs().max()) for k in w if k.startswith("audio_encoder.")
                     and k.endswith("weight")) for iso, w in moved.items()}
    assert step[True] > 100 * step[False], step
