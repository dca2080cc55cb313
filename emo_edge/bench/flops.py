"""FLOPs and bytes of a forward pass, counted from the model itself.

`OpCounter` is a torch dispatch mode: every aten op a forward pass runs goes through it, so the
count follows the real code path (the pooling matmuls, attention, convolutions), on real tensors or
on the meta device (the `paper` preset, counted without allocating its weights). Counted:

    flops         2 per multiply-accumulate of matrix products, convolutions and attention
                  (the work a GEMM peak measures); element-wise ops, norms and softmax are not counted
    bytes         compulsory traffic: every parameter read once, plus the stage's inputs and outputs
                  (a perfectly fused stage moves no more; the roofline bound uses this)
    unfused_bytes every op's inputs and outputs (views excluded): the traffic if nothing stayed in cache

The LLaMA backbone is counted analytically by `llama_flops` / `llama_bytes` (transformers' mask
code cannot run on the meta device); a test checks the formula against `OpCounter` on a real model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

aten = torch.ops.aten

# ops that only re-describe memory: no traffic
VIEW_OPS = frozenset(str(op) for op in (
    aten.view, aten._unsafe_view, aten.t, aten.transpose, aten.permute, aten.expand, aten.unsqueeze, aten.squeeze,
    aten.slice, aten.select, aten.detach, aten.alias, aten.unbind, aten.split, aten.split_with_sizes, aten.reshape,
    aten.as_strided, aten.lift_fresh,
))


def _shape(x: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in x.shape)


def _mm(args: tuple, out: Any) -> int:  # (n, k) @ (k, m)
    n, k = _shape(args[0])
    return 2 * n * k * _shape(args[1])[1]


def _addmm(args: tuple, out: Any) -> int:  # bias + (n, k) @ (k, m)
    return _mm(args[1:], out)


def _bmm(args: tuple, out: Any) -> int:  # (b, n, k) @ (b, k, m)
    b, n, k = _shape(args[0])
    return 2 * b * n * k * _shape(args[1])[2]


def _baddbmm(args: tuple, out: Any) -> int:
    return _bmm(args[1:], out)


def _conv(args: tuple, out: Any) -> int:
    """2 * (C_in / groups) * prod(kernel) per output element; args (x, w, bias, stride, pad, dil, transposed, ...)."""
    w = _shape(args[1])  # (C_out, C_in / groups, *kernel)
    return 2 * math.prod(_shape(out)) * math.prod(w[1:])


def _sdpa(args: tuple, out: Any) -> int:
    """q (..., Nq, d), k (..., Nk, d), v (..., Nk, dv): Q K^T and A V."""
    q, k, v = (_shape(a) for a in args[:3])
    batch = math.prod(q[:-2])
    return 2 * batch * q[-2] * k[-2] * (q[-1] + v[-1])


FLOP_RULES: dict[str, Callable[[tuple, Any], int]] = {
    str(aten.mm): _mm, str(aten.addmm): _addmm, str(aten.bmm): _bmm, str(aten.baddbmm): _baddbmm,
    str(aten.convolution): _conv,
    **{str(op): _sdpa for op in (aten._scaled_dot_product_flash_attention_for_cpu,
                                 aten._scaled_dot_product_efficient_attention,
                                 aten._scaled_dot_product_flash_attention, aten._scaled_dot_product_cudnn_attention)},
}


def _nbytes(tree: Any) -> int:
    leaves, _ = tree_flatten(tree)
    return sum(x.numel() * x.element_size() for x in leaves if isinstance(x, torch.Tensor))


@dataclass
class OpCounter(TorchDispatchMode):
    """Counts matmul/conv/attention FLOPs and unfused bytes of everything run inside `with OpCounter() as c:`."""

    flops: int = 0
    unfused_bytes: int = 0
    by_op: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__()

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        name = str(func.overloadpacket)
        rule = FLOP_RULES.get(name)
        if rule is not None:
            f = rule(args, out[0] if isinstance(out, tuple) else out)
            self.flops += f
            self.by_op[name] = self.by_op.get(name, 0) + f
        if name not in VIEW_OPS:
            self.unfused_bytes += _nbytes(args) + _nbytes(out)
        return out


@dataclass(frozen=True)
class Cost:
    """Work and traffic of one stage for one input."""

    flops: int
    bytes: int  # compulsory: parameters + inputs + outputs
    unfused_bytes: int
    param_bytes: int

    @property
    def intensity(self) -> float:
        """Arithmetic intensity, FLOP per byte of compulsory traffic."""
        return self.flops / self.bytes if self.bytes else 0.0

    def to_dict(self) -> dict[str, float]:
        return {"flops": self.flops, "bytes": self.bytes, "unfused_bytes": self.unfused_bytes,
                "param_bytes": self.param_bytes, "intensity_flop_per_byte": self.intensity}


def count(fn: Callable[..., Any], inputs: Iterable[torch.Tensor], params: Iterable[torch.Tensor],
          param_bytes_per_element: float | None = None) -> Cost:
    """Run `fn(*inputs)` under an OpCounter; compulsory bytes = params + inputs + outputs.

    param_bytes_per_element overrides the parameters' storage size (e.g. 1.0 for an INT8 graph's weights).
    """
    inputs = list(inputs)
    params = list(params)
    with torch.no_grad(), OpCounter() as c:
        out = fn(*inputs)
    per = param_bytes_per_element
    p_bytes = int(sum(p.numel() * (p.element_size() if per is None else per) for p in params))
    return Cost(c.flops, p_bytes + _nbytes(inputs) + _nbytes(out), c.unfused_bytes, p_bytes)


# ---------------------------------------------------------------------------------------------
# LLaMA backbone, analytically
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LlamaShape:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def layer_params(self) -> int:
        """Weights of one decoder layer's matrices (q, k, v, o, gate, up, down)."""
        kv = self.kv_heads * self.head_dim
        return self.hidden * (2 * self.hidden + 2 * kv) + 3 * self.hidden * self.intermediate

    @property
    def matrix_params(self) -> int:
        """Weights multiplied per token: every layer's matrices and the LM head (the embedding is a lookup)."""
        return self.layers * self.layer_params + self.hidden * self.vocab

    @classmethod
    def from_hf(cls, config: Any) -> LlamaShape:
        return cls(config.hidden_size, config.num_hidden_layers, config.num_attention_heads,
                   getattr(config, "num_key_value_heads", None) or config.num_attention_heads,
                   config.intermediate_size, config.vocab_size)


