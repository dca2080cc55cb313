"""The four perception graphs as one ONNX model, built in memory when the runtime loads a bundle.

The bundle keeps one file per graph (TensorRT engines, INT8 calibration and the export parity checks
are per graph). To run them, one session is faster than four: on the 2-core CPU with edge-small, four
sessions took 5.7 ms per update and the merged model 3.9 ms. Four sessions pay four `run` calls, and
each has its own thread pool, so their workers must not spin (a finished session's spinning workers
starve the next one's); one session has one pool, which may spin while it runs (and stops spinning when
`run` returns, so it does not starve whatever runs next, llama.cpp above all).

The merge renames every internal tensor, node and initializer with its graph's name (`image_encoder/...`)
and keeps the interface names of `io_spec` (image, frames, mel, present; *_feats; fused, logits, ...), so
the fusion graph's inputs are wired to the encoders' outputs by name and every output of every graph is
an output of the merged model. Nothing is recomputed or approximated: the merged model runs the same
nodes on the same weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from emo_edge.runtime.io_spec import IOSpec


def _rename(graph: Any, prefix: str, keep: set[str]) -> None:
    """Prefix every name in `graph` except the interface names in `keep` (in place)."""

    def new(name: str) -> str:
        return name if not name or name in keep else f"{prefix}/{name}"

    for i, node in enumerate(graph.node):
        if any(a.type in (a.GRAPH, a.GRAPHS) for a in node.attribute):
            raise ValueError(f"{prefix}: node {node.name!r} ({node.op_type}) has a subgraph; the perception "
                             "graphs are expected to have none")
        node.name = new(node.name or f"{node.op_type}_{i}")
        node.input[:] = [new(n) for n in node.input]
        node.output[:] = [new(n) for n in node.output]
    for init in graph.initializer:
        init.name = new(init.name)
    for sparse in graph.sparse_initializer:
        sparse.values.name = new(sparse.values.name)
    for vi in graph.value_info:
        vi.name = new(vi.name)


def merge_perception(models: Mapping[str, Any], spec: IOSpec) -> Any:
    """{graph name: onnx.ModelProto} for every graph of `spec` -> one checked onnx.ModelProto.

    Inputs: the encoders' inputs and `present`; outputs: every graph's outputs (the encoders' features
    included). Raises ValueError when a graph is missing or its interface is not the spec's.
    """
    import onnx

    missing = [g for g in spec.graphs if g not in models]
    if missing:
        raise ValueError(f"merge_perception: missing graph(s) {missing}")
    interface = {t.name for g in spec.graphs.values() for t in (*g.inputs, *g.outputs)}
    produced = {t.name for g in spec.graphs.values() for t in g.outputs}
    merged = onnx.helper.make_graph([], "emo_edge_perception", [], [])
    opsets: dict[str, int] = {}
    ir_version = 0
    for name, graph_spec in spec.graphs.items():
        model = onnx.ModelProto()
        model.CopyFrom(models[name])
        g = model.graph
        got = ([i.name for i in g.input if i.name not in {x.name for x in g.initializer}], [o.name for o in g.output])
        if got != (graph_spec.input_names, graph_spec.output_names):
            raise ValueError(f"{name}: inputs/outputs {got} are not the io spec's "
                             f"{(graph_spec.input_names, graph_spec.output_names)}")
        _rename(g, name, interface)
        merged.node.extend(g.node)
        merged.initializer.extend(g.initializer)
        merged.sparse_initializer.extend(g.sparse_initializer)
        merged.value_info.extend(g.value_info)
        merged.input.extend(i for i in g.input if i.name in graph_spec.input_names and i.name not in produced)
        merged.output.extend(g.output)
        for op in model.opset_import:
            opsets[op.domain] = max(opsets.get(op.domain, 0), op.version)
        ir_version = max(ir_version, model.ir_version)
    out = onnx.helper.make_model(merged, opset_imports=[onnx.helper.make_opsetid(d, v) for d, v in opsets.items()],
                                 producer_name="emo-edge merge_perception")
    out.ir_version = ir_version
    onnx.checker.check_model(out)
    return out
