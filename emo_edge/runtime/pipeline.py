"""The torch-free inference pipeline over a bundle: perception (ONNX Runtime) for the fast path,
llama.cpp with the multimodal tokens injected as embeddings for the slow path."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from emo_edge.prompts import evidence_text, suffix
from emo_edge.runtime.bundle import Bundle, softmax
from emo_edge.runtime.manifest import AttributeInfo


def evidence_from_probs(attributes: list[AttributeInfo], probs: np.ndarray, present: np.ndarray,
                        template: str) -> str:
    """The evidence text (`prompts.evidence_text`) of one clip's `attributes` row: each attribute's likelier value
    (the probability is that of `values[0]`, as in `EmotionRuntime.read_attributes`) as its phrase."""
    if len(probs) != len(attributes):
        raise ValueError(f"attributes: got {len(probs)} probabilities, the manifest names {len(attributes)} "
                         "attributes (re-export the bundle)")
    said = [(a.phrases[0] if float(p) >= 0.5 else a.phrases[1], a.shown_by)
            for a, p in zip(attributes, probs, strict=True)]
    return evidence_text(said, present, template)


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
        # the evidence template when the LLM was trained to read the attribute readings in its prompt, else None
        self.evidence_template: str | None = prompt.get("evidence")
        if self.evidence_template and not self.attributes:
            raise ValueError(f"{bundle.root}: the manifest's prompt has evidence but names no attributes "
                             "(re-export the bundle)")

    def load(self, llm: bool = True) -> dict[str, float]:
        """Open the perception session, and the LLM when `llm`, now instead of on first use; returns the seconds
        each took. A live stream loads before its input flows: opened on the first window, perception held the
        interpreter for about 0.6 s (importing onnx, merging the graphs), long enough for a ROS subscription's
        queue to overflow while its callbacks waited."""
        took = {}
        t = time.perf_counter()
        _ = self.bundle.perception
        took["perception_s"] = time.perf_counter() - t
        if llm:
            t = time.perf_counter()
            _ = self.bundle.llm
            took["llm_s"] = time.perf_counter() - t
        return took

    def perceive(self, image: np.ndarray, frames: np.ndarray, mel: np.ndarray, present: np.ndarray) -> dict[str, Any]:
        """Fast path for B clips: head label, scores, valence/arousal, the LLM tokens, and with an attribute head
        `readings`: per clip, (attribute, its likelier value, that value's probability) for each attribute, and
        `evidence`: per clip, the text `answer` needs (the readings in words for a bundle whose LLM reads them,
        else "")."""
        out = self.bundle.perception.run(image, frames, mel, present)
        scores = softmax(out["logits"])
        out["scores"] = scores
        out["labels"] = [self.labels[i] for i in scores.argmax(axis=-1)]
        if self.attributes and "attributes" in out:
            out["readings"] = [self.read_attributes(row) for row in np.asarray(out["attributes"])]
        n = len(scores)
        probs = np.asarray(out["attributes"]) if "attributes" in out else [None] * n
        out["evidence"] = [self.evidence(row, on) for row, on in zip(probs, np.asarray(present), strict=True)]
        return out

    def evidence(self, probs: np.ndarray | None, present: np.ndarray) -> str:
        """One clip's evidence text from its `attributes` row and its row of present flags (image, video, audio);
        "" for a bundle whose LLM was not trained to read it."""
        if not self.evidence_template:
            return ""
        if probs is None:
            raise ValueError("evidence: the fusion graph gave no attributes output, but the bundle's LLM reads the "
                             "attribute readings (re-export the bundle)")
        return evidence_from_probs(self.attributes, probs, present, self.evidence_template)

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
               gate: Callable[[], bool] | None = None, evidence: str | None = None) -> str:
        """Slow path for one clip: the LLM's answer to `task`, streamed to `on_token` piece by piece; `gate` is
        asked before each token (it may pause the decode, or stop it by returning False). `evidence`: the clip's
        `perceive(...)["evidence"]`, required when the bundle's LLM reads the attribute readings."""
        if evidence is None:
            if self.evidence_template:
                raise ValueError("answer: this bundle's LLM reads the attribute head's readings in its prompt; pass "
                                 "evidence=perceive(...)['evidence'][i] of the same clip")
            evidence = ""
        text = suffix(task, subtitle, self._template, self._instructions, evidence)
        return self.bundle.llm.answer(tokens.astype(np.float32), token_mask, text, max_new_tokens, on_token=on_token,
                                      gate=gate, chat=self._chat)
