"""The training loop: stage 0 pretrains the small LLaMA on our instruction text; stages 1
(perception: emotion, audio, image) and 2 (cognition: emotion, reason, think) freeze it and train
encoders, fusion, adapters, the fast head and LoRA.

One loop (`run_stage`) for every stage and device: each stage brings its phases (optimizer and
schedule), batches, loss, validation and checkpoint (`StageRun`), and the loop does the rest the same
way for all three, resume included; under `torchrun` it runs as DDP (gloo on CPU, NCCL on GPU):
every rank starts from the same weights, sees its own batches (from memory or from shards, see
`emo_edge.train.data`), and gradients are averaged. An optimizer step may accumulate several
micro-batches; bf16 autocast on GPU (and on the CPU with `train.cpu_bf16`). `train_state.pt` holds
what resume needs to repeat the uninterrupted run: stage, step, optimizer and data position.
`main(argv=None)` lets a test run it in-process on tiny data.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from rich.console import Console

from emo_edge import checkpoint as ck
from emo_edge.config import ModelConfig, Preset, TrainConfig, load_preset, save_yaml
from emo_edge.data import synth_text
from emo_edge.data.features import FeatureSet
from emo_edge.data.schema import Record
from emo_edge.data.synth_v2 import ATTRIBUTES, COUNTERFACTUAL_TASKS, counterfactual
from emo_edge.labels import LABELS, parse_label
from emo_edge.model.inputs import to_batch
from emo_edge.model.mllm import EmotionLLM, add_lora, build_llm, load_llm
from emo_edge.model.perception import FUSED
from emo_edge.model.tokenizer import Tokenizer, train_sentencepiece
from emo_edge.prompts import evidence_text, text_only
from emo_edge.train.data import (
    PROBE_ATTRIBUTES,
    STAGE_TASKS,
    Sample,
    TextSource,
    TrainData,
    attribute_targets,
    batch_to,
    pad_sequences,
    sample_batch,
    to_device,
)

__all__ = ["STAGE_TASKS", "sample_batch", "train", "main"]
STATE_FILE = "train_state.pt"
console = Console()


# ---------------------------------------------------------------------------------------------
# distributed helpers
# ---------------------------------------------------------------------------------------------


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_dist() -> Dist:
    """Rank, world size and device from torchrun's environment; one GPU per process (LOCAL_RANK)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = torch.device("cpu")
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(int(os.environ.get("RANK", "0")), world, device)


def autocast(d: Dist, tc: TrainConfig) -> contextlib.AbstractContextManager:
    """bf16 autocast on GPU, and on the CPU when `train.cpu_bf16` (weights and optimizer stay float32)."""
    return torch.autocast(d.device.type, dtype=torch.bfloat16, enabled=d.device.type == "cuda" or tc.cpu_bf16)


def all_reduce_sum(x: torch.Tensor, d: Dist) -> torch.Tensor:
    if d.world > 1:
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


def barrier(d: Dist) -> None:
    if d.world > 1:
        dist.barrier()


def average_grads(params: list[torch.nn.Parameter], d: Dist) -> None:
    """All-reduce mean of gradients (plain DDP semantics, without wrapping HF/peft modules)."""
    if d.world == 1:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
        p.grad /= d.world


def param_checksums(params: list[torch.nn.Parameter], d: Dist) -> list[float]:
    """Every rank's sum of |trainable parameters| (float64): equal across ranks when DDP is in sync."""
    mine = torch.tensor([sum(float(p.detach().double().abs().sum()) for p in params)], dtype=torch.float64,
                        device=d.device)
    if d.world == 1:
        return [float(mine)]
    gathered = [torch.zeros_like(mine) for _ in range(d.world)]
    dist.all_gather(gathered, mine)
    return [float(g) for g in gathered]


def broadcast_params(params: list[torch.nn.Parameter], d: Dist) -> None:
    if d.world > 1:
        for p in params:
            dist.broadcast(p.data, src=0)


# ---------------------------------------------------------------------------------------------
# schedule and logging
# ---------------------------------------------------------------------------------------------


def lr_at(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up then cosine decay to 10 % of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))


def log(out: Path, d: Dist, row: dict) -> None:
    if not d.main:
        return
    with (out / "log.jsonl").open("a") as f:
        f.write(json.dumps(row) + "\n")
    console.print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))


