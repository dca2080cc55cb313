"""Training batches from either data layout, with one batch-building function.

`sample_batch` turns clip arrays into a model batch (task mix, modality dropout, augmentation). Two
sources feed it:

- `MemorySource`: a split preprocessed into memory (`load_features`, SynthEmo-sized sets); batch j
  draws its clips at random.
- `ShardSource`: shards (`emo_edge.data.shards`) read and turned into batches in DataLoader worker
  processes; every rank and worker reads its own shards.

Batch j of a rank is a pure function of (seed, stage, rank, j) plus, for shards, the reader layout
(world size, loader workers, batch size): its random draws come from a generator seeded with those
numbers, not from a running state. The number of batches consumed is therefore the whole data
position, saved in `train_state.pt`, and a resumed run sees exactly the batches of an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from emo_edge.config import FrontendConfig, TrainConfig
from emo_edge.data import shards as sh
from emo_edge.data.features import FeatureSet, load_features
from emo_edge.data.schema import Record, find_split, read_jsonl
from emo_edge.data.synth_v2 import ATTRIBUTES
from emo_edge.model.inputs import to_batch
from emo_edge.model.mllm import Batch
from emo_edge.train.augment import augment_views, shift_audio

STAGE_TASKS: dict[int, dict[str, float]] = {
    1: {"emotion": 0.4, "audio": 0.3, "image": 0.3},
    2: {"emotion": 0.3, "reason": 0.4, "think": 0.3},
}
# batch, labels (B,), valence/arousal (B, 2), observable attributes (B, A): 0/1, -1 where unknown
Sample = tuple[Batch, torch.Tensor, torch.Tensor, torch.Tensor]


def attribute_targets(records: list[Record]) -> np.ndarray:
    """(N, A) float32 targets of SynthEmo v2's observable attributes, in `synth_v2.ATTRIBUTES` order:
    1 for an attribute's first value in sorted order, 0 for the other, -1 where a record has none
    (v1 clips, real datasets)."""
    out = np.full((len(records), len(ATTRIBUTES)), -1.0, dtype=np.float32)
    for i, r in enumerate(records):
        values = (r.meta or {}).get("attributes") or {}
        for j, a in enumerate(ATTRIBUTES):
            if a.name in values:
                out[i, j] = float(values[a.name] == a.values[0])
    return out


# the view an attribute is seen in: its target counts only where that stream is present
ATTRIBUTE_STREAM = np.array([1 if a.view == "visual" else 2 for a in ATTRIBUTES])  # index into FUSED
# attributes that change over the clip: one peak frame cannot show them
TEMPORAL_ATTRIBUTES = tuple(a.name for a in ATTRIBUTES if a.temporal)
# (streams in FUSED order, attributes): 1 where that encoder's own attribute probe is asked for the attribute,
# what its view adds: the peak frame the visual ones one frame shows, the temporal view the ones that change over
# the clip, audio the vocal ones. (Asking the temporal view for all six kept it at chance for 1200 steps.)
PROBE_ATTRIBUTES = np.array([
    [a.view == "visual" and a.name not in TEMPORAL_ATTRIBUTES for a in ATTRIBUTES],
    [a.name in TEMPORAL_ATTRIBUTES for a in ATTRIBUTES],
    [a.view == "vocal" for a in ATTRIBUTES],
], dtype=np.float32)


def sample_batch(fs: FeatureSet, idx: np.ndarray, stage: int, tc: TrainConfig, rng: np.random.Generator) -> Sample:
    """Batch with modality dropout and per-sample tasks drawn from the stage's task mix."""
    b = len(idx)
    u = rng.random(b)
    video_on = ~(u < tc.drop_video)
    audio_on = ~((u >= tc.drop_video) & (u < tc.drop_video + tc.drop_audio))  # never both off
    text_on = rng.random(b) >= tc.drop_text
    mix = STAGE_TASKS[stage]
    tasks = []
    for i in range(b):
        allowed = {t: w for t, w in mix.items()
                   if not (t == "audio" and not audio_on[i]) and not (t == "image" and not video_on[i])}
        names = list(allowed)
        tasks.append(names[rng.choice(len(names), p=np.array(list(allowed.values())) / sum(allowed.values()))])
    recs = [fs.records[i] for i in idx]
    frames, image = fs.frames[idx], fs.image[idx]
    mel = fs.mel[idx]
    if tc.augment:
        frames, image = augment_views(frames, image, rng)
        mel = shift_audio(mel, rng)
    batch = to_batch(frames, image, mel, video_on, audio_on, tasks,
                     [r.subtitle if t else None for r, t in zip(recs, text_on, strict=True)],
                     [r.targets[t] for r, t in zip(recs, tasks, strict=True)])
    attrs = attribute_targets(recs)
    attrs[~video_on[:, None] & (ATTRIBUTE_STREAM == 1)[None]] = -1.0
    attrs[~audio_on[:, None] & (ATTRIBUTE_STREAM == 2)[None]] = -1.0
    return batch, torch.from_numpy(fs.labels[idx]), torch.from_numpy(fs.va[idx]), torch.from_numpy(attrs)


