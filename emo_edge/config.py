"""Configuration: nested dataclasses with CPU-friendly defaults; presets are YAML data files.

A checkpoint stores the full `ModelConfig` next to its weights, so loading needs no code edits.
Every `__post_init__` rejects impossible combinations and names the offending field.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from emo_edge.audio import SAMPLE_RATE

PRESET_DIR = Path(__file__).parent / "presets"
MODALITIES: tuple[str, ...] = ("video", "audio", "text")  # what a user can switch off at eval time
STREAMS: tuple[str, ...] = ("fusion", "image", "video", "audio", "attributes")  # LLM token streams, in splice order
VISION_ARCHS: tuple[str, ...] = ("builtin", "siglip")  # ViTConfig.arch
AUDIO_ARCHS: tuple[str, ...] = ("builtin", "whisper")  # AudioEncoderConfig.arch


PEAK_METHODS = ("max_change", "sustained")  # the peak frame selectors of emo_edge.vision.peak_index


@dataclass
class FrontendConfig:
    """Preprocessing shared by training and the runtime (numpy only)."""

    sample_rate: int = SAMPLE_RATE  # Hz; input audio must already be at this rate
    n_fft: int = 400  # samples (25 ms at 16 kHz)
    hop_length: int = 160  # samples (10 ms at 16 kHz)
    n_mels: int = 64
    window_seconds: float = 4.0  # audio (and video) window length, seconds
    n_frames: int = 8  # frames sampled uniformly over the window for the temporal view
    frame_size: int = 64  # px, square side of temporal-view frames
    image_size: int = 112  # px, square side of the peak frame (spatial view)
    # how the peak frame is chosen (PEAK_METHODS, emo_edge.vision.peak_index): "max_change", or "sustained", which
    # never picks a blink; a model is trained and served with the same one (configs without it: max_change)
    peak_frame: str = "max_change"

    def __post_init__(self) -> None:
        if self.hop_length <= 0 or self.n_fft < self.hop_length:
            raise ValueError(f"frontend: need 0 < hop_length <= n_fft, got {self.hop_length} and {self.n_fft}")
        if self.n_frames < 1:
            raise ValueError(f"frontend.n_frames must be >= 1, got {self.n_frames}")
        if self.peak_frame not in PEAK_METHODS:
            raise ValueError(f"frontend.peak_frame must be one of {', '.join(PEAK_METHODS)}, got {self.peak_frame!r}")

    @property
    def n_samples(self) -> int:
        return int(round(self.window_seconds * self.sample_rate))

    @property
    def n_mel_frames(self) -> int:
        return self.n_samples // self.hop_length + 1


@dataclass
class ViTConfig:
    """A plain ViT (pre-norm) used for the image view and, per frame, the temporal view."""

    patch: int = 16  # px
    width: int = 128
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    conv_stem: bool = False  # a BatchNorm conv stem instead of the patchify conv (learns from little data)
    path: str | None = None  # a local SigLIP vision directory: used (frozen) instead; patch and width must match it
    # builtin: the ViT above; siglip: a SigLIP vision tower (`SiglipVisionModel`) with these shapes (width, depth,
    # heads, mlp_ratio, patch), from `path`, or with random weights where explicitly asked (`emo-edge init
    # --random-weights`). A `path` implies siglip.
    arch: str = "builtin"

    def __post_init__(self) -> None:
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}")
        if self.arch not in VISION_ARCHS:
            raise ValueError(f"arch {self.arch!r} is not valid; options: {', '.join(VISION_ARCHS)}")
        if self.path is not None:
            self.arch = "siglip"
        if self.arch == "siglip" and self.conv_stem:
            raise ValueError("conv_stem applies to arch builtin only; a SigLIP tower has its own patch embedding")
        if self.conv_stem and (self.patch < 2 or self.patch & (self.patch - 1)):
            raise ValueError(f"conv_stem needs a power-of-two patch size, got patch={self.patch}")


@dataclass
class VideoEncoderConfig:
    frame: ViTConfig = field(default_factory=lambda: ViTConfig(depth=2))
    temporal_depth: int = 2  # transformer layers over time
    tokens_per_frame: int = 1  # each frame's patch tokens are pooled to this many


@dataclass
class AudioEncoderConfig:
    """Whisper-style: two Conv1d over log-mel (the second strided), then a transformer."""

    width: int = 128
    depth: int = 3
    heads: int = 4
    mlp_ratio: float = 4.0
    downsample: int = 4  # total time stride of the conv stem (2 or 4)
    path: str | None = None  # a local Whisper directory: its encoder is used (frozen) instead; width must match
    # builtin: the encoder above; whisper: a Whisper encoder (`WhisperModel.get_encoder()`) with these shapes, from
    # `path`, or with random weights where explicitly asked (`emo-edge init --random-weights`). A `path` implies
    # whisper, whose conv stem strides by 2 (downsample must then be 2).
    arch: str = "builtin"
    # whisper: cut the positional table to the frontend's window (window / 20 ms positions) instead of taking the
    # model's full table (1500 positions = 30 s for the released models), so a 4 s window costs 4 s of encoder
    cut_to_window: bool = False

    def __post_init__(self) -> None:
        if self.width % self.heads:
            raise ValueError(f"audio_encoder.width {self.width} is not divisible by heads {self.heads}")
        if self.downsample not in (2, 4):
            raise ValueError(f"audio_encoder.downsample must be 2 or 4, got {self.downsample}")
        if self.arch not in AUDIO_ARCHS:
            raise ValueError(f"audio_encoder.arch {self.arch!r} is not valid; options: {', '.join(AUDIO_ARCHS)}")
        if self.path is not None:
            self.arch = "whisper"
        if self.arch == "whisper" and self.downsample != 2:
            raise ValueError(f"audio_encoder.downsample must be 2 for arch whisper (its conv stem), got "
                             f"{self.downsample}")
        if self.cut_to_window and self.arch != "whisper":
            raise ValueError("audio_encoder.cut_to_window applies to arch whisper only")


@dataclass
class FusionConfig:
    """Conv-Attention pre-fusion."""

    dim: int = 128  # common width the modalities are projected to
    n_tokens: int = 16  # fusion tokens (each modality is resampled to this many positions)
    attn_hidden: int = 128  # hidden width of the attention-branch MLP
    n_blocks: int = 2  # residual [Conv1d k=3 + Swish] blocks in the conv branch


@dataclass
class HeadConfig:
    """The fast head: label logits + (valence, arousal) from the fusion tokens."""

    hidden: int = 128
    dropout: float = 0.1
    # binary observable attributes (SynthEmo v2's, in `emo_edge.data.synth_v2.ATTRIBUTES` order) predicted
    # from the fusion tokens: a perception objective, exported as the fusion graph's `attributes` output (the robot's
    # readings) and, with `tokens.attributes`, as the LLM's attribute tokens; 0 = none
    attributes: int = 0


@dataclass
class LLMConfig:
    """The causal LM. `path` (a local Hugging Face directory, a .gguf file or a GGUF package) wins over the
    shape fields. `chat_template`: wrap the prompt as one user turn of the tokenizer's chat template (for
    instruction-tuned backbones; the tokenizer must have one). `evidence`: the prompt opens with the attribute
    head's readings in words (`emo_edge.prompts.evidence_text`; needs `head.attributes`)."""

    path: str | None = None
    chat_template: bool = False
    evidence: bool = False
    hidden: int = 256
    layers: int = 4
    heads: int = 4
    kv_heads: int = 4
    intermediate: int = 768
    vocab_size: int = 1024
    max_position: int = 512
    rope_theta: float = 10000.0

    def __post_init__(self) -> None:
        if self.path is None and (self.hidden % self.heads or self.heads % self.kv_heads):
            raise ValueError(f"llm: hidden {self.hidden}, heads {self.heads}, kv_heads {self.kv_heads} must divide")


