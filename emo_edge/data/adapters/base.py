"""What every adapter shares: the clip description an adapter yields, annotation readers, label
maps, and the media pipeline that turns clip descriptions into unified records.

An adapter only reads its dataset's annotation files and yields `ClipSpec`s; `prepare` checks
each clip's media (ffprobe), cuts segments and extracts 16 kHz mono audio with ffmpeg where the
dataset ships no wav, and writes `<split>.jsonl` plus `prepare_report.json` into the output
directory. A clip whose media are missing or unreadable is reported with its id and the reason
and left out; a missing annotation file is fatal (FileNotFoundError naming it).
"""

from __future__ import annotations

import csv
import functools
import json
import os
import re
import shutil
import subprocess
import zipfile
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import yaml

from emo_edge.audio import SAMPLE_RATE  # Hz, mono: what the frontend expects
from emo_edge.data.schema import Record, write_jsonl

FFMPEG_TIMEOUT_S = 120
LABELMAPS = Path(__file__).resolve().parents[1] / "labelmaps.yaml"


class ClipError(ValueError):
    """A clip whose media cannot be used; the message says why."""


@dataclass
class ClipSpec:
    """One clip as an adapter reads it from the annotations, before its media are checked."""

    id: str
    split: str
    label: str  # in the dataset's own label set; for multi-label clips, the labels joined by ", "
    video: Path | None
    audio: Path | None = None  # a wav shipped with the dataset; None: taken from the video
    subtitle: str = ""
    segment: tuple[float, float] | None = None  # (start, end) in seconds within `video`
    valence: float | None = None
    arousal: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)  # e.g. labels (multi-label), intent, sentiment


@dataclass(frozen=True)
class Adapter:
    """A source dataset: its name in the registry, its label map key and its annotation reader."""

    name: str
    labelmap: str
    scan: Callable[[Path], Iterable[ClipSpec]]
    doc: str


# ---------------------------------------------------------------------------------------------
# label maps
# ---------------------------------------------------------------------------------------------


@functools.cache
def _labelmaps() -> dict[str, Any]:
    return yaml.safe_load(LABELMAPS.read_text(encoding="utf-8"))


@dataclass(frozen=True)
class LabelMap:
    labels: tuple[str, ...]
    to_shared: dict[str, str | None]
    aliases: dict[str, str]

    def own(self, raw: str, where: str = "") -> str:
        """The dataset label for an annotation's spelling; ValueError naming the valid labels."""
        name = str(raw).strip().lower()
        name = self.aliases.get(name, name)
        if self.labels and name not in self.labels:
            raise ValueError(f"{where}unknown label {raw!r}; expected one of {', '.join(self.labels)}")
        return name

    def shared(self, label: str) -> str | None:
        return self.to_shared.get(label)


def labelmap(key: str) -> LabelMap:
    """The label set and shared-label map of one dataset, from labelmaps.yaml."""
    maps = _labelmaps()
    if key not in maps:
        raise ValueError(f"no label map {key!r}; known: {', '.join(sorted(maps))}")
    m = maps[key]
    return LabelMap(tuple(m["labels"]), dict(m.get("to_shared") or {}), dict(m.get("aliases") or {}))


# ---------------------------------------------------------------------------------------------
# annotation readers
# ---------------------------------------------------------------------------------------------


def require(path: Path) -> Path:
    """`path` if it exists; FileNotFoundError naming it (a dataset's annotation file is not optional)."""
    if not path.exists():
        raise FileNotFoundError(f"expected {path} (is --root the dataset's top directory?)")
    return path


def first_existing(candidates: Iterable[Path], what: str) -> Path:
    """The first of `candidates` that exists; FileNotFoundError naming `what` and every place looked at.

    Releases of one dataset differ in where they put a file (a label file at the top or in the
    folder of a separately released archive); each adapter lists the documented places.
    """
    candidates = list(candidates)
    for path in candidates:
        if path.exists():
            return path
    raise FileNotFoundError(f"missing {what}: expected one of {', '.join(map(str, candidates))} "
                            "(is --root the dataset's top directory?)")


def read_csv(path: Path, header: bool = True) -> list[dict[str, str]] | list[list[str]]:
    """Rows of a CSV file (BOM tolerated): dicts keyed by the header, or plain lists without one."""
    with require(path).open(encoding="utf-8-sig", errors="replace", newline="") as f:
        return list(csv.DictReader(f)) if header else [row for row in csv.reader(f) if row]


def column(row: dict[str, str], *names: str) -> str:
    """The first of `names` present in `row` (annotation files spell columns differently across releases)."""
    for name in names:
        if name in row:
            return row[name]
    raise KeyError(f"none of the columns {names} in {sorted(row)}")


