"""Roofline: this machine's peaks measured in the run, each stage's share of its bound, and a projection
onto Jetson boards from their published peaks (clearly a projection, never a measurement).

The bound of a stage with F FLOPs moving B bytes on a machine with compute peak P and bandwidth W is
the roofline time max(F / P, B / W); its achieved fraction is bound_time / measured_time (1.0 = at
the roof). Bytes are the compulsory traffic of `emo_edge.bench.flops` (parameters + inputs + outputs).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from emo_edge.bench.flops import Cost

FAR_BELOW = 0.10  # a stage under this fraction of its bound gets a stated reason


@dataclass(frozen=True)
class Peaks:
    """Measured (or published) peaks: FLOP/s and bytes/s."""

    fp32_flop_s: float
    bf16_flop_s: float
    copy_byte_s: float
    int8_op_s: float | None = None  # ONNX Runtime's integer GEMM (uint8 x int8), when onnxruntime is installed

    def to_dict(self) -> dict[str, float | None]:
        return {"fp32_matmul_gflop_s": self.fp32_flop_s / 1e9, "bf16_matmul_gflop_s": self.bf16_flop_s / 1e9,
                "copy_gb_s": self.copy_byte_s / 1e9,
                "int8_matmul_gop_s": None if self.int8_op_s is None else self.int8_op_s / 1e9}

    def compute_peak(self, precision: str) -> float:
        """The compute roof of a stage run at `precision`: int8 stages (the bundle's QDQ graphs, whose weight
        MatMuls run as integer GEMMs) are held to the integer GEMM peak when it was measured, everything else
        to the fp32 matmul peak."""
        return self.int8_op_s if precision == "int8" and self.int8_op_s else self.fp32_flop_s


def _best_rate(work: float, fn: Callable[[], Any], reps: int) -> float:
    """work / (fastest of `reps` timed calls), after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return work / best


