"""Sharded dataset format for large training sets (numpy only; torch lives in `emo_edge.train.data`).

A split of the unified JSONL is preprocessed once, through the same `load_clip` as everything else,
into shards of stacked clip arrays:

    SHARDS/train.jsonl             the kept records, in shard order (the text side: stage 0 reads it)
    SHARDS/train/index.json        format, frontend config, shard list (file, clips, bytes), bad clips
    SHARDS/train/shard-000000.npz  frames, image, mel, labels, va, records (uncompressed: read = memcpy)

Shards are read whole, one at a time, from a local directory or, when fsspec is installed, from any
URL it understands (s3://, gs://, https://, ...). Which shards a reader gets is a pure function of
(seed, stream, epoch, consumer, consumers): every epoch permutes the shards and deals them round-robin
to the `ranks x workers` consumers, and shuffles the clips inside each shard. A consumer's stream of
batches is endless (epochs chain), so ranks never run dry at different steps, and it can start at any
batch index without decoding what comes before it: that index is the whole resume state.
"""

from __future__ import annotations

import io
import json
import multiprocessing as mp
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emo_edge.config import FrontendConfig
from emo_edge.data.features import Clip, FeatureSet, _stack, _work
from emo_edge.data.schema import Record, read_jsonl, validate

FORMAT_VERSION = 1
INDEX_FILE = "index.json"
ARRAYS = ("frames", "image", "mel", "labels", "va")


# ---------------------------------------------------------------------------------------------
# storage seam: local paths always, URLs through fsspec when it is installed
# ---------------------------------------------------------------------------------------------


def is_url(path: str | Path) -> bool:
    return "://" in str(path) and not str(path).startswith("file://")


def join(base: str | Path, *parts: str) -> str:
    return "/".join([str(base).rstrip("/"), *parts]) if is_url(base) else str(Path(base, *parts))


def _fsspec_open(url: str, mode: str) -> Any:
    try:
        import fsspec
    except ImportError as e:
        raise ValueError(f"{url}: reading or writing URLs needs fsspec (pip install fsspec); "
                         "local paths work without it") from e
    return fsspec.open(url, mode)


def read_bytes(path: str | Path) -> bytes:
    if is_url(path):
        with _fsspec_open(str(path), "rb") as f:
            return f.read()
    p = Path(str(path).removeprefix("file://"))
    if not p.is_file():
        raise FileNotFoundError(f"no such file: {p}")
    return p.read_bytes()


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write a whole file; local writes go through a temporary name so a crash leaves no partial file."""
    if is_url(path):
        with _fsspec_open(str(path), "wb") as f:
            f.write(data)
        return
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(p)


def exists(path: str | Path) -> bool:
    if is_url(path):
        try:
            import fsspec
        except ImportError:
            return False
        fs, p = fsspec.core.url_to_fs(str(path))
        return bool(fs.exists(p))
    return Path(path).exists()


def is_shard_dir(data: str | Path, split: str = "train") -> bool:
    """True when `data` holds `<split>/index.json` (a shard directory rather than JSONL + media)."""
    return exists(join(data, split, INDEX_FILE))


# ---------------------------------------------------------------------------------------------
# the index and one shard
# ---------------------------------------------------------------------------------------------


@dataclass
class ShardIndex:
    """One split's shards. `root` is the split directory (local path or URL) the file names are under."""

    root: str
    frontend: dict[str, Any]
    shards: list[dict[str, Any]]  # {"file", "n", "bytes"} in writing order
    bad: list[str]
    n_clips: int

    @classmethod
    def load(cls, data: str | Path, split: str) -> ShardIndex:
        root = join(data, split)
        meta = json.loads(read_bytes(join(root, INDEX_FILE)))
        if meta.get("format") != FORMAT_VERSION:
            raise ValueError(f"{join(root, INDEX_FILE)}: shard format {meta.get('format')}, "
                             f"this version reads {FORMAT_VERSION}; write the shards again")
        return cls(root, meta["frontend"], meta["shards"], meta.get("bad", []), meta["n_clips"])

    @property
    def sizes(self) -> list[int]:
        return [s["n"] for s in self.shards]

    def check_frontend(self, fe: FrontendConfig) -> None:
        """The shards hold preprocessed arrays: the model's frontend must be the one they were written with."""
        want = asdict(fe)
        got = {"peak_frame": "max_change", **self.frontend}  # shards written before the field used that selector
        diff = {k: (got.get(k), v) for k, v in want.items() if got.get(k) != v}
        if diff:
            raise ValueError(f"{self.root}: shards were written for another frontend "
                             f"(field: shards vs model) {diff}; write them again with this preset")

    def read(self, i: int) -> FeatureSet:
        """Shard i as a FeatureSet (the arrays `sample_batch` takes)."""
        entry = self.shards[i]
        path = join(self.root, entry["file"])
        data = read_bytes(path)
        if len(data) != entry["bytes"]:
            raise ValueError(f"{path}: {len(data)} bytes, the index says {entry['bytes']} (truncated or replaced?)")
        with np.load(io.BytesIO(data)) as z:
            records = [validate(json.loads(s), where=f"{path} record {k}") for k, s in enumerate(z["records"])]
            return FeatureSet(records, *(z[k] for k in ARRAYS))

    def read_all(self) -> FeatureSet:
        """Every shard in one FeatureSet (for a validation split that fits in memory)."""
        return concat([self.read(i) for i in range(len(self.shards))], bad=self.bad)


