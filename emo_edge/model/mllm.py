"""The multimodal LM: perception tokens spliced into a LLaMA-family causal LM (frozen + LoRA).

Sequence layout per sample: [BOS] [chat before] PREFIX <multimodal tokens> suffix [chat after] [answer EOS]
(the chat parts from the tokenizer's chat template when `llm.chat_template` is set; with `llm.evidence` the suffix
opens with the attribute head's readings in words, read from the same forward's perception). Tokens of a
missing modality are masked out of attention and take no position (positions are the running
count of attended tokens), which is what the llama.cpp runtime reproduces by not feeding them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from emo_edge.config import LLMConfig, LoRAConfig, ModelConfig
from emo_edge.model.perception import Perception
from emo_edge.model.tokenizer import Tokenizer
from emo_edge.prompts import PREFIX, evidence_text

MM_ID = -1  # placeholder id marking multimodal slots before the scatter
IGNORE = -100  # label id ignored by the loss


def build_llm(cfg: LLMConfig, tok: Tokenizer | None = None) -> nn.Module:
    """A fresh LLaMA with the configured shapes; vocabulary and special ids from `tok` when given."""
    from transformers import LlamaConfig, LlamaForCausalLM

    ids = {"bos_token_id": tok.bos_id, "eos_token_id": tok.eos_id, "pad_token_id": tok.pad_id} if tok else {}
    config = LlamaConfig(
        vocab_size=tok.vocab_size if tok else cfg.vocab_size, hidden_size=cfg.hidden,
        intermediate_size=cfg.intermediate, num_hidden_layers=cfg.layers, num_attention_heads=cfg.heads,
        num_key_value_heads=cfg.kv_heads, max_position_embeddings=cfg.max_position, tie_word_embeddings=False,
        attn_implementation="sdpa", **ids,
    )
    return LlamaForCausalLM(config)


def load_llm(path: str | Path) -> nn.Module:
    """A causal LM from a Hugging Face directory or a GGUF file (dequantised to float32 by transformers)."""
    from transformers import AutoModelForCausalLM

    path = Path(path)
    if path.suffix == ".gguf":
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such GGUF file")
        return AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32,
                                                    attn_implementation="sdpa")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: not a Hugging Face model directory (no config.json) nor a .gguf file")
    return AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32, attn_implementation="sdpa")


def add_lora(llm: nn.Module, cfg: LoRAConfig) -> nn.Module:
    """Freeze the backbone and wrap it with LoRA adapters (peft)."""
    from peft import LoraConfig, get_peft_model

    for p in llm.parameters():
        p.requires_grad_(False)
    lora = LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=list(cfg.targets),
                      bias="none")
    return get_peft_model(llm, lora)


@dataclass
class Batch:
    """Perception inputs (float32) and the text side of a batch."""

    image: torch.Tensor  # (B, 3, S, S) in [0, 1]
    frames: torch.Tensor  # (B, T, 3, s, s) in [0, 1]
    mel: torch.Tensor  # (B, n_mels, F)
    present: torch.Tensor  # (B, 3) over (image, video, audio); 1 present, 0 switched off
    suffixes: list[str]  # text after the multimodal tokens
    answers: list[str] | None = None  # training targets (None when generating)


class EmotionLLM(nn.Module):
    def __init__(self, cfg: ModelConfig, llm: nn.Module, tok: Tokenizer, allow_random: bool = False):
        super().__init__()
        self.cfg, self.llm, self.tok = cfg, llm, tok
        # allow_random: SigLIP/Whisper-architecture encoders without a path get random weights (Perception)
        self.perception = Perception(cfg, llm.get_input_embeddings().embedding_dim, allow_random)
        # chat: the tokenizer's chat-template text around the prompt (None: the bare prompt); each text span is
        # tokenized on its own, as the llama.cpp runtime does
        self.chat = tok.chat_frame() if cfg.llm.chat_template else None
        before, self._after_ids = (tok.encode(self.chat[0]), tok.encode(self.chat[1])) if self.chat else ([], [])
        self._prefix_ids = [*([tok.bos_id] if tok.bos_id is not None else []), *before, *tok.encode(PREFIX)]

    # -- the attribute head's readings in words ------------------------------------------------
    def with_evidence(self, suffixes: list[str], perception: dict[str, torch.Tensor], present: torch.Tensor,
                      ) -> list[str]:
        """`suffixes` opened with each clip's evidence text (`prompts.evidence_text`: the phrase of the value the
        attribute head reads, for each attribute whose input is present) when the model reads it, else as given."""
        if not self.cfg.llm.evidence:
            return suffixes
        from emo_edge.data.synth_v2 import ATTRIBUTES

        first = (perception["attributes"].detach().float() > 0).cpu().numpy()  # logits: > 0 reads values[0]
        flags = present.detach().float().cpu().numpy()
        out = []
        for s, row, on in zip(suffixes, first, flags, strict=True):
            readings = [(a.phrases[a.values[0] if f else a.values[1]], a.streams)
                        for a, f in zip(ATTRIBUTES, row, strict=True)]
            out.append(evidence_text(readings, on) + s)
        return out

    # -- sequence assembly ------------------------------------------------------------------
    def sequence_ids(self, suffix: str, answer: str | None) -> tuple[list[int], list[int]]:
        """Token ids with MM_ID slots, and the matching labels (IGNORE outside the answer)."""
        n_mm = self.cfg.tokens.total
        ids = [*self._prefix_ids, *([MM_ID] * n_mm), *self.tok.encode(suffix), *self._after_ids]
        labels = [IGNORE] * len(ids)
        if answer is not None:
            ans = [*self.tok.encode(answer), self.tok.eos_id]
            ids, labels = ids + ans, labels + ans
        return ids, labels

    def n_answer_tokens(self, answers: list[str] | None) -> int:
        """Answer tokens the LM loss averages over (each answer and its EOS), as `sequence_ids` labels them."""
        return sum(len(self.tok.encode(a)) + 1 for a in answers or [])

    def assemble(
        self, mm: torch.Tensor, mm_mask: torch.Tensor, suffixes: list[str], answers: list[str] | None,
        left_pad: bool = False,
    ) -> dict[str, torch.Tensor]:
        """inputs_embeds, attention_mask, position_ids (and labels) for the LLM."""
        b, n_mm, _ = mm.shape
        seqs = [self.sequence_ids(s, None if answers is None else answers[i]) for i, s in enumerate(suffixes)]
        length = max(len(ids) for ids, _ in seqs)
        ids = torch.full((b, length), self.tok.pad_id, dtype=torch.long)
        labels = torch.full((b, length), IGNORE, dtype=torch.long)
        mask = torch.zeros((b, length), dtype=mm_mask.dtype)
        for i, (s_ids, s_lab) in enumerate(seqs):
            sl = slice(length - len(s_ids), length) if left_pad else slice(0, len(s_ids))
            ids[i, sl], labels[i, sl], mask[i, sl] = torch.tensor(s_ids), torch.tensor(s_lab), 1
        ids, labels, mask = ids.to(mm.device), labels.to(mm.device), mask.to(mm.device)
        slots = ids == MM_ID
        n_slots = int(slots.sum())
        if n_slots != mm_mask.numel():
            raise ValueError(f"multimodal token count mismatch: {n_slots} placeholder slots, {mm_mask.numel()} tokens")
        embeds = self.llm.get_input_embeddings()(ids.clamp(min=0))
        embeds = embeds.masked_scatter(slots[..., None], mm.to(embeds.dtype))
        mask = mask.masked_scatter(slots, mm_mask)
        position_ids = (mask.cumsum(dim=1) - 1).clamp(min=0).long()
        return {"inputs_embeds": embeds, "attention_mask": mask.long(), "position_ids": position_ids,
                "labels": labels}

    # -- training forward --------------------------------------------------------------------
    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        """LM loss over answer tokens plus the fast head's outputs.

        Left-padded, so every answer ends at the last position and only the last (longest answer + 1) positions
        need logits: with a 262k-token vocabulary (Gemma) the full (B, L, V) logits would dominate the step."""
        p = self.perception(batch.image, batch.frames, batch.mel, batch.present)
        suffixes = self.with_evidence(batch.suffixes, p, batch.present)
        inputs = self.assemble(p["tokens"], p["token_mask"], suffixes, batch.answers, left_pad=True)
        labels = inputs.pop("labels")
        keep = int((labels != IGNORE).sum(dim=1).max()) + 1
        logits = self.llm(**inputs, logits_to_keep=keep).logits[:, :-1]  # (B, keep - 1, V)
        target = labels[:, labels.shape[1] - keep + 1:]
        lm_loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                                              ignore_index=IGNORE)
        heads = ("logits", "va", "aux", "attributes", "aux_attr")
        return {"lm_loss": lm_loss, **{k: v for k, v in p.items() if k in heads}}

    # -- greedy generation -------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, batch: Batch, max_new_tokens: int = 64, perception: dict | None = None) -> list[str]:
        """Greedy answers for each sample (KV-cached)."""
        from transformers import DynamicCache

        p = perception or self.perception(batch.image, batch.frames, batch.mel, batch.present)
        suffixes = self.with_evidence(batch.suffixes, p, batch.present)
        inputs = self.assemble(p["tokens"], p["token_mask"], suffixes, None, left_pad=True)
        inputs.pop("labels")
        mask, pos = inputs["attention_mask"], inputs["position_ids"]
        cache = DynamicCache()
        out = self.llm(**inputs, cache=cache, use_cache=True)
        b = mask.shape[0]
        done = torch.zeros(b, dtype=torch.bool, device=mask.device)
        tokens: list[list[int]] = [[] for _ in range(b)]
        next_pos = pos[:, -1:] + 1
        for _ in range(max_new_tokens):
            nxt = out.logits[:, -1].argmax(dim=-1)  # (B,)
            for i in range(b):
                if not done[i]:
                    if nxt[i].item() == self.tok.eos_id:
                        done[i] = True
                    else:
                        tokens[i].append(int(nxt[i]))
            if bool(done.all()):
                break
            mask = torch.cat([mask, torch.ones((b, 1), dtype=mask.dtype, device=mask.device)], dim=1)
            emb = self.llm.get_input_embeddings()(nxt[:, None])
            out = self.llm(inputs_embeds=emb, attention_mask=mask, position_ids=next_pos, cache=cache,
                           use_cache=True)
            next_pos = next_pos + 1
        return [self.tok.decode(t).strip() for t in tokens]
