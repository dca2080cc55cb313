"""The attribute head's readings said in words at the start of the LLM's prompt (`llm.evidence`): which phrases,
for which present inputs, the same text in training (PyTorch) and serving (the torch-free runtime), and a runtime
that will not ask such an LLM without them."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from emo_edge.config import ModelConfig, TokenBudget, load_preset
from emo_edge.data.synth_v2 import ATTRIBUTES
from emo_edge.model.mllm import EmotionLLM
from emo_edge.prompts import EVIDENCE, PRESENT_ORDER, evidence_text, prompt_record, suffix

A = len(ATTRIBUTES)
STATIC = [a for a in ATTRIBUTES if a.view == "visual" and not a.temporal]
TEMPORAL = [a for a in ATTRIBUTES if a.temporal]
VOCAL = [a for a in ATTRIBUTES if a.view == "vocal"]


def evidence_cfg(on: bool = True) -> ModelConfig:
    cfg = copy.deepcopy(load_preset("tiny").model)
    cfg.head.attributes = A
    cfg.tokens = TokenBudget(fusion=cfg.tokens.fusion, image=cfg.tokens.image, video=cfg.tokens.video,
                             audio=cfg.tokens.audio, attributes=A)
    cfg.llm.evidence = on
    return cfg


def first_phrases(attrs) -> list[str]:
    return [a.phrases[a.values[0]] for a in attrs]


def said(text: str) -> list[str]:
    """The phrases of an evidence text, in order."""
    assert text.startswith(" Perceived: ") and text.endswith(".")
    return text.removeprefix(" Perceived: ").removesuffix(".").split(", ")


@pytest.mark.parametrize(("present", "shown"), [
    ((1, 1, 1), ATTRIBUTES),
    ((1, 0, 0), STATIC),  # one peak frame: no blinking, no onset
    ((0, 1, 0), STATIC + TEMPORAL),  # the temporal view shows the face too
    ((0, 0, 1), VOCAL),
    ((1, 0, 1), STATIC + VOCAL),
])
def test_evidence_says_the_attributes_a_present_input_shows(present, shown):
    readings = [(a.phrases[a.values[0]], a.streams) for a in ATTRIBUTES]
    assert said(evidence_text(readings, present)) == [p for p in first_phrases(ATTRIBUTES)
                                                      if p in first_phrases(shown)]


def test_evidence_is_empty_without_inputs_and_rejects_bad_flags():
    readings = [(a.phrases[a.values[1]], a.streams) for a in ATTRIBUTES]
    assert evidence_text(readings, (0, 0, 0)) == ""
    with pytest.raises(ValueError, match=r"expected 3 flags \(image, video, audio\), got 2"):
        evidence_text(readings, (1, 1))
    with pytest.raises(ValueError, match=r"unknown input stream\(s\) \['depth'\]"):
        evidence_text([("a tilted head", ("depth",))], (1, 1, 1))


def test_the_evidence_opens_the_suffix_and_nothing_else_changes():
    plain = suffix("reason", "Hello there.")
    ev = " Perceived: a tilted head."
    assert suffix("reason", "Hello there.", evidence=ev) == ev + plain
    assert plain.startswith(" Subtitle: Hello there. Task:")
    assert prompt_record(reads_evidence=True)["evidence"] == EVIDENCE
    assert "evidence" not in prompt_record()


def logits_and_present(b: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(b, A, generator=g) * 3
    present = torch.tensor([[1, 1, 1], [1, 0, 1], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 1, 1]], dtype=torch.float32)
    return logits, present[:b]


def test_the_model_says_what_its_head_reads():
    """A logit > 0 reads the attribute's first value (its training target 1); flipping one logit's sign flips that
    phrase alone; a model without `llm.evidence` leaves the suffixes as they are."""
    logits, present = logits_and_present()
    model = SimpleNamespace(cfg=evidence_cfg())
    suffixes = [suffix("reason", None)] * len(logits)
    out = EmotionLLM.with_evidence(model, suffixes, {"attributes": logits}, present)
    def read(row: torch.Tensor, attrs=ATTRIBUTES) -> list[str]:
        return [a.phrases[a.values[0] if row[ATTRIBUTES.index(a)] > 0 else a.values[1]] for a in attrs]

    assert all(text.endswith(suffixes[0]) for text in out)
    full = said(out[0].removesuffix(suffixes[0]))
    assert full == read(logits[0])
    flipped = logits.clone()
    flipped[0, 3] = -flipped[0, 3]
    again = said(EmotionLLM.with_evidence(model, suffixes, {"attributes": flipped}, present)[0]
                 .removesuffix(suffixes[0]))
    assert [i for i, (x, y) in enumerate(zip(full, again, strict=True)) if x != y] == [3]
    assert said(out[3].removesuffix(suffixes[0])) == read(logits[3], VOCAL)  # audio alone
    assert said(out[2].removesuffix(suffixes[0])) == read(logits[2], STATIC + TEMPORAL)  # temporal view alone
    off = SimpleNamespace(cfg=evidence_cfg(on=False))
    assert EmotionLLM.with_evidence(off, suffixes, {"attributes": logits}, present) == suffixes


def test_training_and_serving_say_the_same_text():
    """The runtime words the exported probabilities (sigmoid of the head's logits) with the manifest's attributes
    exactly as the PyTorch model words the logits it trains with."""
    from emo_edge.export.bundle import _attributes
    from emo_edge.runtime.pipeline import evidence_from_probs

    cfg = evidence_cfg()
    logits, present = logits_and_present()
    logits[1, 0] = 1e-4  # near the boundary both sides must agree on
    model = SimpleNamespace(cfg=cfg)
    trained = EmotionLLM.with_evidence(model, [""] * len(logits), {"attributes": logits}, present)
    infos = _attributes(cfg)
    served = [evidence_from_probs(infos, torch.sigmoid(row).numpy(), on.numpy(), EVIDENCE)
              for row, on in zip(logits, present, strict=True)]
    assert served == trained
    assert all(t for t in trained[:5])  # every clip here has an input, so each says something


def test_an_older_manifests_attributes_fall_back_to_their_view():
    from emo_edge.runtime.manifest import AttributeInfo

    old = AttributeInfo("blinking", "visual", ["frequent", "none"], ["frequent blinking", "steady eyes"])
    assert old.shown_by == ["image", "video"]
    assert AttributeInfo("pause", "vocal", ["fluent", "pause"], ["fluent speech", "a long pause"]).shown_by == ["audio"]
    new = AttributeInfo("blinking", "visual", ["frequent", "none"], ["frequent blinking", "steady eyes"], ["video"])
    assert new.shown_by == ["video"]
    assert set(PRESENT_ORDER) >= {s for a in ATTRIBUTES for s in a.streams}


class RecordingLM:
    def __init__(self) -> None:
        self.texts: list[str] = []

    def answer(self, tokens, mask, text, max_new_tokens, on_token=None, gate=None, chat=None):
        self.texts.append(text)
        return "The answer is happy."


def runtime(evidence: bool):
    from emo_edge.export.bundle import _attributes
    from emo_edge.runtime.pipeline import EmotionRuntime

    cfg = evidence_cfg(evidence)
    manifest = SimpleNamespace(prompt=prompt_record(reads_evidence=evidence), attributes=_attributes(cfg))
    bundle = SimpleNamespace(labels=["happy"], manifest=manifest, llm=RecordingLM(), root="bundle")
    return EmotionRuntime(bundle)


def test_the_runtime_will_not_ask_an_evidence_llm_without_the_readings():
    rt = runtime(evidence=True)
    tokens, mask = np.zeros((4, 8), np.float32), np.ones(4, np.float32)
    with pytest.raises(ValueError, match="reads the attribute head's readings in its prompt; pass evidence="):
        rt.answer(tokens, mask, "reason", "Hi.")
    probs = np.full(A, 0.9, np.float32)
    text = rt.evidence(probs, np.array([0, 0, 1], np.float32))
    assert said(text) == first_phrases(VOCAL)
    rt.answer(tokens, mask, "reason", "Hi.", evidence=text)
    assert rt.bundle.llm.texts == [text + suffix("reason", "Hi.")]
    with pytest.raises(ValueError, match="no attributes output"):
        rt.evidence(None, np.ones(3, np.float32))
    plain = runtime(evidence=False)
    assert plain.evidence(probs, np.ones(3, np.float32)) == ""
    plain.answer(tokens, mask, "reason", "Hi.")
    assert plain.bundle.llm.texts == [suffix("reason", "Hi.")]


def test_evidence_needs_an_attribute_head():
    cfg = copy.deepcopy(load_preset("tiny").model)
    cfg.llm.evidence = True
    with pytest.raises(ValueError, match="llm.evidence: .* head.attributes is 0"):
        ModelConfig(**{f: getattr(cfg, f) for f in cfg.__dataclass_fields__})


def test_the_report_says_how_often_the_reasons_name_what_the_head_read():
    """`reason_follows_head_by_attribute`: per attribute, the share of reasons naming the head's value, whether
    or not that value is the clip's own. Here the head misreads the gaze and both reasons follow it; the second
    names the mouth the head did not read."""
    from emo_edge.data.schema import Record
    from emo_edge.eval.evaluate import Predictions, reason_scores

    names = [a.name for a in ATTRIBUTES]
    own = {a.name: a.values[0] for a in ATTRIBUTES}
    head = [a.values[0] for a in ATTRIBUTES]
    head[names.index("gaze")] = "direct"  # own: averted
    other_mouth = list(head)
    other_mouth[names.index("mouth")] = ATTRIBUTES[names.index("mouth")].values[1]

    def reason(values: list[str]) -> str:
        return "The face shows " + ", ".join(a.phrases[v] for a, v in zip(ATTRIBUTES, values, strict=True)) + "."

    recs = [Record(id=str(i), dataset="SynthEmo", video="v.mp4", audio="a.wav", subtitle="", label="happy",
                   targets={}, cues=[a.phrases[own[a.name]] for a in ATTRIBUTES], split="test",
                   meta={"attributes": own}) for i in range(2)]
    preds = Predictions(head=["happy"] * 2, reasons=[reason(head), reason(other_mouth)], attributes=[head, head])
    got = reason_scores(recs, preds)
    follows = got["reason_follows_head_by_attribute"]
    assert follows["gaze"] == 1.0 and follows["mouth"] == 0.5
    assert all(v == 1.0 for k, v in follows.items() if k not in ("gaze", "mouth"))
    assert got["reason_follows_head"] == pytest.approx((9 + 0.5) / 10)
    assert got["cue_recall_by_attribute"]["gaze"] == 0.0  # following the head, both name the wrong gaze
    assert reason_scores(recs, Predictions(head=["happy"] * 2, reasons=preds.reasons))["reason_follows_head"] is None


def test_training_and_generation_prompts_open_with_the_same_forwards_readings(tiny_ckpt):
    """The LM loss and greedy generation of an `llm.evidence` model see each clip's evidence, worded from the
    attribute head of that same forward and the clip's present inputs."""
    from emo_edge.config import load_model_config
    from emo_edge.model.mllm import Batch
    from emo_edge.train.loop import build_model

    cfg = load_model_config(tiny_ckpt / "config.yaml")
    cfg.head.attributes, cfg.tokens.attributes, cfg.llm.evidence = A, A, True
    model = build_model(cfg, tiny_ckpt, resume_lora=False).eval()
    fe, g = cfg.frontend, torch.Generator().manual_seed(0)
    present = torch.tensor([[1, 1, 1], [0, 0, 1]], dtype=torch.float32)
    batch = Batch(image=torch.rand(2, 3, fe.image_size, fe.image_size, generator=g),
                  frames=torch.rand(2, fe.n_frames, 3, fe.frame_size, fe.frame_size, generator=g),
                  mel=torch.randn(2, fe.n_mels, fe.n_mel_frames, generator=g), present=present,
                  suffixes=[suffix("reason", "Hi."), suffix("reason", None)], answers=["The answer is happy."] * 2)
    seen: list[list[str]] = []
    assemble = model.assemble
    model.assemble = lambda mm, mask, suffixes, *a, **k: (seen.append(list(suffixes)), assemble(mm, mask, suffixes,
                                                                                               *a, **k))[1]
    with torch.no_grad():
        p = model.perception(batch.image, batch.frames, batch.mel, batch.present)
        assert torch.isfinite(model(batch)["lm_loss"])
        model.generate(batch, max_new_tokens=2, perception=p)
    logits = p["attributes"]
    want = [evidence_text([(a.phrases[a.values[0] if x > 0 else a.values[1]], a.streams)
                           for a, x in zip(ATTRIBUTES, row, strict=True)], on) + s
            for row, on, s in zip(logits, present, batch.suffixes, strict=True)]
    assert seen == [want, want]
    assert said(want[1].removesuffix(batch.suffixes[1])) == [
        a.phrases[a.values[0] if logits[1, i] > 0 else a.values[1]] for i, a in enumerate(ATTRIBUTES) if a in VOCAL]


def test_stage_0_reads_each_v2_records_own_attributes_before_its_answers():
    """Stage 0 of an evidence model pretrains on a line per task opened with the record's true attributes in words,
    next to its subtitle; a record without attributes (v1, real data) and a model without evidence get none."""
    from emo_edge.data.schema import Record
    from emo_edge.train.loop import corpus_lines

    rng = np.random.default_rng(1)
    values = {a.name: str(rng.choice(a.values)) for a in ATTRIBUTES}
    targets = {"emotion": "happy", "reason": "The face shows a smile. The answer is happy."}
    v2 = Record(id="a", dataset="SynthEmo", video="v.mp4", audio="a.wav", subtitle="Hi.", label="happy",
                targets=targets, cues=[], split="train", meta={"attributes": values, "mouth_style": "line"})
    v1 = Record(id="b", dataset="SynthEmo", video="v.mp4", audio="a.wav", subtitle="Hi.", label="happy",
                targets=targets, cues=[], split="train", meta={})
    true_lines = [line for line in corpus_lines([v2], evidence=True) if "Perceived:" in line and "Subtitle:" in line]
    assert len(true_lines) == len(targets)
    assert said(true_lines[1].split(" Subtitle:")[0].removeprefix("Clip:")) == [
        a.phrases[values[a.name]] for a in ATTRIBUTES]
    assert true_lines[1].endswith(targets["reason"])
    assert not any("Perceived:" in line for line in corpus_lines([v2]) + corpus_lines([v1], evidence=True))


def v2_record(i: int, label: str):
    """A SynthEmo v2 record's text (no media) with its targets written as the generator writes them."""
    from emo_edge.data import synth_v2 as v2
    from emo_edge.data.schema import Record

    rng = np.random.default_rng(i)
    values = v2.sample_attributes(rng, label)
    t = v2.write_targets(label, values, {"mouth_style": "line", "intensity": 0.5}, ("Hi.", "matching", None), rng)
    return Record(id=f"r{i}", dataset="SynthEmo", video="v.mp4", audio="a.wav", subtitle="Hi.", label=label,
                  targets=t["targets"], cues=t["cues"], split="train",
                  meta={"attributes": values, "mouth_style": "line"})


@pytest.mark.parametrize("label", ["surprise", "worried", "happy"])
def test_stage_0s_counterfactual_lines_answer_what_their_words_say(label):
    """Each v2 record also gives, without its subtitle, the emotion, reason and think lines of a clip whose every
    attribute is redrawn: the reason names exactly the words' values (it is the generator's reason for them), and
    for worried / surprise the words' onset decides the label, so both labels follow from one record's face.
    Mutated: the counterfactual keeping the record's label (surprise / worried fail), the lines saying the record's
    own values instead of the drawn ones (all three fail)."""
    from emo_edge.data import synth_v2 as v2
    from emo_edge.train.loop import corpus_lines

    value_of = {(a.name, p): v for a in ATTRIBUTES for v, p in a.phrases.items()}
    by_phrase = {p: a.name for a in ATTRIBUTES for p in a.phrases.values()}
    labels, differs = set(), 0
    for i in range(24):
        rec = v2_record(i, label)
        lines = [line for line in corpus_lines([rec], evidence=True) if "Perceived:" in line]
        cf = [line for line in lines if "Subtitle:" not in line]
        assert len(cf) == len(v2.COUNTERFACTUAL_TASKS)
        words = said(cf[0].split(" Task:")[0].removeprefix("Clip:"))
        drawn = {by_phrase[p]: value_of[(by_phrase[p], p)] for p in words}
        answers = {line.split(" Task: ")[1].split(" Answer: ")[0]: line.split(" Answer: ", 1)[1] for line in cf}
        emotion = answers[next(k for k in answers if "one word" in k)]
        want = {"sudden": "surprise", "slow": "worried"}[drawn["onset"]] if label in v2.TEMPORAL_PAIR else label
        assert emotion == want
        reason = next(a for a in answers.values() if a.startswith("The face"))
        assert reason == v2.write_targets(want, drawn, {"mouth_style": "line", "intensity": 0.5},
                                          ("", "neutral", None), np.random.default_rng(0))["targets"]["reason"]
        labels.add(emotion)
        differs += drawn != rec.meta["attributes"]
    assert differs >= 20
    assert labels == ({"worried", "surprise"} if label in v2.TEMPORAL_PAIR else {label})


def test_the_bench_leaves_room_for_the_longest_evidence():
    """The bench's llama.cpp context holds its budget sweep's prompts: for an evidence bundle that is the budget
    plus the text, which the longest evidence (every attribute by its longer phrase) lengthens."""
    from emo_edge.bench.runner import _longest_evidence
    from emo_edge.export.bundle import _attributes
    from emo_edge.runtime.pipeline import evidence_from_probs

    infos = _attributes(evidence_cfg())
    m = SimpleNamespace(prompt=prompt_record(reads_evidence=True), attributes=infos)
    longest = _longest_evidence(m)
    assert said(longest) == [max(a.phrases, key=len) for a in infos]
    g = np.random.default_rng(0)
    for _ in range(20):  # no clip's evidence is longer
        probs, on = g.random(A), g.integers(0, 2, 3).astype(np.float32)
        assert len(evidence_from_probs(infos, probs, on, EVIDENCE)) <= len(longest)
    assert _longest_evidence(SimpleNamespace(prompt=prompt_record(), attributes=infos)) == ""