def optimizer_for(groups: list[tuple[list[torch.nn.Parameter], float]], tc: TrainConfig,
                  betas: tuple[float, float] = (0.9, 0.98)) -> torch.optim.AdamW:
    return torch.optim.AdamW([{"params": p, "lr": lr, "peak": lr} for p, lr in groups if p],
                             weight_decay=tc.weight_decay, betas=betas)


def clip_and_step(opt: torch.optim.Optimizer, params: list, step: int, total: int, tc: TrainConfig,
                  clip: float | None = None) -> float:
    """Clip the gradients' global norm to `clip` (None: `tc.grad_clip`; 0: no clipping), set the step's learning
    rates, step; returns the norm before clipping."""
    limit = tc.grad_clip if clip is None else (clip or float("inf"))
    norm = float(torch.nn.utils.clip_grad_norm_(params, limit))
    for g in opt.param_groups:
        g["lr"] = lr_at(step, total, g["peak"], tc.warmup_steps)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return norm


# ---------------------------------------------------------------------------------------------
# one loop for every stage
# ---------------------------------------------------------------------------------------------


@dataclass
class Phase:
    """One optimizer and its learning-rate schedule, over the `steps` steps from `first` on."""

    opt: torch.optim.Optimizer
    params: list[torch.nn.Parameter]
    first: int
    steps: int
    clip: float | None = None  # the gradient norm limit (None: train.grad_clip; 0: none)


@dataclass
class StageRun:
    """What a stage brings to `run_stage`."""

    stage: int
    total: int  # optimizer steps
    phase: Callable[[int], Phase]  # the phase a step belongs to, with a fresh optimizer
    source: Callable[[int], Any]  # batches from a position (batches consumed): iterable, state_dict(), close()
    layout: dict[str, Any]  # the source's layout; a resume compares it with the saved one
    backward: Callable[[list, int], dict[str, float]]  # a step's micro-batches -> backward done; the losses to log
    save: Callable[[dict], None]  # a checkpoint with the train state (rank 0 writes)
    validate: Callable[[int], dict[str, float]] | None = None  # rank 0 only: None elsewhere or without a val split
    starts: tuple[int, ...] = ()  # steps > 0 where a new phase (a fresh optimizer) begins
    row: Callable[[int], dict[str, Any]] = lambda step: {}  # a step's extra log fields


def run_stage(run: StageRun, tc: TrainConfig, out: Path, d: Dist, start_step: int = 0, opt_state: dict | None = None,
              data_state: dict | None = None, max_steps: int = 0) -> int:
    """The training loop of every stage, from `start_step` (resuming: with the saved optimizer and data position).
    Returns the optimizer steps run (at most `max_steps` when it is not 0)."""
    if start_step >= run.total:
        return 0
    ph = run.phase(start_step)
    if opt_state and start_step not in run.starts:  # a state saved where a phase starts belongs to the one before
        ph.opt.load_state_dict(opt_state)
    source = run.source(resume_position(run.layout, data_state, start_step, tc, d))
    batches = iter(source)
    t0 = time.time()
    try:
        for step in range(start_step, run.total):
            if step in run.starts and step > start_step:
                ph = run.phase(step)
            # forward/backward over the micro-batches -> all-reduce -> clip -> step
            torch.manual_seed(step_seed(tc.seed, run.stage, d.rank, step))  # dropout masks: a function of the step
            losses = run.backward([next(batches) for _ in range(tc.grad_accum)], step)
            average_grads(ph.params, d)
            norm = clip_and_step(ph.opt, ph.params, step - ph.first, ph.steps, tc, ph.clip)
            if step % tc.log_every == 0 or step == run.total - 1:
                log(out, d, {"stage": run.stage, "step": step, **run.row(step), **losses, "grad_norm": norm,
                             "elapsed_s": round(time.time() - t0, 1)})
            # evaluate and checkpoint (also where this run was told to stop)
            evaluate = (step + 1) % tc.eval_every == 0 or step == run.total - 1 or step + 1 in run.starts
            stop = bool(max_steps) and step + 1 - start_step >= max_steps
            if evaluate and run.validate is not None:
                log(out, d, {"stage": run.stage, "step": step, **run.validate(step)})
            if evaluate or stop:
                run.save({"stage": run.stage, "step": step + 1, "optimizer": ph.opt.state_dict(),
                          "data": source.state_dict()})
                barrier(d)
            if stop:
                return step + 1 - start_step
    finally:
        source.close()
    return run.total - start_step


def step_seed(*coords: int) -> int:
    return int(np.random.SeedSequence(list(coords)).generate_state(1)[0])


