"""The bundle's manifest as typed data: what `emo-edge export` writes and everything else reads.

    Manifest
      format_version, created, emo_edge_version, versions, machine
      target        the export profile (`emo_edge.runtime.profile.ExportProfile`) the bundle was made for
      checkpoint    where the weights came from (path, name, content sha256, preset and seed)
      model         frontend (FrontendConfig), LLM architecture and embedding width
      labels, prompt, token_layout (order, budget per stream, total), attributes (what the fusion graph's
                    `attributes` output reads, when it has one)
      io_spec       the tensor table of the perception graphs (`emo_edge.runtime.io_spec.IOSpec`)
      perception    {fp32 | int8: PerceptionEntry}: the graphs' directory and each graph's precision
      llm           {quant: GGUF path}, the tokenizer, GGUF metadata
      engines       [EngineRecord]: TensorRT engines built on the device, each with its build record
      parity        the export's parity reports; files: sha256 and size of every file

`Manifest.from_dict` rejects a missing or unknown field with a BundleError naming it (and the
valid ones), so a manifest read by the runtime, eval and bench is the one the exporter wrote.
Reports (parity, versions, GGUF metadata) stay plain dicts: they are read by people, not code.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any

from emo_edge.config import FrontendConfig
from emo_edge.runtime.io_spec import IOSpec
from emo_edge.runtime.profile import ExportProfile, profile_from_dict

FORMAT_VERSION = 2
MANIFEST = "manifest.json"
QUANTS = ("f16", "q8_0", "q4_k_m")
LLM_FORMS = ("merged", "base+lora")
ENTRIES = ("fp32", "int8")  # perception graph sets: plain, and with the int8 graphs as explicit Q/DQ


class BundleError(ValueError):
    """A bundle that must not be used, with the reason."""


@dataclass
class CheckpointInfo:
    path: str
    name: str
    sha256: str  # content digest of the weights (`emo_edge.checkpoint.content_digest`)
    trained: dict[str, Any]  # preset, seed


@dataclass
class AttributeInfo:
    """One observable attribute the fusion graph's `attributes` output reads: its probability is that of `values[0]`
    (`phrases` are the values as the reasons word them)."""

    name: str
    view: str  # visual | vocal
    values: list[str]  # two
    phrases: list[str]
    # the inputs (image, video, audio) any of which shows it; None (older bundles): image or video for a visual
    # attribute, audio for a vocal one
    streams: list[str] | None = None

    @property
    def shown_by(self) -> list[str]:
        """`streams`, or for an older bundle what its `view` implies."""
        if self.streams is not None:
            return self.streams
        return ["audio"] if self.view == "vocal" else ["image", "video"]


@dataclass
class ModelInfo:
    frontend: FrontendConfig
    llm_arch: str
    n_embd: int  # LLM embedding width: the rows of `tokens`


@dataclass
class TokenLayout:
    order: list[str]  # streams in the LLM prompt
    budget: dict[str, int]  # tokens per stream
    total: int


@dataclass
class PerceptionEntry:
    """One set of the four graphs: a directory and the precision each graph is stored at (fp32 | int8)."""

    dir: str  # relative to the bundle
    graphs: list[str]  # file names
    precision: dict[str, str]  # graph -> fp32 | int8
    opset: int | None = None
    parity: dict[str, Any] | None = None  # fp32: vs eager PyTorch
    calibration: dict[str, Any] | None = None  # int8: where the scales came from
    parity_vs_fp32: dict[str, Any] | None = None  # int8: vs the fp32 graphs


@dataclass
class LLMFiles:
    files: dict[str, str]  # quantisation -> bundle-relative GGUF path (form base+lora: the base model's file(s))
    tokenizer: str
    metadata: dict[str, Any]
    gguf_tokenizer: dict[str, Any]
    form: str  # merged: LoRA folded into the GGUFs | base+lora: the base GGUF + an adapter llama.cpp applies at load
    adapter: str | None = None  # base+lora: the bundle-relative GGUF LoRA adapter
    base: dict[str, Any] | None = None  # base+lora: the base file, its sha256 and where it came from
    lora: dict[str, Any] | None = None  # base+lora: alpha, rank, adapted tensors, the adapter's sha256

    def __post_init__(self) -> None:
        if self.form not in LLM_FORMS:
            raise BundleError(f"manifest.llm.form: {self.form!r}; expected one of {', '.join(LLM_FORMS)}")
        if self.form == "base+lora" and not self.adapter:
            raise BundleError("manifest.llm: form base+lora without an adapter file")


@dataclass
class EngineMeta:
    """What a TensorRT engine is locked to: it runs only where all three match."""

    tensorrt: str
    gpu: str
    compute_capability: str  # "major.minor"
    flags: list[str]  # builder flags, e.g. FP16, INT8


@dataclass
class EngineRecord:
    graph: str
    precision: str  # fp32 | fp16 | int8
    file: str  # relative to the bundle
    onnx: str  # the bundle-relative graph it was built from
    meta: EngineMeta
    profile: dict[str, dict[str, list[int]]]  # optimisation profile: input -> {min, opt, max} shapes


@dataclass
class Parity:
    clips: int
    perception_fp32_vs_torch: dict[str, Any]
    perception_int8_vs_fp32: dict[str, Any] | None
    llm_vs_torch: dict[str, Any]


@dataclass
class Manifest:
    format_version: int
    created: str
    emo_edge_version: str
    versions: dict[str, str]
    machine: dict[str, str]
    target: ExportProfile
    checkpoint: CheckpointInfo
    model: ModelInfo
    labels: list[str]
    prompt: dict[str, Any]  # template, placeholder, prefix, instructions [, chat, evidence] (`prompts.prompt_record`)
    token_layout: TokenLayout
    io_spec: IOSpec
    perception: dict[str, PerceptionEntry]
    llm: LLMFiles
    engines: list[EngineRecord]
    parity: Parity
    files: dict[str, dict[str, Any]]  # path -> {sha256, bytes}
    # the fusion graph's `attributes` columns, in order (None: a checkpoint without an attribute head, or a bundle
    # exported before they were)
    attributes: list[AttributeInfo] | None = None

    @property
    def default_quant(self) -> str:
        """The profile's quantisation; a base+lora bundle made from a vendor's GGUF has only that file's."""
        q = self.target.llm.quantization
        return q if q in self.llm.files else next(iter(self.llm.files))

    @property
    def perception_entry(self) -> str:
        """The graph set the target runs: int8 when it quantizes any graph, else fp32."""
        return "int8" if self.target.perception.graphs_at("int8") else "fp32"

    def required_files(self) -> list[str]:
        req = [self.llm.tokenizer]
        for entry in self.perception.values():
            req += [f"{entry.dir}/{f}" for f in entry.graphs]
        req += list(self.llm.files.values())
        if self.llm.adapter:
            req.append(self.llm.adapter)
        req += [e.file for e in self.engines]
        return req

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)

    @classmethod
    def from_dict(cls, data: Any) -> Manifest:
        return _build(cls, data, "manifest")