def int8_gemm_rate(threads: int, n: int = 2048, reps: int = 5) -> float | None:
    """Integer multiply-adds per second (2 ops each) of ONNX Runtime's CPU MatMulInteger on uint8 (n, n) x int8
    (n, n): the kernel family (MLAS U8S8 GEMM, VNNI where the CPU has it) that runs the INT8 layouts' weight
    MatMuls. None without onnxruntime."""
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        return None
    rng = np.random.default_rng(0)
    b = numpy_helper.from_array(rng.integers(-128, 128, (n, n), dtype=np.int8), "B")
    graph = helper.make_graph([helper.make_node("MatMulInteger", ["A", "B"], ["Y"])], "int8_gemm",
                              [helper.make_tensor_value_info("A", TensorProto.UINT8, [n, n])],
                              [helper.make_tensor_value_info("Y", TensorProto.INT32, [n, n])], [b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(model.SerializeToString(), sess_options=opts, providers=["CPUExecutionProvider"])
    a = rng.integers(0, 256, (n, n), dtype=np.uint8)
    return _best_rate(2.0 * n**3, lambda: sess.run(None, {"A": a}), reps)


def measure_peaks(threads: int, n: int = 2048, copy_mb: int = 256, reps: int = 5) -> Peaks:
    """Large square matmuls (fp32, bf16) through torch, the int8 GEMM through ONNX Runtime and a large numpy
    copy (read + write counted)."""
    import torch

    torch.set_num_threads(threads)
    a32, b32 = torch.randn(n, n), torch.randn(n, n)
    a16, b16 = a32.bfloat16(), b32.bfloat16()
    flops = 2.0 * n**3
    with torch.no_grad():
        fp32 = _best_rate(flops, lambda: torch.mm(a32, b32), reps)
        bf16 = _best_rate(flops, lambda: torch.mm(a16, b16), reps)
    src = np.ones(copy_mb * 2**20 // 8, dtype=np.float64)
    dst = np.empty_like(src)
    copy = _best_rate(2.0 * src.nbytes, lambda: np.copyto(dst, src), reps)
    return Peaks(fp32, bf16, copy, int8_gemm_rate(threads, n, reps))


def bound_s(cost: Cost, flop_s: float, byte_s: float) -> float:
    """Roofline lower bound on the time of one call, seconds."""
    return max(cost.flops / flop_s, cost.bytes / byte_s)


def limiter(cost: Cost, flop_s: float, byte_s: float) -> str:
    """'compute' or 'memory': which roof is the lower one at this stage's arithmetic intensity."""
    return "compute" if cost.flops / flop_s >= cost.bytes / byte_s else "memory"


def achieved(cost: Cost, measured_ms: float, flop_s: float, byte_s: float) -> dict[str, Any]:
    """The stage's achieved rates and its fraction of the roofline bound, with a reason when far below."""
    if measured_ms <= 0:
        raise ValueError(f"measured time must be positive, got {measured_ms} ms")
    t = measured_ms / 1e3
    frac = bound_s(cost, flop_s, byte_s) / t
    out = {"achieved_gflop_s": cost.flops / t / 1e9, "achieved_gb_s": cost.bytes / t / 1e9,
           "bound_ms": bound_s(cost, flop_s, byte_s) * 1e3, "limiter": limiter(cost, flop_s, byte_s),
           "fraction_of_bound": frac}
    out["reason"] = why_far_below(cost, measured_ms) if frac < FAR_BELOW else ""
    if frac > 1.0:
        out["reason"] = (f"above the DRAM roof: its {cost.bytes / 2**20:.1f} MiB fit in the CPU caches, so the copy "
                         "bandwidth measured over 256 MiB is not this stage's roof")
    return out


def why_far_below(cost: Cost, measured_ms: float) -> str:
    """A stated reason for a stage far below its roofline, from its size and shape."""
    reasons = []
    mflop = cost.flops / 1e6
    if measured_ms < 5.0 or mflop < 50:
        reasons.append(f"small work per call ({mflop:.1f} MFLOP in {measured_ms:.2f} ms): per-op dispatch and "
                       "framework overhead, not arithmetic, set the time")
    if cost.intensity < 10:
        reasons.append(f"low arithmetic intensity ({cost.intensity:.1f} FLOP/byte): matrix-vector work, "
                       "memory bound even when cached")
    if cost.unfused_bytes > 4 * cost.bytes:
        reasons.append(f"unfused intermediates ({cost.unfused_bytes / cost.bytes:.0f}x the compulsory bytes): "
                       "norms, softmax, GELU and reshapes between the matmuls are not counted as FLOPs but cost time")
    return "; ".join(reasons) or "small matrices (widths ~128-256) do not reach GEMM peak on this CPU"


# ---------------------------------------------------------------------------------------------
# projection onto Jetson boards from published peaks
# ---------------------------------------------------------------------------------------------

ULTRALYTICS_JETSON = "https://docs.ultralytics.com/guides/nvidia-jetson/ (table 'NVIDIA Jetson Series Comparison', " \
                     "from NVIDIA's Jetson module specifications)"
AGX_BRIEF = "NVIDIA Jetson AGX Orin Series Technical Brief v1.2 (GPU: 2048 CUDA cores, 5.3 FP32 TFLOPS, " \
            "170 sparse INT8 TOPS), as quoted at http://mzph.cn/web/30785.shtml"
NANO_SUPER = "https://www.brojogopalsapui.com/ai-foundations/sub_contents/AI_hardware/jetson_orin_nano_light.html " \
             "(from NVIDIA's Jetson Orin Nano Super Developer Kit datasheet, Dec 2024: 1024 CUDA cores, GPU 625 -> " \
             "1020 MHz, 68 -> 102 GB/s, 40 -> 67 sparse INT8 TOPS)"


@dataclass(frozen=True)
class Device:
    """Published peaks of a board's GPU. fp16 dense tensor FLOP/s is derived: Ampere tensor cores run dense
    FP16 at half the dense INT8 rate, and dense INT8 is half the published sparse figure."""

    name: str
    fp32_tflop_s: float  # CUDA cores x 2 FLOP x max GPU clock
    fp16_tensor_tflop_s: float  # dense
    bandwidth_gb_s: float  # LPDDR5, shared by CPU and GPU
    memory_gb: float
    derivation: str
    sources: tuple[str, ...]


DEVICES: tuple[Device, ...] = (
    Device("Jetson AGX Orin 64GB (MAXN)", 2048 * 2 * 1.3e9 / 1e12, 170 / 4, 204.8, 64,
           "fp32 = 2048 cores x 2 x 1.3 GHz; fp16 dense = 170 sparse INT8 GPU TOPS / 4",
           (ULTRALYTICS_JETSON, AGX_BRIEF)),
    Device("Jetson Orin Nano 8GB Super (25 W)", 1024 * 2 * 1.02e9 / 1e12, 67 / 4, 102.0, 8,
           "fp32 = 1024 cores x 2 x 1.02 GHz; fp16 dense = 67 sparse INT8 TOPS / 4 (no DLA on Nano)",
           (ULTRALYTICS_JETSON, NANO_SUPER)),
    Device("Jetson Orin Nano 8GB (15 W, original)", 1024 * 2 * 0.625e9 / 1e12, 40 / 4, 68.0, 8,
           "fp32 = 1024 cores x 2 x 0.625 GHz; fp16 dense = 40 sparse INT8 TOPS / 4", (NANO_SUPER,)),
)


def project(costs: dict[str, Cost], device: Device, precision: str = "fp16") -> dict[str, dict[str, Any]]:
    """Roofline lower bound per stage on `device` (ms): max(FLOPs / peak, bytes / bandwidth).

    A projection from published peaks, not a measurement: real kernels reach a fraction of either roof.
    precision: 'fp16' (tensor cores, TensorRT) or 'fp32' (CUDA cores) for the compute roof.
    """
    if precision not in ("fp16", "fp32"):
        raise ValueError(f"precision must be fp16 or fp32, got {precision!r}")
    flop_s = (device.fp16_tensor_tflop_s if precision == "fp16" else device.fp32_tflop_s) * 1e12
    byte_s = device.bandwidth_gb_s * 1e9
    return {stage: {"bound_ms": bound_s(c, flop_s, byte_s) * 1e3, "limiter": limiter(c, flop_s, byte_s)}
            for stage, c in costs.items()}


def device_table() -> list[dict[str, Any]]:
    return [asdict(d) for d in DEVICES]