def resume_position(layout: dict[str, Any], data_state: dict | None, start_step: int, tc: TrainConfig,
                    d: Dist) -> int:
    """Batches of this stage already consumed; warns when the reader layout changed (the order then differs)."""
    if not data_state:
        return start_step * tc.grad_accum
    changed = {k: (data_state[k], v) for k, v in layout.items() if k in data_state and data_state[k] != v}
    if changed and d.main:
        console.print(f"[yellow]resume: data layout changed {changed} (saved vs now); the batches after the "
                      "checkpoint will not be those of an uninterrupted run[/]")
    return int(data_state["batches"])


# ---------------------------------------------------------------------------------------------
# stage 0: tokenizer and language-model pretraining on the instruction text
# ---------------------------------------------------------------------------------------------


def corpus_lines(records: list[Record], evidence: bool = False) -> list[str]:
    """Every task's answer in the prompt format, with and without the subtitle, plus the subtitles.

    With `evidence` (a model whose prompt says the attribute head's readings), a record with SynthEmo v2
    attributes adds, for each task, a line opened with its true attributes in words (`prompts.evidence_text`), and
    for the tasks the attributes decide, a line of its counterfactual (`synth_v2.counterfactual`: every attribute
    redrawn, the temporal pair's label following the drawn onset, no subtitle). In the true lines the subtitle and
    the label cues tell the onset as well as the words do; only in the counterfactual ones do the words alone tell
    it, so the pretrained LM learns to name what its prompt says rather than what the rest of the line implies."""
    lines = []
    for r in records:
        lines.append(r.subtitle)
        values = (r.meta or {}).get("attributes") if evidence else None
        said = said_attributes(values) if values else ""
        for task, answer in r.targets.items():
            lines.append(text_only(task, r.subtitle, answer))
            lines.append(text_only(task, None, answer))
            if said:
                lines.append(text_only(task, r.subtitle, answer, evidence=said))
        if values:
            rng = np.random.default_rng(zlib.crc32(r.id.encode()))
            _, drawn, targets = counterfactual(r.label, r.meta["mouth_style"], rng)
            lines += [text_only(task, None, targets[task], evidence=said_attributes(drawn))
                      for task in COUNTERFACTUAL_TASKS if task in r.targets]
    return lines


def said_attributes(values: dict[str, str]) -> str:
    """The evidence text saying these SynthEmo v2 attribute values, for a clip with every input present."""
    return evidence_text([(a.phrases[values[a.name]], a.streams) for a in ATTRIBUTES], (1, 1, 1))


VAL_LM_LINES = 256  # stage 0's validation: the LM loss over the first lines of the val split's corpus


def stage0_run(cfg: ModelConfig, tc: TrainConfig, data: TrainData, out: Path, d: Dist, resuming: bool) -> StageRun:
    """Stage 0 for `run_stage`: a SentencePiece tokenizer trained on the corpus, then the small LLaMA pretrained
    on it (one optimizer, `lm_steps`, `lm_lr`); it checkpoints `out/llm` with the train state. Resuming, the
    tokenizer and the LLM saved so far are loaded instead of made."""
    llm_out = out / ck.LLM_DIR
    lines = corpus_lines(data.records("train"), cfg.llm.evidence)
    if d.main and not resuming:
        train_sentencepiece(lines, llm_out, cfg.llm.vocab_size)
    barrier(d)
    tok = Tokenizer(llm_out)
    torch.manual_seed(tc.seed)
    llm = (load_llm(llm_out) if resuming else build_llm(cfg.llm, tok)).to(d.device)
    llm.train()
    params = [p for p in llm.parameters() if p.requires_grad]
    broadcast_params(params, d)

    def encode(texts: list[str]) -> list[list[int]]:
        return [[tok.bos_id, *tok.encode(t), tok.eos_id] for t in texts]

    encoded = encode(lines)

    def save(state: dict) -> None:
        if d.main:
            llm.save_pretrained(str(llm_out))
            torch.save(state, out / STATE_FILE)

    val_lines = corpus_lines(data.records("val"), cfg.llm.evidence) if d.main and data.has_split("val") else None
    val = encode(val_lines[:VAL_LM_LINES]) if val_lines else None
    return StageRun(
        stage=0, total=tc.lm_steps, phase=lambda step: Phase(optimizer_for([(params, tc.lm_lr)], tc), params, 0,
                                                             tc.lm_steps),
        source=lambda start: TextSource(encoded, tc.batch_size, tok.pad_id, tc.seed * 1000 + d.rank, d.world, start),
        layout={"kind": "text", "batch_size": tc.batch_size, "world": d.world},
        backward=lambda micro, step: lm_window_backward(llm, micro, d, tc), save=save,
        validate=(lambda step: validate_lm(llm, val, tc.batch_size, tok.pad_id)) if val else None)