# ---------------------------------------------------------------------------------------------
# dict <-> dataclass, strict in both directions
# ---------------------------------------------------------------------------------------------

_SPECIAL: dict[type, tuple[Any, Any]] = {  # types with their own converters: (to dict, from dict)
    IOSpec: (lambda x: x.to_dict(), IOSpec.from_dict),
    ExportProfile: (dataclasses.asdict, profile_from_dict),
}


def _plain(x: Any) -> Any:
    if type(x) in _SPECIAL:
        return _plain(_SPECIAL[type(x)][0](x))  # as JSON will hold it: tuples as lists
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {f.name: _plain(getattr(x, f.name)) for f in dataclasses.fields(x)}
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_plain(v) for v in x]
    return x


def _build(tp: Any, data: Any, where: str) -> Any:
    """`data` (from JSON) as type `tp`; BundleError naming the field `where` on a missing, unknown or bad one."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (types.UnionType, typing.Union):
        if data is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _build(inner, data, where)
    if tp in _SPECIAL:
        try:
            return _SPECIAL[tp][1](data)
        except (KeyError, TypeError, ValueError) as e:
            raise BundleError(f"{where}: {e}") from e
    if dataclasses.is_dataclass(tp):
        return _build_dataclass(tp, data, where)
    if origin is dict:
        _expect(data, dict, where)
        return {k: _build(args[1], v, f"{where}.{k}") for k, v in data.items()}
    if origin is list:
        _expect(data, list, where)
        return [_build(args[0], v, f"{where}[{i}]") for i, v in enumerate(data)]
    if tp is Any:
        return data
    _expect(data, float if tp is float else tp, where)
    return data


def _build_dataclass(cls: type, data: Any, where: str) -> Any:
    _expect(data, dict, where)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(data) - set(fields))
    required = [n for n, f in fields.items() if f.default is not None]  # only a None default makes a field optional
    missing = [n for n in required if n not in data]
    if unknown or missing:
        raise BundleError(f"{where}: " + "; ".join(
            ([f"missing field(s) {missing}"] if missing else []) + ([f"unknown field(s) {unknown}"] if unknown else []))
            + f" (fields: {list(fields)}; re-export the bundle with this emo-edge)")
    return cls(**{k: _build(hints[k], v, f"{where}.{k}") for k, v in data.items()})


def _expect(data: Any, tp: type, where: str) -> None:
    ok = isinstance(data, tp) and not (tp is int and isinstance(data, bool))
    if tp is float:
        ok = isinstance(data, int | float) and not isinstance(data, bool)
    if not ok:
        raise BundleError(f"{where}: expected {tp.__name__}, got {type(data).__name__} {data!r:.60}")
