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


def suffix(task: str, subtitle: str | None) -> str:
    """The text after the multimodal tokens; `subtitle=None` leaves the text modality out."""
    if task not in INSTRUCTIONS:
        raise ValueError(f"unknown task {task!r}; tasks are {', '.join(INSTRUCTIONS)}")
    sub = f" Subtitle: {subtitle.strip()}" if subtitle else ""
    return TEMPLATE.split(PLACEHOLDER, 1)[1].format(subtitle=sub, instruction=INSTRUCTIONS[task])


def text_only(task: str, subtitle: str | None, answer: str) -> str:
    """The prompt and answer as plain text (the multimodal slot left empty): stage-0 corpus lines."""
    return f"{PREFIX}{suffix(task, subtitle)} {answer}"
