"""On an NVIDIA GPU (marked gpu; skipped with the reason elsewhere): the shipped default's eager perception on CUDA
against the CPU reference, and `torchrun` training on the GPU(s) from shards, stopped and resumed.

The bf16 training steps are in test_scale.py; scripts/gpu_check.sh runs every gpu-marked test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU (torch.cuda.is_available() "
                                                                       "is False)")]

PERCEPTION_RTOL = 1e-4  # fp32 with TF32 off: CUDA and the CPU differ only in summation order
# resumed vs uninterrupted losses on the GPU: bf16 autocast, and cuBLAS/atomics need not repeat bit for bit
GPU_RESUME_RTOL = 1e-3
SCHEDULE = {"encoder_steps": 3, "perception_steps": 3, "cognition_steps": 3, "log_every": 1, "eval_every": 3,
            "grad_accum": 2, "workers": 2}


def test_cuda_perception_matches_the_cpu_reference(synth_dir):
    from emo_edge.checkpoint import load_checkpoint
    from emo_edge.data.features import load_features
    from emo_edge.model.inputs import to_batch

    model = load_checkpoint("default", merge=True)
    fs = load_features(synth_dir / "test.jsonl", model.cfg.frontend, progress=False, use_cache=False)
    n = len(fs)
    on = np.ones(n, np.float32)
    on[::3] = 0  # every third clip without the camera: the absent-modality path too
    b = to_batch(fs.frames, fs.image, fs.mel, on, np.ones(n, np.float32), ["emotion"] * n, [None] * n)
    args = (b.image, b.frames, b.mel, b.present)
    perception = model.perception.eval()
    with torch.no_grad():
        cpu = perception(*args)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        gpu = perception.cuda()(*(a.cuda() for a in args))
    for key in ("logits", "va", "tokens", "fused"):
        ref, got = cpu[key], gpu[key].float().cpu()
        err = float((got - ref).abs().max() / (ref.abs().max() + 1e-12))
        print(f"{key}: largest difference CUDA vs CPU, relative to the largest value: {err:.2e}")
        assert err <= PERCEPTION_RTOL, (key, err)
    assert torch.equal(cpu["logits"].argmax(-1), gpu["logits"].argmax(-1).cpu())
    assert torch.equal(cpu["token_mask"], gpu["token_mask"].cpu())


def _torchrun(data: Path, out: Path, nproc: int, *extra: str) -> None:
    sets = [a for k, v in SCHEDULE.items() for a in ("--set", f"{k}={v}")]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           "-m", "emo_edge.train", "--preset", "tiny", "--data", str(data), "--out", str(out), "--stages", "1,2",
           *sets, *extra]
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]


def _losses(out: Path) -> dict[tuple[int, int], dict]:
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return {(r["stage"], r["step"]): r for r in rows if "phase" in r}


def test_torchrun_on_the_gpu_from_shards_stopped_and_resumed(synth_dir, tmp_path):
    """One process per GPU, up to two: with one GPU the world is 1 (the loop makes no process group); with two
    or more, NCCL carries the gradients."""
    import shutil

    from emo_edge import checkpoint as ck
    from emo_edge.config import load_preset
    from emo_edge.data import shards as sh
    from emo_edge.train.loop import train

    nproc = min(torch.cuda.device_count(), 2)
    shards = tmp_path / "shards"
    for split in ("train", "val"):
        sh.write_shards(synth_dir / f"{split}.jsonl", shards, split, load_preset("tiny").model.frontend,
                        shard_size=4, workers=1, progress=False)
    train("tiny", shards, tmp_path / "stage0", stages=(0,), progress=False)
    full, cut = tmp_path / "full", tmp_path / "cut"
    for o in (full, cut):
        shutil.copytree(tmp_path / "stage0", o)
    _torchrun(shards, full, nproc)
    _torchrun(shards, cut, nproc, "--set", "stop_after=4")
    state = torch.load(cut / "train_state.pt", weights_only=False)
    assert (state["stage"], state["step"]) == (1, 4) and state["data"]["world"] == nproc
    _torchrun(shards, cut, nproc, "--resume")
    a, b = _losses(full), _losses(cut)
    assert sorted(a) == sorted(b) and len(a) == 9  # stage 1: 3 warm-up + 3 with the LLM; stage 2: 3
    worst = max(abs(b[k][loss] - a[k][loss]) / max(abs(a[k][loss]), 1e-9) for k in a
                for loss in ("lm_loss", "head_loss", "aux_loss"))
    print(f"world {nproc}: resumed vs uninterrupted, largest relative loss difference {worst:.3g}")
    assert worst <= GPU_RESUME_RTOL
    assert json.loads((full / ck.META_FILE).read_text())["world_size"] == nproc