def lm_window_backward(llm: torch.nn.Module, micro: list[tuple[torch.Tensor, ...]], d: Dist,
                       tc: TrainConfig) -> dict[str, float]:
    """Forward and backward of one stage-0 step; its LM loss is the mean over every predicted token of the window
    (all micro-batches of all ranks), as `window_backward`'s is for stages 1 and 2."""
    predicted = [int((labels[:, 1:] != -100).sum()) for _, _, labels in micro]  # the loss shifts labels by one
    total = all_reduce_sum(torch.tensor([float(sum(predicted))], dtype=torch.float64, device=d.device), d).item()
    logged = torch.zeros(1, dtype=torch.float64)
    for (ids, mask, labels), n in zip(micro, predicted, strict=True):
        ids, mask, labels = ids.to(d.device), mask.to(d.device), labels.to(d.device)
        with autocast(d, tc):
            part = _wide(llm(input_ids=ids, attention_mask=mask, labels=labels).loss) * (n / total)
        (d.world * part).backward()
        logged += part.item()
    return {"lm_loss": all_reduce_sum(logged.to(d.device), d).item()}


@torch.no_grad()
def validate_lm(llm: torch.nn.Module, encoded: list[list[int]], batch_size: int, pad_id: int) -> dict[str, float]:
    """The LM loss per predicted token over `encoded` (the val split's corpus lines)."""
    llm.eval()
    device = next(llm.parameters()).device
    loss_sum, n_sum = 0.0, 0
    for s in range(0, len(encoded), batch_size):
        ids, mask, labels = (t.to(device) for t in pad_sequences(encoded[s:s + batch_size], pad_id))
        n = int((labels[:, 1:] != -100).sum())
        loss_sum += float(llm(input_ids=ids, attention_mask=mask, labels=labels).loss) * n
        n_sum += n
    llm.train()
    return {"val_lm_loss": loss_sum / max(n_sum, 1)}


# ---------------------------------------------------------------------------------------------
# stages 1 and 2: the curriculum
# ---------------------------------------------------------------------------------------------


def perceive_split(model: EmotionLLM, fs: FeatureSet, batch_size: int = 64) -> Iterator[tuple[np.ndarray, Any, dict]]:
    """(clip indices, Batch, perception outputs) over a whole split in order, every view present and the emotion
    task with each clip's subtitle; call under torch.no_grad()."""
    device = next(model.perception.parameters()).device
    for s in range(0, len(fs), batch_size):
        idx = np.arange(s, min(s + batch_size, len(fs)))
        on = np.ones(len(idx), bool)
        batch = to_batch(fs.frames[idx], fs.image[idx], fs.mel[idx], on, on, ["emotion"] * len(idx),
                         [fs.records[i].subtitle for i in idx])
        batch = batch_to(batch, device)
        yield idx, batch, model.perception(batch.image, batch.frames, batch.mel, batch.present)


@torch.no_grad()
def validate(model: EmotionLLM, fs: FeatureSet, n_llm: int = 48) -> dict[str, float]:
    """Head accuracy on the whole split and LLM emotion accuracy on its first n_llm clips."""
    model.eval()
    correct, llm_correct, n_asked = 0, 0, 0
    aux_correct = np.zeros(len(FUSED))
    attr_truth, attr_hit = attribute_targets(fs.records), np.zeros(len(ATTRIBUTES))
    probe_hit, probe_n = np.zeros(len(FUSED)), np.zeros(len(FUSED))  # the encoders' own attribute probes
    for idx, batch, p in perceive_split(model, fs):
        correct += int((p["logits"].argmax(-1).cpu().numpy() == fs.labels[idx]).sum())
        aux_correct += (p["aux"].argmax(-1).cpu().numpy() == fs.labels[idx][:, None]).sum(axis=0)
        if "attributes" in p:
            t = attr_truth[idx]
            attr_hit += (((p["attributes"].float().cpu().numpy() > 0) == (t == 1)) & (t >= 0)).sum(axis=0)
        if "aux_attr" in p:
            t = attr_truth[idx][:, None, :]
            scored = (t >= 0) * PROBE_ATTRIBUTES[None]
            probe_hit += (((p["aux_attr"].float().cpu().numpy() > 0) == (t == 1)) * scored).sum(axis=(0, 2))
            probe_n += scored.sum(axis=(0, 2))
        if n_asked < n_llm:
            answers = model.generate(batch, max_new_tokens=4, perception=p)
            llm_correct += sum(parse_label(a) == LABELS[fs.labels[i]] for a, i in zip(answers, idx, strict=True))
            n_asked += len(idx)
    model.train()
    aux = {f"val_{k}_only_acc": float(c) / len(fs) for k, c in zip(FUSED, aux_correct, strict=True)}
    llm = {"val_llm_acc": llm_correct / n_asked} if n_asked else {}
    n_known = (attr_truth >= 0).sum()
    has_head = model.perception.attributes is not None  # an all-wrong head still reports its 0.0
    attr = {"val_attr_acc": float(attr_hit.sum() / n_known)} if n_known and has_head else {}
    probes = {f"val_{k}_attr_acc": float(h / n) for k, h, n in zip(FUSED, probe_hit, probe_n, strict=True) if n}
    return {"val_head_acc": correct / len(fs), **llm, **aux, **attr, **probes}