@dataclass
class LoRAConfig:
    r: int = 16
    alpha: int = 16
    dropout: float = 0.05
    targets: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])


@dataclass
class TokenBudget:
    """LLM tokens per stream; 0 leaves a stream out. Spliced as [fusion | image | video | audio | attributes].

    attributes: one token per observable attribute (0 or `head.attributes`), each blending that attribute's two
    learned embeddings by the attribute head's probability: what perception reads, handed to the LLM as such."""

    fusion: int = 16
    image: int = 16
    video: int = 8
    audio: int = 8
    attributes: int = 0

    def __post_init__(self) -> None:
        for name in STREAMS:
            if getattr(self, name) < 0:
                raise ValueError(f"tokens.{name} must be >= 0, got {getattr(self, name)}")
        if self.total == 0:
            raise ValueError("tokens: the budget is empty; give at least one stream a token")
        if self.image and math.isqrt(self.image) ** 2 != self.image:
            raise ValueError(f"tokens.image must be a square number (a pooled grid), got {self.image}")

    @property
    def total(self) -> int:
        return sum(getattr(self, name) for name in STREAMS)


@dataclass
class ModelConfig:
    name: str = "edge-small"
    frontend: FrontendConfig = field(default_factory=FrontendConfig)
    image_encoder: ViTConfig = field(default_factory=ViTConfig)
    video_encoder: VideoEncoderConfig = field(default_factory=VideoEncoderConfig)
    audio_encoder: AudioEncoderConfig = field(default_factory=AudioEncoderConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    tokens: TokenBudget = field(default_factory=TokenBudget)

    def __post_init__(self) -> None:
        fe = self.frontend
        for name, size in (("image_size", fe.image_size), ("frame_size", fe.frame_size)):
            patch = self.image_encoder.patch if name == "image_size" else self.video_encoder.frame.patch
            if size % patch:
                raise ValueError(f"frontend.{name}={size} is not divisible by the patch size {patch}")
        grid = fe.image_size // self.image_encoder.patch
        if self.tokens.image > grid * grid:
            raise ValueError(f"tokens.image={self.tokens.image} exceeds the image encoder's {grid}x{grid} patch grid")
        if self.tokens.attributes not in (0, self.head.attributes):
            raise ValueError(f"tokens.attributes={self.tokens.attributes}: one token per attribute of the attribute "
                             f"head, so 0 or head.attributes={self.head.attributes}")
        if self.llm.evidence and not self.head.attributes:
            raise ValueError("llm.evidence: the prompt says the attribute head's readings, but head.attributes is 0")
        if self.tokens.video > fe.n_frames * self.video_encoder.tokens_per_frame:
            raise ValueError(
                f"tokens.video={self.tokens.video} exceeds n_frames*tokens_per_frame="
                f"{fe.n_frames * self.video_encoder.tokens_per_frame}"
            )


@dataclass
class TrainConfig:
    """Training schedule: stage 0 (LM pretraining), 1 (perception), 2 (cognition)."""

    seed: int = 0
    batch_size: int = 32
    lm_steps: int = 600  # stage 0
    encoder_steps: int = 0  # stage 1 opens with these steps of encoder warm-up (head + probes, no LLM)
    perception_steps: int = 800  # stage 1, with the LLM
    cognition_steps: int = 1000  # stage 2
    lm_lr: float = 2e-3
    lr: float = 1e-3  # encoders, fusion, adapters, head
    lora_lr: float = 1e-3
    tuned_lr_scale: float = 0.1  # after an encoder warm-up: encoders/fusion/head learn at lr * this with the LLM
    weight_decay: float = 0.01
    warmup_steps: int = 50
    grad_clip: float = 1.0
    head_weight: float = 1.0  # weight of the fast head's loss next to the LM loss
    aux_weight: float = 0.5  # weight of the per-encoder probe losses
    # the encoder warm-up trains each encoder from its own probes only (fusion, head and adapters learn on its
    # tokens detached), with AdamW's default betas and no gradient-norm clipping, as an encoder trained alone;
    # otherwise the head's gradient reaches every encoder from the first step
    isolate_encoders: bool = False
    attr_weight: float = 0.5  # weight of the observable-attribute loss (model.head.attributes > 0)
    augment: bool = True  # visual views: similarity transform + brightness/contrast; audio: a time shift
    drop_video: float = 0.15  # modality dropout probabilities (never both video and audio)
    drop_audio: float = 0.15
    drop_text: float = 0.3
    grad_accum: int = 1  # micro-batches per optimizer step (the step sees batch_size * grad_accum * ranks clips)
    workers: int = 2  # DataLoader worker processes decoding shards (0: in the training process)
    stop_after: int = 0  # leave after this many optimizer steps of this run, checkpointed (0: run to the end)
    eval_every: int = 200
    log_every: int = 20
    threads: int = 2
    # bf16 autocast on the CPU too (on a GPU it is always on); weights and AdamW state stay float32. Pays where
    # the CPU has bf16 matmuls (AVX-512 BF16 / AMX) and a large frozen LLM dominates the step
    cpu_bf16: bool = False
    # a checkpoint (or `default`) whose trained perception (encoders, fusion, head) starts stages 1-2; the
    # adapters (sized for this LLM) and a missing attribute head start fresh. The frontend and encoder,
    # fusion and head shapes must equal this preset's
    init_perception: str = ""
    # RMS each attribute token's pair of embeddings starts at (tokens.attributes > 0): 0 keeps the cue phrases' mean
    # word embeddings as they are (the shipped default: RMS ~0.03, beside stream tokens of RMS ~1). At 1.0 the
    # reasons named the attributes no better (docs/synthemo-v2-training.md, run 7)
    attr_token_rms: float = 0.0

    def __post_init__(self) -> None:
        if self.attr_token_rms < 0:
            raise ValueError(f"train.attr_token_rms must be >= 0, got {self.attr_token_rms}")
        for name in ("batch_size", "grad_accum"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("workers", "stop_after"):
            if getattr(self, name) < 0:
                raise ValueError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        for f in dataclasses.fields(self):  # `--set cpu_bf16=true` arrives as a string or 0/1
            if f.type == "bool":
                setattr(self, f.name, _as_bool(f"train.{f.name}", getattr(self, f.name)))
        if not isinstance(self.init_perception, str):
            raise ValueError(f"train.init_perception must be a checkpoint path or 'default', "
                             f"got {self.init_perception!r}")


_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def _as_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise ValueError(f"{name} must be true or false, got {value!r}")


@dataclass
class Preset:
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


T = TypeVar("T")


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "") -> T:
    """Build dataclass `cls` from nested dicts; unknown or missing keys raise naming the valid ones.

    A field typed as a dataclass takes a mapping (or null: its defaults); `where` prefixes messages."""
    data = data or {}
    if not isinstance(data, dict):
        raise ValueError(f"{where or cls.__name__}: expected a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(data) - set(fields)
    if unknown:
        raise ValueError(f"{where or cls.__name__}: unknown key(s) {sorted(unknown)}; valid: {sorted(fields)}")
    required = {n for n, f in fields.items() if f.init and f.default is MISSING and f.default_factory is MISSING}
    if required - set(data):
        raise ValueError(f"{where or cls.__name__}: missing key(s) {sorted(required - set(data))}")
    hints = typing.get_type_hints(cls)  # the field types, resolved in cls's own module
    kwargs = {}
    for name, value in data.items():
        sub = hints.get(name)
        nested = isinstance(sub, type) and dataclasses.is_dataclass(sub)
        kwargs[name] = from_dict(sub, value, f"{where}.{name}".strip(".")) if nested else value
    return cls(**kwargs)


def load_yaml(cls: type[T], path: str | Path, **defaults: Any) -> T:
    """Dataclass `cls` from a YAML file (presets, export profiles, calibration manifests).

    `defaults` fill keys the file leaves out (e.g. a name from the file name). Bad YAML, unknown or missing
    keys and the dataclasses' own checks raise ValueError naming the file and the field."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({e})") from e
    if data is not None and not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return from_dict(cls, {**defaults, **(data or {})})
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: {e}") from e


def to_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_preset(name_or_path: str | Path) -> Preset:
    """A preset by name (`tiny`, `edge-small`, `paper`) or a path to a YAML file."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PRESET_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown preset {str(name_or_path)!r}; available: {', '.join(list_presets())} or a YAML path")
    return load_yaml(Preset, path)


def save_yaml(obj: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(obj), sort_keys=False))


def load_model_config(path: str | Path) -> ModelConfig:
    return load_yaml(ModelConfig, path)
