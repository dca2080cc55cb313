"""Perception: encoders -> Conv-Attention pre-fusion -> fast head and modal adapters.

Reads top-down like the paper's figure: primitives, the three encoders (image = spatial view,
video = temporal view, audio), the fusion, the fast head, the adapters into the LLM width, and
`Perception`, whose stage methods (`encode_image`, `encode_video`, `encode_audio`, `fuse`,
`embed_streams`) are also the ONNX export boundaries. Shapes in comments use B batch, T frames,
N tokens, W encoder width, D fusion width, H LLM width, M modalities.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from emo_edge.config import ModelConfig, ViTConfig
from emo_edge.labels import LABELS

PIXEL_MEAN, PIXEL_STD = 0.5, 0.25  # inputs are RGB in [0, 1]
FUSED = ("image", "video", "audio")  # modalities entering the fusion, in this order


# ---------------------------------------------------------------------------------------------
# primitives
# ---------------------------------------------------------------------------------------------


def pool_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) averaging matrix with adaptive-pooling windows (a matmul exports everywhere)."""
    m = torch.zeros(n_out, n_in)
    for i in range(n_out):
        lo, hi = (i * n_in) // n_out, -(-((i + 1) * n_in) // n_out)
        m[i, lo:hi] = 1.0 / (hi - lo)
    return m


def grid_pool_matrix(g_in: int, g_out: int) -> torch.Tensor:
    """(g_out^2, g_in^2) pooling of a row-major g_in x g_in token grid to g_out x g_out."""
    p = pool_matrix(g_in, g_out)
    return torch.kron(p, p)


class Attention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, W)
        b, n, w = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)  # (B, h, N, w/h)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(b, n, w))


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        hidden = int(round(width * mlp_ratio))
        self.norm1, self.attn = nn.LayerNorm(width), Attention(width, heads)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def sinusoids(length: int, width: int) -> torch.Tensor:
    """(length, width) fixed sinusoidal positions."""
    half = width // 2
    inv = torch.exp(-math.log(10000.0) * torch.arange(half) / max(half - 1, 1))
    t = torch.arange(length)[:, None] * inv[None]
    return torch.cat([t.sin(), t.cos()], dim=1)