def llama_flops(shape: LlamaShape, n_new: int, n_past: int = 0, logits_rows: int | None = None) -> int:
    """FLOPs to feed `n_new` positions after `n_past` cached ones (causal attention over the cache);
    the LM head runs on `logits_rows` positions (default all `n_new`, as transformers does)."""
    rows = n_new if logits_rows is None else logits_rows
    proj = 2 * n_new * shape.layers * shape.layer_params + 2 * rows * shape.hidden * shape.vocab
    # each new position i attends to n_past + i + 1 keys; QK^T and AV both cost 2 * head_dim per key per head
    keys = n_new * n_past + n_new * (n_new + 1) // 2
    attn = shape.layers * shape.heads * 2 * 2 * shape.head_dim * keys
    return proj + attn


def llama_bytes(shape: LlamaShape, n_new: int, n_past: int, weight_bytes: float, kv_bytes_per_element: int = 2) -> int:
    """Compulsory traffic to feed `n_new` positions: all weights once (`weight_bytes`, the stored size at
    its quantisation) plus the KV cache read and the new rows written (f16 cache in llama.cpp)."""
    kv_rows = (n_past + n_new) * shape.layers * 2 * shape.kv_heads * shape.head_dim
    return int(weight_bytes + kv_rows * kv_bytes_per_element)
