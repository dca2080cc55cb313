"""Clip loading and the feature cache: records -> model-ready arrays (numpy only).

`load_clip` decodes a record's files and hands them to `emo_edge.clip.clip_from_media`, the one
frontend of training, evaluation and the runtime. A set of records is preprocessed once per frontend
configuration and cached next to the JSONL; bad clips are skipped and reported with the reason, never silently dropped.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from emo_edge.audio import AudioError, load_wav
from emo_edge.clip import Clip, clip_from_media
from emo_edge.config import FrontendConfig
from emo_edge.data.schema import Record, read_jsonl
from emo_edge.labels import LABELS
from emo_edge.vision import VideoError, read_video

CACHE_VERSION = 2  # bump when preprocessing changes


class ClipError(ValueError):
    """A clip that cannot be used, with the clip id and the problem in the message."""


def load_clip(record: Record, root: Path, fe: FrontendConfig) -> Clip:
    """Decode one record's video and audio; ClipError naming the clip and the problem."""
    try:
        video_path = record.media_path(root, "video")
        audio_path = record.media_path(root, "audio")
        if video_path is None or audio_path is None:
            raise ClipError("SynthEmo-style clips need both a video and an audio file")
        frames, _fps = read_video(video_path)
        wave = load_wav(audio_path, fe.sample_rate)
        return clip_from_media(frames, wave, fe)
    except (AudioError, VideoError, ClipError) as e:
        raise ClipError(f"clip {record.id}: {e}") from e


@dataclass
class FeatureSet:
    """Stacked arrays for N clips, aligned with `records`."""

    records: list[Record]
    frames: np.ndarray  # (N, T, s, s, 3) uint8
    image: np.ndarray  # (N, S, S, 3) uint8
    mel: np.ndarray  # (N, n_mels, F) float16
    labels: np.ndarray  # (N,) int64 index into LABELS (-1 if outside the label set)
    va: np.ndarray  # (N, 2) float32 valence, arousal (0 where unknown)
    bad: list[str] = field(default_factory=list)  # "clip id: reason" for each skipped clip

    def __len__(self) -> int:
        return len(self.records)


def _work(args: tuple[Record, Path, FrontendConfig]) -> Clip | str:
    record, root, fe = args
    try:
        return load_clip(record, root, fe)
    except ClipError as e:
        return str(e)


def _cache_path(jsonl: Path, fe: FrontendConfig) -> Path:
    stat = jsonl.stat()
    key = json.dumps([CACHE_VERSION, asdict(fe), stat.st_size, stat.st_mtime_ns], sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return jsonl.parent / ".cache" / f"{jsonl.stem}-{digest}.npz"


def load_features(
    jsonl: str | Path, fe: FrontendConfig, workers: int = 2, limit: int | None = None, progress: bool = True,
    use_cache: bool = True,
) -> FeatureSet:
    """Preprocess every clip of a JSONL (cached per frontend config); bad clips are reported and skipped."""
    jsonl = Path(jsonl)
    records = read_jsonl(jsonl)[:limit] if limit else read_jsonl(jsonl)
    cache = _cache_path(jsonl, fe)
    if use_cache and limit is None and cache.is_file():
        return _read_cache(cache, records)
    root = jsonl.parent
    jobs = [(r, root, fe) for r in records]
    results = _run(jobs, workers, progress, f"preprocessing {jsonl.name}")
    keep = [(r, c) for r, c in zip(records, results, strict=True) if isinstance(c, Clip)]
    bad = [c for c in results if isinstance(c, str)]
    if not keep:
        raise ClipError(f"{jsonl}: no usable clip among {len(records)} ({bad[0] if bad else 'empty file'})")
    fs = _stack(keep, bad)
    if use_cache and limit is None:
        _write_cache(cache, fs)
    return fs


def _run(jobs: list, workers: int, progress: bool, desc: str) -> list:
    from rich.progress import track

    if workers > 1 and len(jobs) > 8:
        with mp.get_context("spawn").Pool(workers) as pool:
            it = pool.imap(_work, jobs, chunksize=8)
            return list(track(it, total=len(jobs), description=desc, disable=not progress))
    return [_work(j) for j in track(jobs, description=desc, disable=not progress)]


def _stack(pairs: list[tuple[Record, Clip]], bad: list[str]) -> FeatureSet:
    recs = [r for r, _ in pairs]
    labels = np.array([LABELS.index(r.label) if r.label in LABELS else -1 for r in recs], dtype=np.int64)
    va = np.array([[r.valence or 0.0, r.arousal or 0.0] for r in recs], dtype=np.float32)
    return FeatureSet(
        records=recs,
        frames=np.stack([c.frames for _, c in pairs]),
        image=np.stack([c.image for _, c in pairs]),
        mel=np.stack([c.mel for _, c in pairs]).astype(np.float16),
        labels=labels, va=va, bad=bad,
    )


def _write_cache(path: Path, fs: FeatureSet) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, frames=fs.frames, image=fs.image, mel=fs.mel, labels=fs.labels, va=fs.va,
             ids=np.array([r.id for r in fs.records]), bad=np.array(fs.bad, dtype=object))
    tmp.replace(path)


def _read_cache(path: Path, records: list[Record]) -> FeatureSet:
    z = np.load(path, allow_pickle=True)
    by_id = {r.id: r for r in records}
    recs = [by_id[i] for i in z["ids"].tolist()]
    return FeatureSet(recs, z["frames"], z["image"], z["mel"], z["labels"], z["va"], list(z["bad"]))
