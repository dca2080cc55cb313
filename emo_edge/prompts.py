"""Prompt layout shared by training, evaluation and the runtime (no torch here).

A prompt is `PREFIX <multimodal tokens> suffix`, the answer follows the suffix. The multimodal
tokens are spliced where the placeholder stands; text either side is tokenized on its own.
"""

from __future__ import annotations

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


def suffix(task: str, subtitle: str | None, template: str = TEMPLATE,
           instructions: dict[str, str] | None = None) -> str:
    """The text after the multimodal tokens; `subtitle=None` leaves the text modality out.

    `template` and `instructions` default to this module's; a bundle passes the ones it recorded.
    """
    instructions = instructions or INSTRUCTIONS
    if task not in instructions:
        raise ValueError(f"unknown task {task!r}; tasks are {', '.join(instructions)}")
    sub = f" Subtitle: {subtitle.strip()}" if subtitle else ""
    return template.split(PLACEHOLDER, 1)[1].format(subtitle=sub, instruction=instructions[task])


def prompt_record(chat: tuple[str, str] | None = None) -> dict[str, object]:
    """The prompt layout as data, for a bundle's manifest; `chat`: the chat-template text before and after it."""
    record: dict[str, object] = {"template": TEMPLATE, "placeholder": PLACEHOLDER, "prefix": PREFIX,
                                 "instructions": dict(INSTRUCTIONS)}
    if chat is not None:
        record["chat"] = {"before": chat[0], "after": chat[1]}
    return record


def text_only(task: str, subtitle: str | None, answer: str) -> str:
    """The prompt and answer as plain text (the multimodal slot left empty): stage-0 corpus lines."""
    return f"{PREFIX}{suffix(task, subtitle)} {answer}"
