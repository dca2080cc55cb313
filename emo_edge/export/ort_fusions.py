"""Which of ONNX Runtime's graph fusions apply to a perception graph: the op types of the model a CPU session
really runs, after its graph optimisations (the level the runtime's sessions use: all).

    LayerNormalization        the ReduceMean/Sub/Pow/Sqrt/Div chain of a LayerNorm, fused
    SkipLayerNormalization    residual Add + LayerNorm
    Gelu / BiasGelu / FastGelu  erf GELU, with its bias Add; tanh-approximated GELU
    Attention / MultiHeadAttention  the whole attention block
    FusedMatMul               MatMul with a Transpose or scale folded in
    MatMulIntegerToFloat      DQ(x), DQ(w) -> MatMul of a QDQ graph, as one integer kernel with float output
    QLinearMatMul / QLinearConv  DQ -> op -> Q, as one integer kernel with integer output

A graph's count of a fused op against the count of what it replaces (LayerNorms, GELUs, weight MatMuls) says
whether the fusion applied everywhere; `emo_edge.bench` reports the counts next to the op profile.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

FUSED_OPS: tuple[str, ...] = ("LayerNormalization", "SkipLayerNormalization", "SimplifiedLayerNormalization", "Gelu",
                              "BiasGelu", "FastGelu", "Attention", "MultiHeadAttention", "FusedMatMul",
                              "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "QLinearMatMul", "QLinearConv")


def optimized_op_counts(path: str | Path, threads: int = 1) -> dict[str, int]:
    """Op type -> count in the graph ONNX Runtime's CPU provider runs for the model at `path` (level: all)."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="emo-ortopt-") as work:
        out = Path(work) / "optimized.onnx"
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.log_severity_level = threads, 3  # 3: no warning about the NCHWc layout
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.optimized_model_filepath = str(out)
        # big weights go to one side file, so a graph past 2 GiB serialises too
        opts.add_session_config_entry("session.optimized_model_external_initializers_file_name", "weights.bin")
        ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        model = onnx.load(str(out), load_external_data=False)
    return dict(Counter(n.op_type for n in model.graph.node))


def fusion_counts(path: str | Path, threads: int = 1) -> dict[str, int]:
    """The FUSED_OPS present in ONNX Runtime's optimized graph of `path`, with their counts."""
    ops = optimized_op_counts(path, threads)
    return {op: ops[op] for op in FUSED_OPS if ops.get(op)}


def fusion_report(onnx_dir: str | Path, graphs: Any = None, threads: int = 1) -> dict[str, dict[str, int]]:
    """Per graph of an exported perception directory (io_spec.json's), the fused ops ONNX Runtime runs."""
    from emo_edge.runtime.io_spec import SPEC_FILE, as_io_spec

    spec = as_io_spec(Path(onnx_dir) / SPEC_FILE)
    names = list(spec.graphs) if graphs is None else list(graphs)
    return {g: fusion_counts(Path(onnx_dir) / spec.graphs[g].filename, threads) for g in names}