def batch_rng(seed: int, stage: int, rank: int, j: int) -> np.random.Generator:
    """The generator of batch j: a function of its coordinates only (resume needs no generator state)."""
    return np.random.default_rng([seed, stage, rank, j])


def batch_to(batch: Batch, device: torch.device) -> Batch:
    if device.type == "cpu":
        return batch
    moved = {f.name: getattr(batch, f.name).to(device, non_blocking=True) for f in dataclasses.fields(batch)
             if isinstance(getattr(batch, f.name), torch.Tensor)}
    return dataclasses.replace(batch, **moved)


def to_device(sample: Sample, device: torch.device) -> Sample:
    batch, labels, va, attrs = sample
    return batch_to(batch, device), labels.to(device), va.to(device), attrs.to(device)


# ---------------------------------------------------------------------------------------------
# sources: an endless iterator of samples with a resumable position
# ---------------------------------------------------------------------------------------------


class MemorySource:
    """Batches drawn at random (with replacement) from an in-memory FeatureSet."""

    def __init__(self, fs: FeatureSet, stage: int, tc: TrainConfig, rank: int, start: int = 0):
        self.fs, self.stage, self.tc, self.rank, self.n = fs, stage, tc, rank, start

    def __iter__(self) -> Iterator[Sample]:
        return self

    def __next__(self) -> Sample:
        rng = batch_rng(self.tc.seed, self.stage, self.rank, self.n)
        self.n += 1
        return sample_batch(self.fs, rng.choice(len(self.fs), self.tc.batch_size), self.stage, self.tc, rng)

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "memory", "batches": self.n, "batch_size": self.tc.batch_size}

    def close(self) -> None:
        pass


class TextSource:
    """Stage 0's batches: `batch_size` token sequences drawn with replacement by one seeded stream per rank, each
    padded to the batch's longest as (ids, attention mask, labels with -100 on the padding), all (B, L) int64.
    Batch j is the j-th draw of the stream, so a resumed source replays the draws before its start (integers
    only, cheap) and goes on with the batches the uninterrupted run would have drawn."""

    def __init__(self, encoded: list[list[int]], batch_size: int, pad_id: int, seed: int, world: int, start: int = 0):
        self.encoded, self.batch_size, self.pad_id, self.world = encoded, batch_size, pad_id, world
        self.rng = random.Random(seed)
        for _ in range(start * batch_size):
            self.rng.randrange(len(encoded))
        self.n = start

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        seqs = [self.encoded[self.rng.randrange(len(self.encoded))] for _ in range(self.batch_size)]
        self.n += 1
        return pad_sequences(seqs, self.pad_id)

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "text", "batches": self.n, "batch_size": self.batch_size, "world": self.world}

    def close(self) -> None:
        pass