def build_model(cfg: ModelConfig, out: Path, resume_lora: bool, init_perception: str = "") -> EmotionLLM:
    """The backbone from out/llm (stage 0) or else `llm.path`, LoRA fresh or resumed, perception resumed, or
    from `init_perception`'s trained one, or fresh."""
    from peft import PeftModel
    from safetensors.torch import load_file

    llm_dir = ck.llm_dir(out, cfg.llm.path)
    base = load_llm(llm_dir)
    if resume_lora and (out / ck.LORA_DIR).is_dir():
        for p in base.parameters():
            p.requires_grad_(False)
        llm = PeftModel.from_pretrained(base, str(out / ck.LORA_DIR), is_trainable=True)
    else:
        llm = add_lora(base, cfg.lora)
    model = EmotionLLM(cfg, llm, Tokenizer(llm_dir))
    if resume_lora and (out / ck.PERCEPTION_FILE).is_file():
        model.perception.load_state_dict(load_file(str(out / ck.PERCEPTION_FILE)))
    elif init_perception:
        fresh = ck.load_trained_perception(model.perception, cfg, init_perception)
        console.print(f"perception from {init_perception}; fresh: {', '.join(fresh) or 'nothing'}")
    return model


def init_attribute_tokens(model: EmotionLLM, rms: float = 0.0) -> bool:
    """Start each attribute token's two embeddings at the mean input embedding of its values' cue phrases, as the
    reasons write them: from its first step the LLM reads, per attribute, a blend of the words it is to write.
    `rms` > 0 rescales each attribute's pair (one factor for both, so their difference keeps its share) to that
    root mean square. False when the model has no attribute tokens."""
    adapters = model.perception.adapters
    if "attributes" not in adapters:
        return False
    emb = model.llm.get_input_embeddings()
    table = adapters["attributes"].table  # (A, 2, H): [:, 0] the attribute's first value in sorted order
    with torch.no_grad():
        for i, a in enumerate(ATTRIBUTES):
            for j, value in enumerate(a.values):
                ids = torch.tensor(model.tok.encode(synth_text.phrase(a.phrases[value])), device=table.device)
                table[i, j] = emb(ids).mean(dim=0).to(table.dtype)
            if rms > 0:
                table[i] *= rms / table[i].pow(2).mean().sqrt()
    return True


def save_all(model: EmotionLLM, out: Path, d: Dist, state: dict) -> None:
    if not d.main:
        return
    ck.save_perception(model, out)
    ck.save_lora(model, out)
    torch.save(state, out / STATE_FILE)


# ----- the loss of one optimizer step: exact means over the whole window ----------------------


def window_counts(micro: list[Sample], answer_tokens: list[int], d: Dist) -> torch.Tensor:
    """[answer tokens, clips, labelled clips, labelled present streams, known attribute targets, scored probe
    attribute targets] over the step's micro-batches on all ranks."""
    n = torch.zeros(6, dtype=torch.float64)
    for (batch, labels, _, attrs), n_tok in zip(micro, answer_tokens, strict=True):
        known = (labels >= 0).double().cpu()
        n += torch.stack([torch.tensor(float(n_tok), dtype=torch.float64), torch.tensor(float(len(labels))),
                          known.sum(), (batch.present.cpu().double() * known[:, None]).sum(),
                          (attrs >= 0).double().sum().cpu(), probe_attribute_mask(attrs).double().sum().cpu()])
    return all_reduce_sum(n.to(d.device), d).cpu().clamp(min=1)