_XLSX_NS = {"m": "http://schemas.openxmlformats.org/spreadsheetml/2006/main"}


def read_xlsx(path: Path) -> list[dict[str, str]]:
    """Rows of the first sheet of an .xlsx file as dicts keyed by the first row (values as text).

    Only what annotation sheets use: shared and inline strings, numbers. Read with the standard
    library (an .xlsx is a zip of XML parts), so no spreadsheet package is needed.
    """
    with zipfile.ZipFile(require(path)) as z:
        shared = []
        if "xl/sharedStrings.xml" in z.namelist():
            root = ElementTree.fromstring(z.read("xl/sharedStrings.xml"))
            shared = ["".join(t.text or "" for t in si.iter(f"{{{_XLSX_NS['m']}}}t")) for si in root]
        sheet = ElementTree.fromstring(z.read("xl/worksheets/sheet1.xml"))
    rows = [[_cell_text(c, shared) for c in _row_cells(r)] for r in sheet.iterfind(".//m:sheetData/m:row", _XLSX_NS)]
    if not rows:
        return []
    head = [h.strip() for h in rows[0]]
    return [dict(zip(head, r + [""] * (len(head) - len(r)), strict=False)) for r in rows[1:] if any(r)]


def _row_cells(row: ElementTree.Element) -> list[ElementTree.Element | None]:
    """Cells of a row placed by their column letters (empty cells are omitted in the XML)."""
    cells: list[ElementTree.Element | None] = []
    for c in row.iterfind("m:c", _XLSX_NS):
        letters = re.match(r"[A-Z]+", c.get("r", "")) if c.get("r") else None
        col = _column_index(letters.group(0)) if letters else len(cells)
        cells += [None] * (col - len(cells))
        cells.append(c)
    return cells


def _column_index(letters: str) -> int:
    n = 0
    for ch in letters:
        n = n * 26 + ord(ch) - ord("A") + 1
    return n - 1


def _cell_text(c: ElementTree.Element | None, shared: list[str]) -> str:
    if c is None:
        return ""
    if c.get("t") == "inlineStr":
        return "".join(t.text or "" for t in c.iter(f"{{{_XLSX_NS['m']}}}t"))
    v = c.find("m:v", _XLSX_NS)
    text = "" if v is None or v.text is None else v.text
    return shared[int(text)] if c.get("t") == "s" and text else text


def split_words(text: str) -> list[str]:
    """'[happy, excited]', 'happy, excited' or "['happy', 'excited']" -> ['happy', 'excited']."""
    return [w.strip().lower() for w in re.split(r"[,;，、\[\]'\"]", str(text)) if w.strip()]


# ---------------------------------------------------------------------------------------------
# media: ffprobe / ffmpeg
# ---------------------------------------------------------------------------------------------


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} is not installed (apt-get install ffmpeg); data prepare needs it")
    return path


def _call(cmd: list[str]) -> str:
    """Run an ffmpeg-family command; ClipError with the tool's last stderr line on failure."""
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=FFMPEG_TIMEOUT_S)
    except subprocess.CalledProcessError as e:
        last = (e.stderr or "").strip().splitlines()[-1:] or ["no output"]
        raise ClipError(f"{Path(cmd[0]).name} failed: {last[0]}") from e
    except subprocess.TimeoutExpired as e:
        raise ClipError(f"{Path(cmd[0]).name} timed out after {FFMPEG_TIMEOUT_S} s") from e
    return res.stdout


def stream_kinds(path: Path) -> set[str]:
    """Kinds of the streams in a media file ({'video', 'audio'}); ClipError if it cannot be read."""
    out = _call([_tool("ffprobe"), "-v", "error", "-show_entries", "stream=codec_type", "-of", "csv=p=0", str(path)])
    kinds = {line.strip().strip(",") for line in out.splitlines() if line.strip()}
    if not kinds:
        raise ClipError("no audio or video stream")
    return kinds


def extract_audio(src: Path, dst: Path, segment: tuple[float, float] | None = None) -> Path:
    """16 kHz mono PCM wav of `src` (or of its `segment`, in seconds) at `dst`."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    cut = ["-ss", f"{segment[0]:.3f}", "-to", f"{segment[1]:.3f}"] if segment else []
    _call([_tool("ffmpeg"), "-nostdin", "-y", "-v", "error", *cut, "-i", str(src), "-vn", "-ac", "1",
           "-ar", str(SAMPLE_RATE), "-c:a", "pcm_s16le", str(dst)])
    return dst


def cut_video(src: Path, dst: Path, segment: tuple[float, float]) -> Path:
    """The `segment` (seconds) of `src` re-encoded to mp4 at `dst` (video only; audio is kept apart)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    _call([_tool("ffmpeg"), "-nostdin", "-y", "-v", "error", "-ss", f"{segment[0]:.3f}", "-to", f"{segment[1]:.3f}",
           "-i", str(src), "-an", "-c:v", "mpeg4", "-q:v", "3", str(dst)])
    return dst


