"""Tokenizers: our SentencePiece model (trained on the instruction corpus), a local HF tokenizer, or a GGUF's."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

SPECIAL_WORDS = ["<think>", "</think>", "<answer>", "</answer>"]
SPM_FILE = "tokenizer.model"
CHAT_SLOT = "\u0000user-content\u0000"  # stands for the user's content while the chat template is rendered


class Tokenizer:
    """encode/decode plus the ids the model needs; backed by SentencePiece or transformers."""

    def __init__(self, path: str | Path):
        path = Path(path)
        self.path = path
        if (path / SPM_FILE).is_file() and not (path / "tokenizer.json").is_file():
            import sentencepiece as spm

            self._sp = spm.SentencePieceProcessor(model_file=str(path / SPM_FILE))
            self._hf = None
            self.bos_id, self.eos_id = self._sp.bos_id(), self._sp.eos_id()
            self.pad_id = self._sp.pad_id() if self._sp.pad_id() >= 0 else self.eos_id
            self.vocab_size = self._sp.get_piece_size()
        else:
            from transformers import AutoTokenizer

            where = {"pretrained_model_name_or_path": str(path.parent), "gguf_file": path.name} \
                if path.suffix == ".gguf" else {"pretrained_model_name_or_path": str(path)}
            try:
                self._hf = AutoTokenizer.from_pretrained(**where)
            except (OSError, ValueError) as e:
                raise FileNotFoundError(f"{path}: no tokenizer ({SPM_FILE} or a Hugging Face tokenizer) found") from e
            self._sp = None
            self.bos_id = self._hf.bos_token_id
            self.eos_id = self._hf.eos_token_id
            self.pad_id = self._hf.pad_token_id if self._hf.pad_token_id is not None else self.eos_id
            self.vocab_size = len(self._hf)

    def encode(self, text: str) -> list[int]:
        if self._sp is not None:
            return list(self._sp.encode(text))
        return list(self._hf.encode(text, add_special_tokens=False))

    def chat_frame(self) -> tuple[str, str]:
        """The text the tokenizer's chat template puts before and after one user turn's content, with the
        generation prompt (the model's turn) opened; the leading BOS text left out (BOS is added as an id)."""
        template = getattr(self._hf, "chat_template", None) if self._hf is not None else None
        if not template:
            raise ValueError(f"llm.chat_template is set but the tokenizer at {self.path} has no chat template")
        text = self._hf.apply_chat_template([{"role": "user", "content": CHAT_SLOT}], tokenize=False,
                                            add_generation_prompt=True)
        if text.count(CHAT_SLOT) != 1:
            raise ValueError(f"{self.path}: the chat template does not place the user's content once")
        before, after = text.split(CHAT_SLOT)
        bos = self._hf.bos_token
        return (before[len(bos):] if bos and before.startswith(bos) else before), after

    def decode(self, ids: Iterable[int]) -> str:
        ids = [i for i in ids if i not in (self.bos_id, self.eos_id, self.pad_id)]
        if self._sp is not None:
            return self._sp.decode(ids)
        return self._hf.decode(ids, skip_special_tokens=True)


def train_sentencepiece(lines: Iterable[str], out_dir: str | Path, vocab_size: int) -> Tokenizer:
    """Train a unigram SentencePiece model on `lines` into out_dir/tokenizer.model (LLaMA id layout)."""
    import sentencepiece as spm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(list(lines)),
        model_prefix=str(out_dir / "tokenizer"),
        vocab_size=vocab_size,
        model_type="unigram",
        character_coverage=1.0,
        unk_id=0, bos_id=1, eos_id=2, pad_id=3,
        user_defined_symbols=SPECIAL_WORDS,
        hard_vocab_limit=False,
        num_threads=2,
        minloglevel=2,
    )
    (out_dir / "tokenizer.vocab").unlink(missing_ok=True)
    return Tokenizer(out_dir)