def loss_sums(out: dict[str, torch.Tensor], labels: torch.Tensor, va: torch.Tensor,
              present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per micro-batch sums: (label CE over labelled clips, valence/arousal squared error, per-encoder probe CE
    over the present streams of labelled clips). Clips outside the label set (label -1) take no CE."""
    logits, aux, pred_va = (_wide(out[k]) for k in ("logits", "aux", "va"))
    ce = F.cross_entropy(logits, labels, ignore_index=-1, reduction="sum")
    se = F.mse_loss(pred_va, va.to(pred_va.dtype), reduction="sum")
    per = F.cross_entropy(aux.flatten(0, 1), labels.repeat_interleave(len(FUSED)), ignore_index=-1, reduction="none")
    return ce, se, (per * present.flatten()).sum()


def attribute_loss_sum(out: dict[str, torch.Tensor], attrs: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy summed over the known attribute targets (>= 0); 0 without an attribute head."""
    if "attributes" not in out:
        return attrs.new_zeros(())
    known = attrs >= 0
    bce = F.binary_cross_entropy_with_logits(_wide(out["attributes"]), attrs.clamp(min=0), reduction="none")
    return (bce * known).sum()


def probe_attribute_mask(attrs: torch.Tensor) -> torch.Tensor:
    """(B, M, A) 1 where encoder m's attribute probe is scored: a known target its view can see (`attrs` is
    already -1 where the attribute's stream was dropped)."""
    return (attrs >= 0)[:, None, :] * torch.from_numpy(PROBE_ATTRIBUTES).to(attrs.device)[None]


def probe_attribute_loss_sum(out: dict[str, torch.Tensor], attrs: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of the encoders' own attribute probes, summed where `probe_attribute_mask` is 1."""
    if "aux_attr" not in out:
        return attrs.new_zeros(())
    logits = _wide(out["aux_attr"])
    bce = F.binary_cross_entropy_with_logits(logits, attrs.clamp(min=0)[:, None, :].expand_as(logits),
                                             reduction="none")
    return (bce * probe_attribute_mask(attrs)).sum()


def _wide(x: torch.Tensor) -> torch.Tensor:
    """Losses in float32 at least (autocast leaves bf16 outputs); float64 stays float64."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def window_backward(model: EmotionLLM, micro: list[Sample], with_llm: bool, tc: TrainConfig, d: Dist) -> torch.Tensor:
    """Forward and backward over one optimizer step's micro-batches; returns the [lm, head, aux, attr] losses.

    Each loss is the mean over the whole window (every micro-batch of every rank): the LM loss per
    answer token, the head loss per clip, the probe loss per present stream. So a step's gradient
    does not depend on how its clips are split into micro-batches and ranks (batch 4 = 2 x accum 2).
    Ranks scale by the world size because `average_grads` divides by it.
    """
    answer_tokens = [model.n_answer_tokens(b.answers) if with_llm else 0 for b, *_ in micro]
    n_tok, n_clips, n_lab, n_streams, n_attr, n_probe_attr = window_counts(micro, answer_tokens, d).tolist()
    logged = torch.zeros(4, dtype=torch.float64)
    # the encoder warm-up may isolate the encoders: each then learns from its own probes only
    isolate = tc.isolate_encoders and not with_llm
    for (batch, labels, va, attrs), n_answer in zip(micro, answer_tokens, strict=True):
        with autocast(d, tc):
            out = model(batch) if with_llm else model.perception(batch.image, batch.frames, batch.mel, batch.present,
                                                                  isolate=isolate)
        ce, se, probe = loss_sums(out, labels, va, batch.present)
        lm = _wide(out["lm_loss"]) * n_answer / n_tok if with_llm else ce.new_zeros(())
        head = ce / n_lab + se / (2 * n_clips)
        aux = probe / n_streams
        # the fused attribute head and the encoders' own attribute probes, each a mean over its scored targets
        attr = attribute_loss_sum(out, attrs) / n_attr + probe_attribute_loss_sum(out, attrs) / n_probe_attr
        (d.world * (lm + tc.head_weight * head + tc.aux_weight * aux + tc.attr_weight * attr)).backward()
        logged += torch.tensor([lm.item(), head.item(), aux.item(), attr.item()], dtype=torch.float64)
    return all_reduce_sum(logged.to(d.device), d).cpu()


def stage_steps(tc: TrainConfig, stage: int) -> tuple[int, int]:
    """(encoder warm-up steps, steps with the LLM) of a curriculum stage."""
    return (tc.encoder_steps, tc.perception_steps) if stage == 1 else (0, tc.cognition_steps)


def curriculum_run(stage: int, model: EmotionLLM, data: TrainData, val: FeatureSet | None, tc: TrainConfig,
                   out: Path, d: Dist) -> StageRun:
    """Stage 1 or 2 for `run_stage`. Stage 1 opens with `encoder_steps` of encoder warm-up (fast head + per-encoder
    probes, no LLM): the encoders learn from the label before the LLM's loss joins. Each phase has its own
    optimizer and learning-rate schedule."""
    warm, with_llm = stage_steps(tc, stage)
    perc = [p for p in model.perception.parameters() if p.requires_grad]
    lora = [p for p in model.llm.parameters() if p.requires_grad]
    adapters = [p for p in model.perception.adapters.parameters() if p.requires_grad]
    tuned = [p for p in perc if all(p is not a for a in adapters)]  # encoders, fusion, head, probes
    # once the encoders have had a warm-up (or came trained), the LLM's loss only fine-tunes them (the adapters
    # still learn at lr)
    tuned_lr = tc.lr * (tc.tuned_lr_scale if tc.encoder_steps or tc.init_perception else 1.0)

    def phase(step: int) -> Phase:
        if step < warm and tc.isolate_encoders:
            # each encoder as if trained alone: AdamW's default betas and no clipping of the global gradient norm
            # (with both, the temporal view stayed at chance; docs/synthemo-v2-training.md)
            return Phase(optimizer_for([(perc, tc.lr)], tc, betas=(0.9, 0.999)), perc, 0, warm, clip=0.0)
        if step < warm:
            return Phase(optimizer_for([(perc, tc.lr)], tc), perc, 0, warm)
        groups = [(adapters, tc.lr), (tuned, tuned_lr), (lora, tc.lora_lr)]
        return Phase(optimizer_for(groups, tc), perc + lora, warm, with_llm)

    def backward(micro: list[Sample], step: int) -> dict[str, float]:
        micro = [to_device(s, d.device) for s in micro]
        losses = window_backward(model, micro, step >= warm, tc, d).tolist()
        return dict(zip(("lm_loss", "head_loss", "aux_loss", "attr_loss"), losses, strict=True))

    model.train()
    return StageRun(
        stage=stage, total=warm + with_llm, phase=phase, starts=(warm,) if warm else (),
        source=lambda start: data.source(stage, tc, d.rank, d.world, start=start),
        layout={"kind": "shards" if data.sharded else "memory", "batch_size": tc.batch_size, "world": d.world,
                "lanes": max(1, tc.workers)},
        backward=backward, save=lambda state: save_all(model, out, d, state),
        validate=(lambda step: validate(model, val, n_llm=0 if step < warm else 48)) if val is not None else None,
        row=lambda step: {"phase": "encoders" if step < warm else "llm"})


# ---------------------------------------------------------------------------------------------
# entry point
# ---------------------------------------------------------------------------------------------


def train(
    preset: str | Path, data: str | Path, out: str | Path, stages: tuple[int, ...] = (0, 1, 2), resume: bool = False,
    seed: int | None = None, progress: bool = True, overrides: dict | None = None,
) -> Path:
    """Train a checkpoint into `out` from `data` (JSONL + media, or a shard directory or URL); returns its path."""
    d = init_dist()
    p: Preset = load_preset(preset)
    tc, cfg = p.train, p.model
    for k, v in (overrides or {}).items():
        setattr(tc, k, v)
    if seed is not None:
        tc.seed = seed
    tc.__post_init__()
    if 0 in stages and cfg.llm.path:
        raise ValueError(f"stage 0 pretrains a new LLM, but llm.path names one ({cfg.llm.path}): use --stages 1,2")
    if cfg.head.attributes not in (0, len(ATTRIBUTES)):
        raise ValueError(f"model.head.attributes must be 0 or {len(ATTRIBUTES)} (SynthEmo v2's attributes: "
                         f"{', '.join(a.name for a in ATTRIBUTES)}), got {cfg.head.attributes}")
    torch.set_num_threads(max(1, tc.threads // d.world))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    td = TrainData(data, cfg.frontend)
    state = torch.load(out / STATE_FILE, weights_only=False) if resume and (out / STATE_FILE).is_file() else None
    t_start = time.time()
    left, stopped = tc.stop_after, False  # optimizer steps this run may still take, over all its stages (0: all)
    start0 = stage0_start(state, resume, out, tc) if 0 in stages else None
    if start0 is not None:
        saved = state if start0 else None  # resuming inside stage 0: its optimizer and data position
        ran = run_stage(stage0_run(cfg, tc, td, out, d, resuming=bool(start0)), tc, out, d, start0,
                        saved and saved["optimizer"], saved and saved.get("data"), max_steps=left)
        if left:
            left -= ran
            stopped = left <= 0
    cfg.llm.vocab_size = Tokenizer(ck.llm_dir(out, cfg.llm.path)).vocab_size
    if d.main:
        save_yaml(cfg, out / ck.CONFIG_FILE)
    cur = [s for s in stages if s in (1, 2)]
    checksums: list[float] = []
    if cur and not stopped:
        curriculum_state = state if state is not None and state["stage"] > 0 else None
        checksums = run_curriculum(cfg, tc, td, out, d, cur, curriculum_state, progress, left)
    if d.main:
        prev = json.loads((out / ck.META_FILE).read_text()) if (out / ck.META_FILE).is_file() else {}
        source = ck.source_record(ck.llm_dir(out, cfg.llm.path))
        ck.save_meta(out, {**prev, "preset": str(preset), "data": str(data), "seed": tc.seed,
                           **({ck.META_LLM_SOURCE: source} if source else {}),
                           "stages_run": list(stages), "train": tc.__dict__,
                           "wall_s": prev.get("wall_s", 0) + round(time.time() - t_start, 1),
                           "world_size": d.world, "rank_param_checksums": checksums})
    barrier(d)
    return out


def stage0_start(state: dict | None, resume: bool, out: Path, tc: TrainConfig) -> int | None:
    """The step stage 0 starts from: 0, the saved one (resuming inside it), or None (it is done already)."""
    if not resume:
        return 0
    if state is not None:
        return state["step"] if state["stage"] == 0 and state["step"] < tc.lm_steps else None
    return None if (out / ck.LLM_DIR / "config.json").is_file() else 0  # no state: a saved LLM is a finished stage 0


def run_curriculum(cfg: ModelConfig, tc: TrainConfig, td: TrainData, out: Path, d: Dist, cur: list[int],
                   state: dict | None, progress: bool, left: int) -> list[float]:
    """Stages 1 and/or 2 (continuing from `state` when resuming; at most `left` steps when it is not 0); every
    rank's parameter checksum at the end."""
    bad = td.load(progress=progress and d.main)
    val_fs = td.validation(progress=progress) if d.main else None  # validation runs on rank 0 only
    for b in (bad, val_fs.bad if val_fs else []):
        if b and d.main:
            console.print(f"[yellow]skipped {len(b)} bad clip(s):[/] " + "; ".join(b[:5]))
    torch.manual_seed(tc.seed)
    resume_lora = state is not None or 1 not in cur
    model = build_model(cfg, out, resume_lora=resume_lora, init_perception=tc.init_perception).to(d.device)
    if not resume_lora and init_attribute_tokens(model, tc.attr_token_rms) and d.main:
        console.print("attribute tokens start at their cue phrases' embeddings")
    broadcast_params([q for q in model.parameters() if q.requires_grad], d)
    for stage in cur:
        start, opt_state, data_state = 0, None, None
        if state is not None:
            if state["stage"] > stage or (state["stage"] == stage and state["step"] >= _total(tc, stage)):
                continue
            if state["stage"] == stage:
                start, opt_state, data_state = state["step"], state["optimizer"], state.get("data")
        ran = run_stage(curriculum_run(stage, model, td, val_fs, tc, out, d), tc, out, d, start, opt_state, data_state,
                        max_steps=left)
        state = None
        if left:
            left -= ran
            if left <= 0:
                break
    return param_checksums([q for q in model.parameters() if q.requires_grad], d)


def _total(tc: TrainConfig, stage: int) -> int:
    return sum(stage_steps(tc, stage))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m emo_edge.train", description="Train (also under torchrun).")
    ap.add_argument("--preset", default="edge-small")
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--stages", default="0,1,2")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--set", action="append", default=[], help="train overrides KEY=VALUE (e.g. lm_steps=10)")
    a = ap.parse_args(argv)
    overrides = {k: _num(v) for k, v in (s.split("=", 1) for s in a.set)}
    train(a.preset, a.data, a.out, tuple(int(s) for s in a.stages.split(",")), a.resume, a.seed, overrides=overrides)
    if dist.is_initialized():
        dist.destroy_process_group()


def _num(v: str) -> int | float | str:
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v