# ---------------------------------------------------------------------------------------------
# ClipSpec -> Record
# ---------------------------------------------------------------------------------------------


def _rel(path: Path, out: Path) -> str:
    return os.path.relpath(path.resolve(), out.resolve())


def _media(spec: ClipSpec, out: Path, dataset: str) -> tuple[str | None, str | None, dict[str, Any]]:
    """(video, audio) paths relative to `out` for one clip, extracting or cutting what is needed."""
    notes: dict[str, Any] = {}
    video = spec.video
    kinds: set[str] = set()
    if video is not None:
        if not video.is_file():
            raise ClipError(f"missing video file {video}")
        kinds = stream_kinds(video)
        if "video" not in kinds:
            raise ClipError(f"{video.name} holds no video stream")
    if spec.audio is not None and not spec.audio.is_file():
        raise ClipError(f"missing audio file {spec.audio}")
    stem = out / "media" / dataset / spec.id
    if video is not None and spec.segment is not None:
        notes["source_video"], notes["segment_s"] = str(video), list(spec.segment)
        video = cut_video(video, stem.with_suffix(".mp4"), spec.segment)
    audio = spec.audio
    if audio is None and spec.video is not None:
        if "audio" in kinds:
            audio = extract_audio(spec.video, stem.with_suffix(".wav"), spec.segment)
        else:
            notes["no_audio"] = "the video has no audio track"
    return (_rel(video, out) if video else None), (_rel(audio, out) if audio else None), notes


def to_record(spec: ClipSpec, out: Path, dataset: str, lm: LabelMap) -> Record:
    """The unified record of one clip; ClipError when its media cannot be used."""
    video, audio, notes = _media(spec, out, dataset)
    labels = spec.meta.get("labels") or [spec.label]
    shared = [s for s in (lm.shared(x) for x in labels) if s]
    return Record(
        id=spec.id, dataset=dataset, video=video, audio=audio, subtitle=spec.subtitle, label=spec.label,
        targets={"emotion": spec.label} if spec.label else {}, valence=spec.valence, arousal=spec.arousal,
        split=spec.split, meta={**spec.meta, **notes, "shared_label": shared[0] if shared else None},
    )


def _convert(spec: ClipSpec, out: Path, dataset: str, lm: LabelMap) -> Record | dict[str, str]:
    try:
        return to_record(spec, out, dataset, lm)
    except ClipError as e:
        return {"id": spec.id, "split": spec.split, "reason": str(e)}


def convert_all(
    specs: Iterable[ClipSpec | dict[str, str]], out: Path, dataset: str, lm: LabelMap, workers: int = 2,
) -> tuple[list[Record], list[dict[str, str]]]:
    """Records of the usable clips and {id, split, reason} for the others, in input order.

    An adapter may yield a {id, split, reason} dict itself for a clip it cannot describe (e.g. a
    label outside the dataset's set); it is reported like a clip with broken media.
    """
    specs = list(specs)
    todo = [s for s in specs if isinstance(s, ClipSpec)]
    with ThreadPoolExecutor(max(1, workers)) as pool:  # the work is in ffmpeg subprocesses
        done = dict(zip((id(s) for s in todo), pool.map(lambda s: _convert(s, out, dataset, lm), todo), strict=True))
    results = [done[id(s)] if isinstance(s, ClipSpec) else s for s in specs]
    return [r for r in results if isinstance(r, Record)], [r for r in results if not isinstance(r, Record)]


def by_split(records: Iterable[Record]) -> Iterator[tuple[str, list[Record]]]:
    groups: dict[str, list[Record]] = {}
    for r in records:
        groups.setdefault(r.split or "all", []).append(r)
    yield from sorted(groups.items())


def write_outputs(out: Path, source: str, records: list[Record], bad: list[dict[str, str]]) -> dict[str, Any]:
    """Write `<split>.jsonl` per split and `prepare_report.json`; return the report."""
    counts = {}
    for split, recs in by_split(records):
        write_jsonl(out / f"{split}.jsonl", recs)
        counts[split] = len(recs)
    report = {"source": source, "counts": counts, "n_records": len(records), "n_bad": len(bad), "bad": bad}
    (out / "prepare_report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
    return report
