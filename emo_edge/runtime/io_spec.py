"""Tensor names, dtypes and shapes of the perception graphs: the one source of truth.

The exporter names the ONNX inputs and outputs from here and marks the `batch` axis dynamic from
here; a TensorRT optimisation profile takes its min/opt/max shapes from here; the runtime checks
and binds its arrays by these names. numpy only, never torch: the runtime imports this module.

Graphs, in run order (the encoders are independent; the fusion takes their outputs by name):

    image_encoder  image (B, 3, S, S) f32 in [0, 1]      -> image_feats (B, G*G, Wi)
    video_encoder  frames (B, T, 3, s, s) f32 in [0, 1]  -> video_feats (B, T*k, Wv)
    audio_encoder  mel (B, n_mels, F) f32 scaled log-mel -> audio_feats (B, Na, Wa)
    fusion         image_feats, video_feats, audio_feats, present (B, 3) f32 in {0, 1}
                   -> fused (B, Nf, D), logits (B, L), va (B, 2), tokens (B, Ntok, H), token_mask (B, Ntok),
                      and with an attribute head (model.head.attributes = A > 0) attributes (B, A): the
                      probability of each attribute's first value (the manifest's `attributes` names them)

`runtime_inputs` are what the runtime itself takes: the arrays of `emo_edge.data.features`
(uint8 RGB in NHWC layout, float log-mel) and the presence flags over (image, video, audio).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emo_edge.config import ModelConfig, from_dict
from emo_edge.labels import LABELS

BATCH = "batch"  # the one dynamic axis, always axis 0
GRAPHS: tuple[str, ...] = ("image_encoder", "video_encoder", "audio_encoder", "fusion")
SPEC_FILE = "io_spec.json"  # written next to the .onnx files by the exporter
DATA_SUFFIX = ".data"  # a graph exported in ONNX's external-data format keeps its weights in <file>.data
# how `dummy_inputs` draws values: unit [0, 1), signed [-1, 1), normal N(0, 1), mask {0, 1} with
# at least one 1 per row, pixels uint8 [0, 255]
SAMPLERS: tuple[str, ...] = ("unit", "signed", "normal", "mask", "pixels")

Dim = int | str


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name
    shape: tuple[Dim, ...]  # ints are fixed sizes; BATCH marks the dynamic axis
    sample: str = "normal"  # one of SAMPLERS

    def __post_init__(self) -> None:
        assert self.sample in SAMPLERS, self.sample
        assert all(isinstance(d, int) or d == BATCH for d in self.shape), self.shape

    def concrete(self, batch: int) -> tuple[int, ...]:
        return tuple(batch if d == BATCH else int(d) for d in self.shape)

    def describe(self) -> str:
        return f"({', '.join(str(d) for d in self.shape)}) {self.dtype}"


@dataclass(frozen=True)
class GraphSpec:
    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def filename(self) -> str:
        return f"{self.name}.onnx"

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]


@dataclass(frozen=True)
class IOSpec:
    graphs: dict[str, GraphSpec]  # in run order, keyed by GRAPHS
    runtime_inputs: tuple[TensorSpec, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"graphs": {k: asdict(g) for k, g in self.graphs.items()},
                "runtime_inputs": [asdict(t) for t in self.runtime_inputs]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> IOSpec:
        def tensors(items: list[dict[str, Any]]) -> tuple[TensorSpec, ...]:
            return tuple(TensorSpec(t["name"], t["dtype"], tuple(t["shape"]), t.get("sample", "normal")) for t in items)

        graphs = {k: GraphSpec(g["name"], tensors(g["inputs"]), tensors(g["outputs"]))
                  for k, g in data["graphs"].items()}
        return cls(graphs, tensors(data["runtime_inputs"]))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))


# ---------------------------------------------------------------------------------------------
# building the spec from a ModelConfig
# ---------------------------------------------------------------------------------------------


def audio_tokens(n_mel_frames: int, downsample: int, arch: str = "builtin") -> int:
    """Audio tokens after the conv stem: each stride-2 conv (k=3, pad=1) maps n -> ceil(n / 2).

    A Whisper encoder takes an even count of mel frames (the centred STFT's extra last frame is dropped) and
    gives one token per two."""
    if arch == "whisper":
        return n_mel_frames // 2
    n = n_mel_frames
    for _ in range(downsample.bit_length() - 1):  # log2(downsample) strided convs
        n = (n - 1) // 2 + 1
    return n


def sizes(cfg: ModelConfig, llm_width: int | None = None) -> dict[str, int]:
    """The static sizes of every tensor; `llm_width` defaults to `cfg.llm.hidden`."""
    if llm_width is None:
        if cfg.llm.path:
            raise ValueError(f"llm.path={cfg.llm.path!r} is set, so llm.hidden may not be the LLM width: pass "
                             f"llm_width, or use the {SPEC_FILE} the exporter writes")
        llm_width = cfg.llm.hidden
    fe, vc = cfg.frontend, cfg.video_encoder
    return {
        "S": fe.image_size, "s": fe.frame_size, "T": fe.n_frames, "n_mels": fe.n_mels, "F": fe.n_mel_frames,
        "Ni": (fe.image_size // cfg.image_encoder.patch) ** 2, "Wi": cfg.image_encoder.width,
        "Nv": fe.n_frames * vc.tokens_per_frame, "Wv": vc.frame.width,
        "Na": audio_tokens(fe.n_mel_frames, cfg.audio_encoder.downsample, cfg.audio_encoder.arch),
        "Wa": cfg.audio_encoder.width,
        "Nf": cfg.fusion.n_tokens, "D": cfg.fusion.dim, "L": len(LABELS), "Ntok": cfg.tokens.total, "H": llm_width,
        "A": cfg.head.attributes,
    }


def build_io_spec(cfg: ModelConfig, llm_width: int | None = None) -> IOSpec:
    z = sizes(cfg, llm_width)
    b, f32 = BATCH, "float32"
    feats = {"image": TensorSpec("image_feats", f32, (b, z["Ni"], z["Wi"])),
             "video": TensorSpec("video_feats", f32, (b, z["Nv"], z["Wv"])),
             "audio": TensorSpec("audio_feats", f32, (b, z["Na"], z["Wa"]))}
    present = TensorSpec("present", f32, (b, 3), "mask")
    graphs = [
        GraphSpec("image_encoder", (TensorSpec("image", f32, (b, 3, z["S"], z["S"]), "unit"),), (feats["image"],)),
        GraphSpec("video_encoder", (TensorSpec("frames", f32, (b, z["T"], 3, z["s"], z["s"]), "unit"),),
                  (feats["video"],)),
        GraphSpec("audio_encoder", (TensorSpec("mel", f32, (b, z["n_mels"], z["F"]), "signed"),), (feats["audio"],)),
        GraphSpec("fusion", (*feats.values(), present), (
            TensorSpec("fused", f32, (b, z["Nf"], z["D"])),
            TensorSpec("logits", f32, (b, z["L"])),
            TensorSpec("va", f32, (b, 2)),
            TensorSpec("tokens", f32, (b, z["Ntok"], z["H"])),
            TensorSpec("token_mask", f32, (b, z["Ntok"]), "mask"),
            *([TensorSpec("attributes", f32, (b, z["A"]), "unit")] if z["A"] else []),
        )),
    ]
    runtime_inputs = (
        TensorSpec("image", "uint8", (b, z["S"], z["S"], 3), "pixels"),
        TensorSpec("frames", "uint8", (b, z["T"], z["s"], z["s"], 3), "pixels"),
        TensorSpec("mel", f32, (b, z["n_mels"], z["F"]), "signed"),
        present,
    )
    return IOSpec({g.name: g for g in graphs}, runtime_inputs)


def as_io_spec(source: IOSpec | ModelConfig | Mapping[str, Any] | str | Path, llm_width: int | None = None) -> IOSpec:
    """An IOSpec from itself, a ModelConfig, a config dict, an io-spec dict or an io_spec.json path."""
    if isinstance(source, IOSpec):
        return source
    if isinstance(source, ModelConfig):
        return build_io_spec(source, llm_width)
    if isinstance(source, str | Path):
        return IOSpec.from_dict(json.loads(Path(source).read_text()))
    if isinstance(source, Mapping):
        if "graphs" in source:
            return IOSpec.from_dict(source)
        return build_io_spec(from_dict(ModelConfig, dict(source), where="model config"), llm_width)
    raise TypeError(f"expected an IOSpec, ModelConfig, dict or {SPEC_FILE} path, got {type(source).__name__}")


# ---------------------------------------------------------------------------------------------
# what the exporter, TensorRT and the runtime take from the spec
# ---------------------------------------------------------------------------------------------


def dynamic_axes(graph: GraphSpec) -> dict[str, dict[int, str]]:
    """torch.onnx.export's `dynamic_axes` for every input and output of `graph`."""
    tensors = (*graph.inputs, *graph.outputs)
    return {t.name: {i: d for i, d in enumerate(t.shape) if isinstance(d, str)} for t in tensors}


def trt_profile(graph: GraphSpec, min_batch: int = 1, opt_batch: int = 1,
                max_batch: int = 8) -> dict[str, tuple[tuple[int, ...], ...]]:
    """{input name: (min shape, opt shape, max shape)} for a TensorRT optimisation profile."""
    if not 1 <= min_batch <= opt_batch <= max_batch:
        raise ValueError(f"need 1 <= min_batch <= opt_batch <= max_batch, got {min_batch}, {opt_batch}, {max_batch}")
    return {t.name: (t.concrete(min_batch), t.concrete(opt_batch), t.concrete(max_batch)) for t in graph.inputs}


def dummy_inputs(tensors: GraphSpec | tuple[TensorSpec, ...], batch: int = 1, seed: int = 0) -> dict[str, np.ndarray]:
    """Random arrays with the right names, shapes, dtypes and value ranges (numpy only)."""
    rng = np.random.default_rng(seed)
    specs = tensors.inputs if isinstance(tensors, GraphSpec) else tensors
    return {t.name: _sample(rng, t, batch) for t in specs}


def _sample(rng: np.random.Generator, t: TensorSpec, batch: int) -> np.ndarray:
    shape = t.concrete(batch)
    if t.sample == "pixels":
        return rng.integers(0, 256, size=shape, dtype=np.uint8)
    if t.sample == "mask":
        x = rng.integers(0, 2, size=shape)
        x[..., 0] |= x.max(axis=-1) == 0  # at least one present entry per row
        return x.astype(t.dtype)
    draw = {"unit": lambda: rng.random(shape), "signed": lambda: rng.uniform(-1.0, 1.0, shape),
            "normal": lambda: rng.standard_normal(shape)}[t.sample]
    return draw().astype(t.dtype)


def validate(tensors: tuple[TensorSpec, ...], arrays: Mapping[str, Any], where: str) -> int:
    """Check names, dtypes and shapes (one batch size for all); return the batch size.

    ValueError naming the tensor, what was expected and what was got.
    """
    names = [t.name for t in tensors]
    if sorted(arrays) != sorted(names):
        raise ValueError(f"{where}: expected inputs {names}, got {sorted(arrays)}")
    batch: int | None = None
    for t in tensors:
        x = arrays[t.name]
        got = f"({', '.join(map(str, x.shape))}) {x.dtype}" if isinstance(x, np.ndarray) else type(x).__name__
        ok = isinstance(x, np.ndarray) and x.dtype == np.dtype(t.dtype) and x.ndim == len(t.shape)
        ok = ok and all(d == BATCH or d == n for d, n in zip(t.shape, x.shape, strict=True))
        if not ok:
            raise ValueError(f"{where}: input {t.name!r} expected {t.describe()}, got {got}")
        batch = x.shape[0] if batch is None else batch
        if x.shape[0] != batch:
            raise ValueError(f"{where}: input {t.name!r} has batch {x.shape[0]}, but {names[0]!r} has {batch}")
    assert batch is not None
    return batch