def concat(parts: list[FeatureSet], bad: list[str] | None = None) -> FeatureSet:
    recs = [r for p in parts for r in p.records]
    arrays = (np.concatenate([getattr(p, k) for p in parts]) for k in ARRAYS)
    return FeatureSet(recs, *arrays, bad=list(bad or []))


def take(fs: FeatureSet, idx: np.ndarray) -> FeatureSet:
    return FeatureSet([fs.records[i] for i in idx], *(getattr(fs, k)[idx] for k in ARRAYS))


def _shard_bytes(fs: FeatureSet) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **{k: getattr(fs, k) for k in ARRAYS}, records=np.array([r.to_json() for r in fs.records]))
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------


def _decode(jobs: list, workers: int) -> Iterator[Clip | str]:
    """Clips (or 'id: reason' strings for bad ones) in job order, streamed: memory stays at a shard."""
    if workers > 1 and len(jobs) > 8:
        with mp.get_context("spawn").Pool(workers) as pool:
            yield from pool.imap(_work, jobs, chunksize=4)
    else:
        yield from map(_work, jobs)


def write_shards(
    jsonl: str | Path, out: str | Path, split: str, fe: FrontendConfig, shard_size: int, workers: int = 2,
    seed: int = 0, progress: bool = True,
) -> ShardIndex:
    """Preprocess a JSONL split into shards of `shard_size` clips under out/<split>/.

    Records are shuffled (seeded) first, so a JSONL sorted by source dataset still gives mixed shards.
    A clip that cannot be decoded is reported (in the index and the return value) and skipped.
    """
    from rich.progress import track

    if shard_size < 1:
        raise ValueError(f"--shard-size must be >= 1, got {shard_size}")
    jsonl = Path(jsonl)
    if not is_url(out) and Path(out).resolve() == jsonl.parent.resolve():
        raise ValueError(f"--out {out}: the shard directory must not be the data directory "
                         f"(it gets its own {split}.jsonl)")
    records = read_jsonl(jsonl)
    records = [records[i] for i in np.random.default_rng(seed).permutation(len(records))]
    root = join(out, split)
    jobs = [(r, jsonl.parent, fe) for r in records]
    entries: list[dict[str, Any]] = []
    kept: list[Record] = []
    bad: list[str] = []
    pending: list[tuple[Record, Clip]] = []

    def flush() -> None:
        fs = _stack(pending, [])
        name = f"shard-{len(entries):06d}.npz"
        data = _shard_bytes(fs)
        write_bytes(join(root, name), data)
        entries.append({"file": name, "n": len(fs), "bytes": len(data)})
        kept.extend(fs.records)
        pending.clear()

    clips = _decode(jobs, workers)
    for r, c in track(zip(records, clips, strict=True), total=len(records), description=f"sharding {jsonl.name}",
                      disable=not progress):
        if isinstance(c, str):
            bad.append(c)
            continue
        pending.append((r, c))
        if len(pending) == shard_size:
            flush()
    if pending:
        flush()
    if not entries:
        raise ValueError(f"{jsonl}: no usable clip among {len(records)} ({bad[0] if bad else 'empty file'})")
    index = {"format": FORMAT_VERSION, "split": split, "frontend": asdict(fe), "shard_size": shard_size,
             "seed": seed, "n_clips": len(kept), "shards": entries, "bad": bad, "source": str(jsonl)}
    write_bytes(join(out, f"{split}.jsonl"), "".join(r.to_json() + "\n" for r in kept).encode())
    write_bytes(join(root, INDEX_FILE), json.dumps(index, indent=1).encode())
    return ShardIndex(root, index["frontend"], entries, bad, len(kept))


