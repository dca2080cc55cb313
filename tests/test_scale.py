"""Scale: the sharded format, its reading plan, gradient accumulation and exact resume (also 2-rank DDP)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch

from emo_edge import checkpoint as ck
from emo_edge.config import TrainConfig, load_preset
from emo_edge.data import shards as sh
from emo_edge.data.features import load_features
from emo_edge.data.schema import read_jsonl, write_jsonl

FE = load_preset("tiny").model.frontend
RESUME_RTOL = 1e-6  # resumed vs uninterrupted loss curves (measured: identical on CPU)


@pytest.fixture(scope="module")
def shard_dir(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shards")
    for split in ("train", "val"):
        sh.write_shards(synth_dir / f"{split}.jsonl", out, split, FE, shard_size=4, workers=1, progress=False)
    return out


def step_rows(out: Path) -> dict[tuple[int, int], dict]:
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return {(r["stage"], r["step"]): r for r in rows if "phase" in r}


# ---------------------------------------------------------------------------------------------
# the format
# ---------------------------------------------------------------------------------------------


def test_shard_writing_reports_bad_clips_and_keeps_going(synth_dir, tmp_path):
    from typer.testing import CliRunner

    from emo_edge.cli import app

    recs = read_jsonl(synth_dir / "train.jsonl")[:7]
    for r in recs:
        for p in (r.video, r.audio):
            (tmp_path / "src" / p).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(synth_dir / p, tmp_path / "src" / p)
    (tmp_path / "src" / recs[1].video).write_bytes(b"not a video")
    (tmp_path / "src" / recs[4].audio).unlink()
    write_jsonl(tmp_path / "src" / "train.jsonl", recs)
    res = CliRunner().invoke(app, ["data", "shard", "--data", str(tmp_path / "src"), "--out", str(tmp_path / "sh"),
                                   "--shard-size", "2", "--preset", "tiny", "--splits", "train", "--workers", "1"])
    assert res.exit_code == 0, res.output
    assert "Usage" in CliRunner().invoke(app, ["data", "shard", "--help"]).output
    assert "5 clips in 3 shard(s)" in res.output and res.output.count("bad clip") == 2
    index = sh.ShardIndex.load(tmp_path / "sh", "train")
    assert index.sizes == [2, 2, 1] and len(index.bad) == 2
    assert {b.split(":")[0] for b in index.bad} == {f"clip {recs[1].id}", f"clip {recs[4].id}"}
    # the shards hold exactly what the in-memory path computes for the good clips (one preprocessing path)
    got = index.read_all()
    ref = load_features(tmp_path / "src" / "train.jsonl", FE, progress=False, use_cache=False)
    order = [ref.records.index(r) for r in got.records]
    for k in sh.ARRAYS:
        assert np.array_equal(getattr(got, k), getattr(ref, k)[order]), k
    assert [r.id for r in sh.read_records(tmp_path / "sh", "train")] == [r.id for r in got.records]


def test_shards_through_an_fsspec_url(synth_dir):
    pytest.importorskip("fsspec")
    url = "memory://emo-edge-test/shards"
    index = sh.write_shards(synth_dir / "val.jsonl", url, "val", FE, shard_size=5, workers=1, progress=False)
    assert sh.is_shard_dir(url, "val") and index.sizes == [5, 5, 2]
    back = sh.ShardIndex.load(url, "val")
    assert back.root == "memory://emo-edge-test/shards/val" and len(back.read_all()) == 12


def test_frontend_mismatch_is_refused(shard_dir):
    index = sh.ShardIndex.load(shard_dir, "train")
    other = dataclasses.replace(FE, n_mels=64)
    with pytest.raises(ValueError, match="n_mels"):
        index.check_frontend(other)


def test_shards_written_before_the_peak_frame_setting_meant_max_change(shard_dir):
    index = sh.ShardIndex.load(shard_dir, "train")
    del index.frontend["peak_frame"]  # an index.json written before FrontendConfig.peak_frame existed
    index.check_frontend(FE)
    with pytest.raises(ValueError, match="peak_frame"):
        index.check_frontend(dataclasses.replace(FE, peak_frame="sustained"))


def test_shards_may_not_overwrite_the_source(synth_dir):
    with pytest.raises(ValueError, match="must not be the data directory"):
        sh.write_shards(synth_dir / "val.jsonl", synth_dir, "val", FE, shard_size=4, progress=False)


# ---------------------------------------------------------------------------------------------
# the reading plan
# ---------------------------------------------------------------------------------------------


def test_each_epoch_deals_every_shard_once_across_ranks_and_workers():
    seed = (0, 1)
    for epoch in range(3):
        dealt = [sh.epoch_shards(10, epoch, seed, c, 4) for c in range(4)]
        assert sorted(s for d in dealt for s in d) == list(range(10))
        assert dealt == [sh.epoch_shards(10, epoch, seed, c, 4) for c in range(4)]  # a pure function
    assert sh.epoch_shards(10, 0, seed, 0, 4) != sh.epoch_shards(10, 1, seed, 0, 4)
    with pytest.raises(ValueError, match="cannot feed 4 readers"):
        sh.epoch_shards(3, 0, seed, 0, 4)


def test_reader_stream_covers_each_clip_once_per_epoch_and_restarts_anywhere(shard_dir):
    index = sh.ShardIndex.load(shard_dir, "train")  # 36 clips in 9 shards of 4; the streams are endless
    ids = []
    for c in range(3):  # 3 readers x 4 batches of 3 clips = one epoch of 36 clips
        ids += [r.id for b in islice(sh.consumer_batches(index, (0, 1), c, 3, 3), 4) for r in b.records]
    assert sorted(ids) == sorted(r.id for r in read_jsonl(shard_dir / "train.jsonl"))
    whole = [[r.id for r in b.records] for b in islice(sh.consumer_batches(index, (0, 1), 1, 2, 5), 12)]
    for start in (1, 4, 9):  # batches of 5 span shards and epochs
        tail = [[r.id for r in b.records] for b in islice(sh.consumer_batches(index, (0, 1), 1, 2, 5, start), 3)]
        assert tail == whole[start : start + 3]


def test_shard_source_with_workers_resumes_at_its_position(shard_dir):
    from emo_edge.train.data import ShardSource

    index = sh.ShardIndex.load(shard_dir, "train")
    tc = TrainConfig(batch_size=3, workers=2, seed=5)
    src = ShardSource(index, 1, tc, rank=1, world=2)
    first = [next(src) for _ in range(7)]
    state = src.state_dict()
    src.close()
    assert state == {"kind": "shards", "batches": 7, "batch_size": 3, "world": 2, "lanes": 2}
    again = ShardSource(index, 1, tc, rank=1, world=2, start=3)
    rest = [next(again) for _ in range(4)]
    again.close()
    for (a, la, va, aa), (b, lb, vb, ab) in zip(first[3:], rest, strict=True):
        assert torch.equal(a.image, b.image) and torch.equal(a.mel, b.mel) and torch.equal(la, lb)
        assert torch.equal(aa, ab)
        assert a.suffixes == b.suffixes and a.answers == b.answers and torch.equal(va, vb)


# ---------------------------------------------------------------------------------------------
# gradient accumulation and resume
# ---------------------------------------------------------------------------------------------


def _double(batch):
    return dataclasses.replace(batch, **{f.name: getattr(batch, f.name).double() for f in dataclasses.fields(batch)
                                         if isinstance(getattr(batch, f.name), torch.Tensor)})


@pytest.mark.parametrize("with_llm", [False, True])
def test_grad_accum_two_by_two_equals_batch_four(tiny_ckpt, synth_dir, with_llm):
    from emo_edge.checkpoint import load_checkpoint
    from emo_edge.train.data import sample_batch
    from emo_edge.train.loop import Dist, window_backward

    model = load_checkpoint(tiny_ckpt).double()  # eval mode: no dropout, so the two runs see the same function
    for p in [*model.perception.parameters(), *(p for n, p in model.llm.named_parameters() if "lora_" in n)]:
        p.requires_grad_(True)
    fs = load_features(synth_dir / "train.jsonl", FE, progress=False)
    tc = TrainConfig(batch_size=4, drop_text=0.5)
    batch, labels, va, attrs = sample_batch(fs, np.array([0, 5, 9, 20]), 2, tc, np.random.default_rng(3))

    def part(sl: slice):
        sub = dataclasses.replace(batch, suffixes=batch.suffixes[sl], answers=batch.answers[sl],
                                  **{k: getattr(batch, k)[sl] for k in ("image", "frames", "mel", "present")})
        return _double(sub), labels[sl], va[sl].double(), attrs[sl].double()

    def grads(micro):
        model.zero_grad(set_to_none=True)
        losses = window_backward(model, micro, with_llm, tc, Dist())
        return losses, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    big_loss, big = grads([part(slice(0, 4))])
    acc_loss, acc = grads([part(slice(0, 2)), part(slice(2, 4))])
    assert set(big) == set(acc) and len(big) > 10
    assert len({len(model.tok.encode(a)) for a in batch.answers}) > 1  # answers differ in length: a real test
    torch.testing.assert_close(acc_loss, big_loss, rtol=1e-12, atol=1e-12)
    for n in big:
        torch.testing.assert_close(acc[n], big[n], rtol=1e-9, atol=1e-12, msg=n)


def _stage0_then_copies(data, tmp_path: Path, names: tuple[str, ...]) -> list[Path]:
    from emo_edge.train.loop import train

    base = tmp_path / "stage0"
    train("tiny", data, base, stages=(0,), progress=False)
    outs = [tmp_path / n for n in names]
    for o in outs:
        shutil.copytree(base, o)
    return outs


SCHEDULE = {"encoder_steps": 3, "perception_steps": 3, "cognition_steps": 3, "log_every": 1, "eval_every": 3,
            "grad_accum": 2}


def _assert_same_curve(full: Path, cut: Path) -> None:
    a, b = step_rows(full), step_rows(cut)
    assert sorted(a) == sorted(b) and len(a) == 6 + 3  # stage 1: 3 warm-up + 3 with the LLM; stage 2: 3
    worst = max(abs(b[k][loss] - a[k][loss]) / max(abs(a[k][loss]), 1e-9) for k in a
                for loss in ("lm_loss", "head_loss", "aux_loss"))
    print(f"resumed vs uninterrupted: largest relative loss difference {worst:.3g}")
    assert worst <= RESUME_RTOL


def test_in_memory_resume_reproduces_the_uninterrupted_run(synth_dir, tmp_path):
    from emo_edge.train.loop import STATE_FILE, train

    full, cut = _stage0_then_copies(synth_dir, tmp_path, ("full", "cut"))
    train("tiny", synth_dir, full, stages=(1, 2), progress=False, overrides=SCHEDULE)
    train("tiny", synth_dir, cut, stages=(1, 2), progress=False, overrides={**SCHEDULE, "stop_after": 5})
    state = torch.load(cut / STATE_FILE, weights_only=False)
    assert (state["stage"], state["step"], state["data"]["batches"]) == (1, 5, 10)
    train("tiny", synth_dir, cut, stages=(1, 2), resume=True, progress=False, overrides=SCHEDULE)
    _assert_same_curve(full, cut)


def _torchrun(data: Path, out: Path, *extra: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    sets = [a for k, v in {**SCHEDULE, "workers": 2}.items() for a in ("--set", f"{k}={v}")]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "emo_edge.train", "--preset", "tiny", "--data", str(data), "--out", str(out), "--stages", "1,2",
           *sets, *extra]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]


def test_ddp_on_shards_resumed_gives_the_uninterrupted_loss_curve(shard_dir, tmp_path):
    full, cut = _stage0_then_copies(shard_dir, tmp_path, ("full", "cut"))  # stage 0 reads the shards' records
    _torchrun(shard_dir, full)
    _torchrun(shard_dir, cut, "--set", "stop_after=4")  # leaves inside stage 1, one step after the warm-up
    state = torch.load(cut / "train_state.pt", weights_only=False)
    assert (state["stage"], state["step"]) == (1, 4)
    assert state["data"] == {"kind": "shards", "batches": 8, "batch_size": 4, "world": 2, "lanes": 2}
    _torchrun(shard_dir, cut, "--resume")
    _assert_same_curve(full, cut)
    meta_full, meta_cut = (json.loads((o / ck.META_FILE).read_text()) for o in (full, cut))
    assert meta_full["world_size"] == meta_cut["world_size"] == 2
    sums = meta_full["rank_param_checksums"]
    assert sums[0] == pytest.approx(sums[1], rel=1e-12)  # the ranks stayed in sync
    print(f"final parameter checksums: uninterrupted {sums}, resumed {meta_cut['rank_param_checksums']}")
    assert meta_cut["rank_param_checksums"] == pytest.approx(sums, rel=RESUME_RTOL)  # and ended where the full run did


def test_autocast_on_the_cpu_only_when_asked():
    from emo_edge.train.loop import Dist, autocast

    with autocast(Dist(), TrainConfig()):
        y = torch.nn.functional.linear(torch.ones(2, 3), torch.ones(4, 3))
    assert y.dtype == torch.float32
    with autocast(Dist(), TrainConfig(cpu_bf16="true")):  # as `--set cpu_bf16=true` passes it
        y = torch.nn.functional.linear(torch.ones(2, 3), torch.ones(4, 3))
    assert y.dtype == torch.bfloat16


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
def test_bf16_training_on_the_gpu(shard_dir, tmp_path):
    from emo_edge.train.loop import Dist, autocast, train

    with autocast(Dist(device=torch.device("cuda")), TrainConfig()):
        assert torch.nn.functional.linear(torch.ones(2, 3).cuda(), torch.ones(4, 3).cuda()).dtype == torch.bfloat16
    out = train("tiny", shard_dir, tmp_path / "gpu", progress=False, overrides={"grad_accum": 2})
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["lm_loss"]) for r in rows if "lm_loss" in r)
