"""Prompt layout shared by training, evaluation and the runtime (no torch here).

A prompt is `PREFIX <multimodal tokens> suffix`, the answer follows the suffix. The multimodal
tokens are spliced where the placeholder stands; text either side is tokenized on its own.

A model trained with `llm.evidence` reads, at the start of its suffix, the attribute head's readings in words
(`EVIDENCE`): the phrase of each observable attribute's likelier value, in the head's order, for the attributes
whose input is present. Its reasons then name what the perception read rather than what the label suggests.
"""

from __future__ import annotations

from collections.abc import Sequence

from emo_edge.data.schema import TASKS

PLACEHOLDER = "<mm>"
PREFIX = "Clip:"
INSTRUCTIONS: dict[str, str] = {
    "emotion": "Which emotion does the person show? Answer with one word.",
    "audio": "Describe the voice.",
    "image": "Describe the face.",
    "reason": "Explain which cues show how the person feels.",
    "think": "Think about the cues, then give the emotion.",
}
assert set(INSTRUCTIONS) == set(TASKS)
TEMPLATE = PREFIX + PLACEHOLDER + "{subtitle} Task: {instruction} Answer:"
# Answer lengths in generated tokens, shared by evaluation and the live runtime so both read the same answers.
LABEL_TOKENS = 8  # the one-word `emotion` answer
REASON_TOKENS = 192  # a `reason`: greedy decoding stops at EOS well before; a cut reason may lose its conclusion


# the attribute head's readings as the LLM of an `llm.evidence` model reads them ({cues}: phrases joined by ", ")
EVIDENCE = " Perceived: {cues}."
PRESENT_ORDER = ("image", "video", "audio")  # the columns of a `present` row


def evidence_text(readings: Sequence[tuple[str, Sequence[str]]], present: Sequence[float],
                  template: str = EVIDENCE) -> str:
    """The evidence text of one clip: `readings` gives, per attribute in the head's order, the phrase of the value
    it reads and the inputs (of `PRESENT_ORDER`) any of which shows the attribute; `present` is the clip's row of
    present flags. An attribute none of whose inputs is present is left out (the head cannot have seen it), and a
    clip with none left gets no evidence text."""
    if len(present) != len(PRESENT_ORDER):
        raise ValueError(f"present: expected {len(PRESENT_ORDER)} flags ({', '.join(PRESENT_ORDER)}), "
                         f"got {len(present)}")
    on = {name for name, flag in zip(PRESENT_ORDER, present, strict=True) if flag > 0}
    unknown = {s for _, streams in readings for s in streams} - set(PRESENT_ORDER)
    if unknown:
        raise ValueError(f"unknown input stream(s) {sorted(unknown)}; expected some of {', '.join(PRESENT_ORDER)}")
    cues = [phrase for phrase, streams in readings if on.intersection(streams)]
    return template.format(cues=", ".join(cues)) if cues else ""


def suffix(task: str, subtitle: str | None, template: str = TEMPLATE,
           instructions: dict[str, str] | None = None, evidence: str = "") -> str:
    """The text after the multimodal tokens; `subtitle=None` leaves the text modality out; `evidence` (from
    `evidence_text`, for a model trained with it) opens it.

    `template` and `instructions` default to this module's; a bundle passes the ones it recorded.
    """
    instructions = instructions or INSTRUCTIONS
    if task not in instructions:
        raise ValueError(f"unknown task {task!r}; tasks are {', '.join(instructions)}")
    sub = f" Subtitle: {subtitle.strip()}" if subtitle else ""
    return evidence + template.split(PLACEHOLDER, 1)[1].format(subtitle=sub, instruction=instructions[task])


def prompt_record(chat: tuple[str, str] | None = None, reads_evidence: bool = False) -> dict[str, object]:
    """The prompt layout as data, for a bundle's manifest; `chat`: the chat-template text before and after it;
    `reads_evidence`: the model was trained with the attribute head's readings in its prompt (`evidence_text`)."""
    record: dict[str, object] = {"template": TEMPLATE, "placeholder": PLACEHOLDER, "prefix": PREFIX,
                                 "instructions": dict(INSTRUCTIONS)}
    if chat is not None:
        record["chat"] = {"before": chat[0], "after": chat[1]}
    if reads_evidence:
        record["evidence"] = EVIDENCE
    return record


def text_only(task: str, subtitle: str | None, answer: str, evidence: str = "") -> str:
    """The prompt and answer as plain text (the multimodal slot left empty): stage-0 corpus lines."""
    return f"{PREFIX}{suffix(task, subtitle, evidence=evidence)} {answer}"