def conv_stem(width: int, patch: int) -> nn.Sequential:
    """log2(patch) stride-2 3x3 conv + BatchNorm + ReLU stages: the same grid as a plain patchify.

    Channels ramp up to `width` (e.g. 32, 64, 128, 128 for width 128, patch 16). BatchNorm matters
    here: with per-sample norms (GroupNorm/LayerNorm) the encoder did not learn the SynthEmo faces
    from scratch in 400 steps, with BatchNorm it did (docs in README, Model). BatchNorm folds into
    the convolutions at export.
    """
    n = int(math.log2(patch))
    chans = [3] + [width // 2 ** max(0, n - 2 - i) for i in range(n)]
    layers: list[nn.Module] = []
    for c_in, c_out in zip(chans[:-1], chans[1:], strict=True):
        layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
    return nn.Sequential(*layers)


class ViT(nn.Module):
    """Patchify (optionally after a conv stem) -> learned positions -> blocks -> norm; returns the patch tokens."""

    def __init__(self, cfg: ViTConfig, image_size: int):
        super().__init__()
        self.grid, self.width = image_size // cfg.patch, cfg.width
        self.patch = (conv_stem(cfg.width, cfg.patch) if cfg.conv_stem
                      else nn.Conv2d(3, cfg.width, kernel_size=cfg.patch, stride=cfg.patch))
        self.pos = nn.Parameter(torch.randn(1, self.grid * self.grid, cfg.width) * 0.02)
        self.blocks = nn.ModuleList(Block(cfg.width, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.width)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:  # (B, 3, S, S) in [0, 1]
        x = self.patch((pixels - PIXEL_MEAN) / PIXEL_STD)  # (B, W, G, G)
        x = x.flatten(2).transpose(1, 2) + self.pos  # (B, G*G, W)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)


def vision_tower(cfg: ViTConfig, image_size: int) -> nn.Module:
    """The built-in ViT, or a SigLIP tower (arch siglip: pretrained from `cfg.path`, else random weights, see
    `check_weights`): both (B, 3, S, S) -> (B, G*G, W)."""
    if cfg.arch == "builtin":
        return ViT(cfg, image_size)
    from emo_edge.model.backbones import SiglipTower

    return SiglipTower(cfg, image_size)


def random_towers(cfg: ModelConfig) -> list[str]:
    """The config fields naming encoders of a pretrained architecture (SigLIP, Whisper) without a `path`: built
    from the config, they have random weights."""
    towers = {"image_encoder": cfg.image_encoder, "video_encoder.frame": cfg.video_encoder.frame,
              "audio_encoder": cfg.audio_encoder}
    return [f"{k} (arch {t.arch})" for k, t in towers.items() if t.arch != "builtin" and t.path is None]


def check_weights(cfg: ModelConfig, allow_random: bool) -> None:
    """Refuse to build pretrained-architecture encoders with random weights unless explicitly allowed.

    A frozen SigLIP/Whisper tower without its weights computes noise at the real cost: fine for timing and
    export (`emo-edge init --random-weights`, recorded as such), or as the skeleton a checkpoint's saved weights
    load into (`load_checkpoint`); never silently in training or evaluation."""
    missing = random_towers(cfg)
    if missing and not allow_random:
        raise ValueError(f"{', '.join(missing)}: no path to pretrained weights; set the path(s) to local model "
                         "directories, or build with random weights explicitly (`emo-edge init --random-weights`)")


# ---------------------------------------------------------------------------------------------
# encoders: spatial view, temporal view, audio
# ---------------------------------------------------------------------------------------------


class ImageEncoder(nn.Module):
    """The peak frame at higher resolution -> (B, G*G, W) patch tokens."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.vit = vision_tower(cfg.image_encoder, cfg.frontend.image_size)
        self.width, self.grid = self.vit.width, self.vit.grid

    def forward(self, image: torch.Tensor) -> torch.Tensor:  # (B, 3, S, S)
        return self.vit(image)


class VideoEncoder(nn.Module):
    """T low-resolution frames -> per-frame ViT -> k tokens per frame -> temporal blocks -> (B, T*k, W)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        vc, fe = cfg.video_encoder, cfg.frontend
        self.frame = vision_tower(vc.frame, fe.frame_size)
        self.k, self.width = vc.tokens_per_frame, self.frame.width
        self.register_buffer("pool", pool_matrix(self.frame.grid**2, self.k), persistent=False)
        self.time_pos = nn.Parameter(torch.randn(1, fe.n_frames * self.k, self.width) * 0.02)
        self.blocks = nn.ModuleList(Block(self.width, vc.frame.heads) for _ in range(vc.temporal_depth))
        self.norm = nn.LayerNorm(self.width)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:  # (B, T, 3, s, s)
        b, t = frames.shape[:2]
        x = self.frame(frames.flatten(0, 1))  # (B*T, g*g, W)
        x = (self.pool @ x).reshape(b, t * self.k, self.width) + self.time_pos  # (B, T*k, W)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)


class AudioEncoder(nn.Module):
    """Log-mel -> Conv1d stem (strided) -> sinusoidal positions -> blocks -> (B, Na, W)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        ac, fe = cfg.audio_encoder, cfg.frontend
        self.width = ac.width
        stem = [nn.Conv1d(fe.n_mels, ac.width, 3, padding=1), nn.GELU()]
        for _ in range(int(math.log2(ac.downsample))):
            stem += [nn.Conv1d(ac.width, ac.width, 3, stride=2, padding=1), nn.GELU()]
        self.stem = nn.Sequential(*stem)
        self.n_tokens = self._out_len(fe.n_mel_frames, ac.downsample)
        self.register_buffer("pos", sinusoids(self.n_tokens, ac.width), persistent=False)
        self.blocks = nn.ModuleList(Block(ac.width, ac.heads, ac.mlp_ratio) for _ in range(ac.depth))
        self.norm = nn.LayerNorm(ac.width)

    @staticmethod
    def _out_len(n: int, downsample: int) -> int:
        for _ in range(int(math.log2(downsample))):
            n = (n - 1) // 2 + 1
        return n

    def forward(self, mel: torch.Tensor) -> torch.Tensor:  # (B, n_mels, F)
        x = self.stem(mel).transpose(1, 2)  # (B, Na, W)
        if x.shape[1] != self.n_tokens:
            raise ValueError(f"audio encoder: got {x.shape[1]} tokens from {mel.shape[-1]} mel frames, "
                             f"expected {self.n_tokens} (is the window length the configured one?)")
        x = x + self.pos
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)


def audio_tower(cfg: ModelConfig) -> nn.Module:
    """The built-in AudioEncoder, or a Whisper encoder (arch whisper: pretrained from `audio_encoder.path`, else
    random weights, see `check_weights`)."""
    ac, fe = cfg.audio_encoder, cfg.frontend
    if ac.arch == "builtin":
        return AudioEncoder(cfg)
    from emo_edge.model.backbones import WhisperAudioEncoder

    return WhisperAudioEncoder(ac, fe.n_mels, fe.n_mel_frames)


# ---------------------------------------------------------------------------------------------
# Conv-Attention pre-fusion
# ---------------------------------------------------------------------------------------------


def mlp(d_in: int, d_hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.GELU(), nn.Linear(d_hidden, d_out))


class ConvBlock(nn.Module):
    """Residual [Conv1d k=3 + Swish]."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv = nn.Conv1d(dim, dim, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, D, N)
        return x + F.silu(self.conv(x))


class ConvAttentionFusion(nn.Module):
    """Project each modality to D, resample to Nf positions, then attention branch + conv branch.

    Attention branch: an MLP over the concatenated features gives one weight per modality per
    position (softmax over present modalities); the output is the weighted sum of the stacked
    features. Conv branch: 1x1 Conv1d over the concatenation, then residual conv blocks.
    """

    def __init__(self, cfg: ModelConfig, widths: dict[str, int], n_tokens: dict[str, int]):
        super().__init__()
        fc = cfg.fusion
        m = len(FUSED)
        self.proj = nn.ModuleDict({k: mlp(widths[k], fc.dim, fc.dim) for k in FUSED})
        for k in FUSED:
            self.register_buffer(f"resample_{k}", pool_matrix(n_tokens[k], fc.n_tokens), persistent=False)
        self.attn = mlp(m * fc.dim, fc.attn_hidden, m)
        self.conv_in = nn.Conv1d(m * fc.dim, fc.dim, 1)
        self.conv_blocks = nn.Sequential(*[ConvBlock(fc.dim) for _ in range(fc.n_blocks)])
        self.norm = nn.LayerNorm(fc.dim)

    def forward(self, feats: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        # feats[k]: (B, N_k, W_k); present: (B, M) with 1 for an available modality, 0 for a missing one
        stacked = torch.stack(
            [getattr(self, f"resample_{k}") @ self.proj[k](feats[k]) for k in FUSED], dim=2
        )  # (B, Nf, M, D)
        stacked = stacked * present[:, None, :, None]  # a missing modality is zeroed ...
        cat = stacked.flatten(2)  # (B, Nf, M*D)
        logits = self.attn(cat) + (present[:, None, :] - 1.0) * 1e4  # ... and masked out of the weights
        weights = logits.softmax(dim=-1)  # (B, Nf, M)
        attn_out = (weights[..., None] * stacked).sum(dim=2)  # (B, Nf, D)
        conv_out = self.conv_blocks(self.conv_in(cat.transpose(1, 2))).transpose(1, 2)  # (B, Nf, D)
        return self.norm(attn_out + conv_out)


# ---------------------------------------------------------------------------------------------
# fast head and modal adapters
# ---------------------------------------------------------------------------------------------


class FastHead(nn.Module):
    """Mean fusion token -> label logits (L) and (valence, arousal) in [-1, 1]."""

    def __init__(self, cfg: ModelConfig, n_labels: int = len(LABELS)):
        super().__init__()
        d = cfg.fusion.dim
        self.net = nn.Sequential(
            nn.LayerNorm(d), nn.Linear(d, cfg.head.hidden), nn.GELU(), nn.Dropout(cfg.head.dropout),
            nn.Linear(cfg.head.hidden, n_labels + 2),
        )
        self.n_labels = n_labels

    def forward(self, fused: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # (B, Nf, D)
        out = self.net(fused.mean(dim=1))
        return out[:, : self.n_labels], torch.tanh(out[:, self.n_labels :])  # (B, L), (B, 2)


class Adapter(nn.Module):
    """Pool a stream to its token budget, then an MLP into the LLM width."""

    def __init__(self, n_in: int, n_out: int, width: int, llm_width: int, grid: int | None = None):
        super().__init__()
        pool = grid_pool_matrix(grid, math.isqrt(n_out)) if grid else pool_matrix(n_in, n_out)
        self.register_buffer("pool", pool, persistent=False)
        self.mlp = mlp(width, llm_width, llm_width)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # (B, N_in, W) -> (B, n_out, H)
        return self.mlp(self.pool @ tokens)


class AttributeTokens(nn.Module):
    """One LLM token per observable attribute: its two learned embeddings (for the attribute's first value in
    sorted order, the head's target 1, and for the other) blended by the attribute head's probability.

    The attribute head reads the fusion token the fast head reads, so this hands the LLM what perception has
    already decided about each attribute, one token it can copy per cue, rather than leaving it to decode the
    attributes again from the pooled fusion tokens (where it named the visual ones at chance)."""

    def __init__(self, n_attributes: int, llm_width: int):
        super().__init__()
        self.table = nn.Parameter(torch.randn(n_attributes, 2, llm_width) * 0.02)  # [:, 0] value 1, [:, 1] value 0

    def forward(self, logits: torch.Tensor) -> torch.Tensor:  # (B, A) -> (B, A, H)
        p = torch.sigmoid(logits)[..., None]
        return p * self.table[:, 0] + (1.0 - p) * self.table[:, 1]


# ---------------------------------------------------------------------------------------------
# perception: everything before the LLM
# ---------------------------------------------------------------------------------------------


class Perception(nn.Module):
    """Encoders + fusion + fast head + adapters. Inputs are float32 RGB in [0, 1] and scaled log-mel.

    allow_random: build SigLIP/Whisper-architecture encoders that have no `path` with random weights (see
    `check_weights`); without it such a config raises.
    """

    def __init__(self, cfg: ModelConfig, llm_width: int, allow_random: bool = False):
        super().__init__()
        check_weights(cfg, allow_random)
        self.cfg = cfg
        self.image_encoder = ImageEncoder(cfg)
        self.video_encoder = VideoEncoder(cfg)
        self.audio_encoder = audio_tower(cfg)
        widths = {"image": self.image_encoder.width, "video": self.video_encoder.width,
                  "audio": self.audio_encoder.width}
        self.n_native = {"image": self.image_encoder.grid**2, "video": cfg.frontend.n_frames * self.video_encoder.k,
                         "audio": self.audio_encoder.n_tokens}
        self.fusion = ConvAttentionFusion(cfg, widths, self.n_native)
        self.head = FastHead(cfg)
        # one linear probe per encoder (mean token -> label logits): a training-time auxiliary loss
        # that gives every encoder its own gradient, and a per-modality diagnostic; never exported
        self.aux = nn.ModuleDict({k: nn.Linear(widths[k], len(LABELS)) for k in FUSED})
        # observable attributes (head tilt, onset, pitch contour, ...) from the mean fusion token: keeps in
        # the tokens the LLM reads what the label alone would let the encoders discard; exported as the fusion
        # graph's `attributes` output and, with tokens.attributes, inside the attribute tokens
        a = cfg.head.attributes
        d = cfg.fusion.dim
        self.attributes = nn.Sequential(nn.LayerNorm(d), mlp(d, cfg.head.hidden, a)) if a else None
        # the same attributes probed linearly from each encoder's mean token (the loss counts only those its view
        # can see): the encoder's own gradient for them, as `aux` is for the label; never exported
        self.aux_attr = nn.ModuleDict({k: nn.Linear(widths[k], a) for k in FUSED}) if a else None
        tb = cfg.tokens
        adapters = {}
        if tb.fusion:
            adapters["fusion"] = Adapter(cfg.fusion.n_tokens, tb.fusion, cfg.fusion.dim, llm_width)
        if tb.image:
            adapters["image"] = Adapter(0, tb.image, widths["image"], llm_width, grid=self.image_encoder.grid)
        if tb.video:
            adapters["video"] = Adapter(self.n_native["video"], tb.video, widths["video"], llm_width)
        if tb.audio:
            adapters["audio"] = Adapter(self.n_native["audio"], tb.audio, widths["audio"], llm_width)
        if tb.attributes:
            adapters["attributes"] = AttributeTokens(tb.attributes, llm_width)
        self.adapters = nn.ModuleDict(adapters)

    # stage methods (export boundaries)
    def encode_image(self, image: torch.Tensor) -> torch.Tensor:  # (B, 3, S, S) -> (B, G*G, Wi)
        return self.image_encoder(image)

    def encode_video(self, frames: torch.Tensor) -> torch.Tensor:  # (B, T, 3, s, s) -> (B, T*k, Wv)
        return self.video_encoder(frames)

    def encode_audio(self, mel: torch.Tensor) -> torch.Tensor:  # (B, n_mels, F) -> (B, Na, Wa)
        return self.audio_encoder(mel)

    def fuse(self, feats: dict[str, torch.Tensor], present: torch.Tensor) -> torch.Tensor:  # -> (B, Nf, D)
        return self.fusion(feats, present)

    def attribute_logits(self, fused: torch.Tensor) -> torch.Tensor:  # (B, Nf, D) -> (B, A)
        assert self.attributes is not None, "no attribute head (model.head.attributes is 0)"
        return self.attributes(fused.mean(dim=1))

    def embed_streams(self, feats: dict[str, torch.Tensor], fused: torch.Tensor,
                      attributes: torch.Tensor | None = None) -> torch.Tensor:
        """(B, budget.total, H): the LLM tokens in splice order [fusion | image | video | audio | attributes];
        `attributes`: the attribute head's logits when already computed."""
        def source(k: str) -> torch.Tensor:
            if k == "attributes":
                return self.attribute_logits(fused) if attributes is None else attributes
            return fused if k == "fusion" else feats[k]

        return torch.cat([self.adapters[k](source(k)) for k in self.adapters], dim=1)

    def stream_mask(self, present: torch.Tensor) -> torch.Tensor:
        """(B, budget.total) 1 where a token's source is present; `present` is (B, 3) over FUSED. The fusion and
        attribute tokens come from every present modality."""
        cols = []
        for k in self.adapters:
            n = self.cfg.tokens.__dict__[k]
            whole = k in ("fusion", "attributes")
            src = present.amax(dim=1, keepdim=True) if whole else present[:, FUSED.index(k)][:, None]
            cols.append(src.expand(-1, n))
        return torch.cat(cols, dim=1)

    def forward(
        self, image: torch.Tensor, frames: torch.Tensor, mel: torch.Tensor, present: torch.Tensor,
        isolate: bool = False,
    ) -> dict[str, torch.Tensor]:
        """`isolate` (training): the fusion reads the encoders' tokens detached, so each encoder learns only from
        its own probes while fusion, head and adapters learn on top of it."""
        feats = {"image": self.encode_image(image), "video": self.encode_video(frames), "audio": self.encode_audio(mel)}
        fused = self.fuse({k: v.detach() for k, v in feats.items()} if isolate else feats, present)
        logits, va = self.head(fused)
        aux = torch.stack([self.aux[k](feats[k].mean(dim=1)) for k in FUSED], dim=1)  # (B, M, L)
        attributes = self.attribute_logits(fused) if self.attributes is not None else None  # (B, A)
        out = {"fused": fused, "logits": logits, "va": va, "aux": aux,
               "tokens": self.embed_streams(feats, fused, attributes), "token_mask": self.stream_mask(present)}
        if attributes is not None:
            out["attributes"] = attributes
        if self.aux_attr is not None:
            out["aux_attr"] = torch.stack([self.aux_attr[k](feats[k].mean(dim=1)) for k in FUSED], dim=1)  # (B, M, A)
        return out