def read_records(data: str | Path, split: str) -> list[Record]:
    """The kept records of a sharded split (the text side, without decoding any shard)."""
    text = read_bytes(join(data, f"{split}.jsonl")).decode("utf-8")
    return [validate(json.loads(line), where=f"{split}.jsonl:{n}") for n, line in enumerate(text.splitlines(), 1)
            if line.strip()]


# ---------------------------------------------------------------------------------------------
# reading plan: which consumer reads which shard, in which order
# ---------------------------------------------------------------------------------------------


def epoch_shards(n_shards: int, epoch: int, seed: tuple[int, ...], consumer: int, consumers: int) -> list[int]:
    """The shards `consumer` (of `consumers` = ranks x workers) reads in `epoch`, in order."""
    if n_shards < consumers:
        raise ValueError(f"{n_shards} shard(s) cannot feed {consumers} readers (ranks x loader workers): "
                         "write smaller shards (--shard-size) or use fewer loader workers")
    perm = np.random.default_rng([*seed, epoch]).permutation(n_shards)
    return [int(s) for s in perm[consumer::consumers]]


def clip_order(n: int, epoch: int, shard: int, seed: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng([*seed, epoch, shard, 1]).permutation(n)


def consumer_batches(
    index: ShardIndex, seed: tuple[int, ...], consumer: int, consumers: int, batch_size: int, start: int = 0,
) -> Iterator[FeatureSet]:
    """Endless batches of `batch_size` clips for one consumer, from its local batch index `start` on.

    The consumer's clips form one stream over its shards of epoch 0, then epoch 1, ...; batch m is
    clips [m*B, (m+1)*B) of that stream (a batch may span two shards). Shards wholly before `start`
    are skipped without being read.
    """
    skip = start * batch_size  # clips of the stream to pass over
    carry: FeatureSet | None = None  # fewer than batch_size clips left over from the previous shard
    epoch = 0
    while True:
        for s in epoch_shards(len(index.shards), epoch, seed, consumer, consumers):
            n = index.sizes[s]
            if skip >= n:
                skip -= n
                continue
            fs = index.read(s)
            order = clip_order(n, epoch, s, seed)[skip:]
            skip = 0
            if carry is not None:
                need = batch_size - len(carry)
                carry = concat([carry, take(fs, order[:need])])
                order = order[need:]
                if len(carry) < batch_size:
                    continue
                yield carry
                carry = None
            full = len(order) - len(order) % batch_size
            for j in range(0, full, batch_size):
                yield take(fs, order[j : j + batch_size])
            carry = take(fs, order[full:]) if full < len(order) else None
        epoch += 1