def pad_sequences(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids, attention mask, labels) of token sequences right-padded to the longest, each (B, L) int64."""
    length = max(map(len, seqs))
    ids = torch.full((len(seqs), length), pad_id)
    mask = torch.zeros_like(ids)
    for i, s in enumerate(seqs):
        ids[i, : len(s)], mask[i, : len(s)] = torch.tensor(s), 1
    return ids, mask, ids.masked_fill(mask == 0, -100)


class ShardStream(IterableDataset):
    """One rank's batches from shards. DataLoader worker w serves one lane (a shard reader) of the rank.

    The DataLoader takes one batch from each worker in turn, so the rank's batch j comes from lane
    j mod L (L lanes = max(1, workers)). Starting at batch n, worker w therefore serves lane (n + w) mod L
    from that lane's batch (n + w) // L.
    """

    def __init__(self, index: sh.ShardIndex, stage: int, tc: TrainConfig, rank: int, world: int, lanes: int,
                 start: int):
        super().__init__()
        self.index, self.stage, self.tc = index, stage, tc
        self.rank, self.world, self.lanes, self.start = rank, world, lanes, start

    def __iter__(self) -> Iterator[Sample]:
        info = get_worker_info()
        w = info.id if info is not None else 0
        lane, m = (self.start + w) % self.lanes, (self.start + w) // self.lanes
        seed = (self.tc.seed, self.stage)
        readers = self.world * self.lanes
        batches = sh.consumer_batches(self.index, seed, self.rank * self.lanes + lane, readers, self.tc.batch_size, m)
        for k, fs in enumerate(batches):
            rng = batch_rng(self.tc.seed, self.stage, self.rank, (m + k) * self.lanes + lane)
            yield sample_batch(fs, np.arange(len(fs)), self.stage, self.tc, rng)


def _worker_init(_: int) -> None:
    import cv2

    torch.set_num_threads(1)  # the workers decode and augment; the trainer process owns the cores
    cv2.setNumThreads(1)


class ShardSource:
    """Shard batches decoded in `tc.workers` DataLoader processes (in-process when 0)."""

    def __init__(self, index: sh.ShardIndex, stage: int, tc: TrainConfig, rank: int, world: int, start: int = 0):
        self.lanes, self.world, self.n, self.tc = max(1, tc.workers), world, start, tc
        sh.epoch_shards(len(index.shards), 0, (tc.seed, stage), 0, world * self.lanes)  # enough shards? raises
        ds = ShardStream(index, stage, tc, rank, world, self.lanes, start)
        loader = DataLoader(ds, batch_size=None, num_workers=tc.workers, worker_init_fn=_worker_init,
                            pin_memory=torch.cuda.is_available())
        self._it: Iterator[Sample] | None = iter(loader)

    def __iter__(self) -> Iterator[Sample]:
        return self

    def __next__(self) -> Sample:
        assert self._it is not None, "source is closed"
        self.n += 1
        return next(self._it)

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "shards", "batches": self.n, "batch_size": self.tc.batch_size, "world": self.world,
                "lanes": self.lanes}

    def close(self) -> None:
        self._it = None  # drops the loader iterator, which stops its workers


# ---------------------------------------------------------------------------------------------
# a training data directory: JSONL + media, or shards (local or URL)
# ---------------------------------------------------------------------------------------------


class TrainData:
    """The train/val splits of `data`, whichever layout it has."""

    def __init__(self, data: str | Path, fe: FrontendConfig):
        self.data, self.fe = data, fe
        self.sharded = sh.is_shard_dir(data, "train")
        if not self.sharded and sh.is_url(data):
            raise FileNotFoundError(f"{data}: no train/{sh.INDEX_FILE}; a URL must point to a shard directory")
        self._train: FeatureSet | sh.ShardIndex | None = None

    def records(self, split: str = "train") -> list[Record]:
        """The split's records (text side only)."""
        return sh.read_records(self.data, split) if self.sharded else read_jsonl(find_split(self.data, split))

    def has_split(self, split: str) -> bool:
        """Whether `data` has the split's records (stage 0 validates on the val split's text when it is there)."""
        if self.sharded:
            return sh.exists(sh.join(self.data, f"{split}.jsonl"))
        try:
            find_split(self.data, split)
        except FileNotFoundError:
            return False
        return True

    def load(self, progress: bool) -> list[str]:
        """Open the training split (shard index, or preprocess into memory); the bad clips it reports."""
        if self.sharded:
            self._train = sh.ShardIndex.load(self.data, "train")
            self._train.check_frontend(self.fe)
            return self._train.bad
        self._train = load_features(find_split(self.data, "train"), self.fe, progress=progress)
        return self._train.bad

    def validation(self, progress: bool) -> FeatureSet:
        if self.sharded:
            index = sh.ShardIndex.load(self.data, "val")
            index.check_frontend(self.fe)
            return index.read_all()
        return load_features(find_split(self.data, "val"), self.fe, progress=progress)

    def source(self, stage: int, tc: TrainConfig, rank: int, world: int, start: int = 0) -> MemorySource | ShardSource:
        assert self._train is not None, "call load() first"
        if isinstance(self._train, sh.ShardIndex):
            return ShardSource(self._train, stage, tc, rank, world, start)
        return MemorySource(self._train, stage, tc, rank, start)
