"""The unified instruction format (MMEVerse-style): one JSON object per clip, one clip per line.

A record names its media by paths relative to the JSONL file's directory. `audio` may be the
string "from video" when the audio track is to be read from the video file. `targets` holds one
answer string per task (see TASKS); `cues` holds the ground-truth cue phrases that a `reason`
answer is expected to name (cue recall counts them).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

TASKS: tuple[str, ...] = ("emotion", "audio", "image", "reason", "think")
FROM_VIDEO = "from video"


@dataclass
class Record:
    id: str
    dataset: str
    video: str | None
    audio: str | None  # a path, FROM_VIDEO, or None when the clip has no audio
    subtitle: str
    label: str  # in the dataset's own label set
    targets: dict[str, str] = field(default_factory=dict)
    cues: list[str] = field(default_factory=list)
    valence: float | None = None
    arousal: float | None = None
    split: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, sort_keys=True)

    def media_path(self, root: Path, which: str) -> Path | None:
        """Absolute path of `video` or `audio` relative to `root` (the JSONL's directory)."""
        rel = self.video if which == "video" else self.audio
        if rel is None:
            return None
        if which == "audio" and rel == FROM_VIDEO:
            rel = self.video
        return (root / rel) if rel is not None else None


_REQUIRED = {"id": str, "dataset": str, "subtitle": str, "label": str}


def validate(obj: dict[str, Any], where: str = "record") -> Record:
    """Check one decoded JSON object against the schema and return it as a Record."""
    for key, typ in _REQUIRED.items():
        if key not in obj:
            raise ValueError(f"{where}: missing field {key!r}")
        if not isinstance(obj[key], typ):
            raise ValueError(f"{where}: field {key!r} must be {typ.__name__}, got {type(obj[key]).__name__}")
    if obj.get("video") is None and obj.get("audio") in (None, FROM_VIDEO):
        raise ValueError(f"{where}: a record needs a video or an audio path")
    targets = obj.get("targets", {})
    unknown = set(targets) - set(TASKS)
    if unknown:
        raise ValueError(f"{where}: unknown task(s) {sorted(unknown)} in targets; tasks are {', '.join(TASKS)}")
    known = {f for f in Record.__dataclass_fields__}
    extra = set(obj) - known
    if extra:
        raise ValueError(f"{where}: unknown field(s) {sorted(extra)}")
    return Record(**obj)


def read_jsonl(path: str | Path) -> list[Record]:
    """All records of a JSONL file; a bad line raises naming the file and line number."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such data file: {path}")
    records = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not valid JSON ({e.msg})") from e
            records.append(validate(obj, where=f"{path}:{n}"))
    return records


def write_jsonl(path: str | Path, records: list[Record]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for r in records:
            f.write(r.to_json() + "\n")
    tmp.replace(path)


def find_split(data: str | Path, split: str) -> Path:
    """`data` may be a JSONL file or a directory holding `<split>.jsonl`."""
    data = Path(data)
    if data.is_file():
        return data
    candidate = data / f"{split}.jsonl"
    if not candidate.is_file():
        raise FileNotFoundError(f"no {split}.jsonl in {data} (expected a JSONL file or a directory holding one)")
    return candidate
