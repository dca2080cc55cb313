"""The torch-free inference pipeline over a bundle: perception (ONNX Runtime) for the fast path,
llama.cpp with the multimodal tokens injected as embeddings for the slow path."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from emo_edge.prompts import suffix
from emo_edge.runtime.bundle import Bundle, softmax


class EmotionRuntime:
    def __init__(self, bundle: Bundle):
        self.bundle = bundle
        self.labels = bundle.labels
        prompt = bundle.manifest.prompt
        self._template, self._instructions = prompt["template"], prompt["instructions"]
        chat = prompt.get("chat")  # the backbone's chat-template text around the prompt, when it was trained so
        self._chat = (chat["before"], chat["after"]) if chat else None
        # the observable attributes the fusion graph reads (empty: a model or bundle without them)
        self.attributes = list(bundle.manifest.attributes or [])

    def perceive(self, image: np.ndarray, frames: np.ndarray, mel: np.ndarray, present: np.ndarray) -> dict[str, Any]:
        """Fast path for B clips: head label, scores, valence/arousal, the LLM tokens, and with an attribute head
        `readings`: per clip, (attribute, its likelier value, that value's probability) for each attribute."""
        out = self.bundle.perception.run(image, frames, mel, present)
        scores = softmax(out["logits"])
        out["scores"] = scores
        out["labels"] = [self.labels[i] for i in scores.argmax(axis=-1)]
        if self.attributes and "attributes" in out:
            out["readings"] = [self.read_attributes(row) for row in np.asarray(out["attributes"])]
        return out

    def read_attributes(self, probs: np.ndarray) -> list[tuple[str, str, float]]:
        """(name, likelier value, its probability) per attribute from one clip's `attributes` row (each column the
        probability of the attribute's first value)."""
        if len(probs) != len(self.attributes):
            raise ValueError(f"attributes: got {len(probs)} probabilities, the manifest names {len(self.attributes)} "
                             "attributes (re-export the bundle)")
        out = []
        for a, p in zip(self.attributes, probs, strict=True):
            first = float(p) >= 0.5
            out.append((a.name, a.values[0] if first else a.values[1], float(p) if first else 1.0 - float(p)))
        return out

    @property
    def runtime_profile(self) -> dict[str, Any]:
        """The `runtime` section of the target profile the bundle was exported for ({} for older bundles)."""
        return dataclasses.asdict(self.bundle.manifest.target.runtime)

    def set_llm_threads(self, n_threads: int) -> None:
        """llama.cpp's CPU threads from now on (loads the LLM if it is not yet)."""
        self.bundle.llm.set_threads(n_threads)

    def answer(self, tokens: np.ndarray, token_mask: np.ndarray, task: str, subtitle: str | None,
               max_new_tokens: int = 96, on_token: Callable[[str], None] | None = None,
               gate: Callable[[], bool] | None = None) -> str:
        """Slow path for one clip: the LLM's answer to `task`, streamed to `on_token` piece by piece; `gate` is
        asked before each token (it may pause the decode, or stop it by returning False)."""
        text = suffix(task, subtitle, self._template, self._instructions)
        return self.bundle.llm.answer(tokens.astype(np.float32), token_mask, text, max_new_tokens, on_token=on_token,
                                      gate=gate, chat=self._chat)
