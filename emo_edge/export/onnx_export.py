"""Perception -> four ONNX graphs, each checked by `onnx.checker` and against eager PyTorch.

Graphs and tensor names come from `io_spec` (the one source of truth). Uses the classic
TorchScript exporter (`dynamo=False`): it needs no onnxscript and gives plain opset-17 graphs that
TensorRT parses; the batch axis is dynamic and the trace runs at batch 2 so that no axis of size 1
gets specialised. Parity is measured with ONNX Runtime's CPU provider through the runtime's own
`OrtPerception`, at batch 1 and 3 per graph (random inputs) and end to end from uint8 arrays
through `to_batch` (random, and real clips when given).

Parity metric, per output tensor:
    max_abs_err = max |ort - torch|
    max_rel_err = max_abs_err / (max |torch| + 1e-12), i.e. relative to the tensor's scale
    (an elementwise ratio explodes where torch is ~0, which says nothing about the export)
    label_agreement (logits only) = share of rows with the same argmax.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from emo_edge.config import ModelConfig
from emo_edge.fileio import atomic_write, sha256_file
from emo_edge.model.perception import FUSED, AttributeTokens, Perception
from emo_edge.runtime.io_spec import (
    DATA_SUFFIX,
    SPEC_FILE,
    GraphSpec,
    IOSpec,
    build_io_spec,
    dummy_inputs,
    dynamic_axes,
)
from emo_edge.runtime.perception import CPU, OrtPerception

TRACE_BATCH = 2  # > 1, so tracing cannot bake a broadcast of size 1 into the graph
# a graph whose weights exceed this many bytes keeps them in <graph>.onnx.data next to it (ONNX's external-data
# format): protobuf cannot serialise a message of 2 GiB or more, so one file would not load; a margin is left for
# the graph itself
EXTERNAL_DATA_BYTES = 1_800_000_000
PARITY_BATCHES = (1, 3)
MAX_REAL = 16  # real clips used for the end-to-end parity check
METRIC = "max_rel_err = max|ort - torch| / (max|torch| + 1e-12) per output; label_agreement = same argmax share"


class ExportError(RuntimeError):
    """An export or check step failed; the cause is chained."""


def stage_outputs(p: Perception, graph: str, x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """One export boundary of `Perception`, named inputs -> named outputs (names from io_spec)."""
    if graph == "image_encoder":
        return {"image_feats": p.encode_image(x["image"])}
    if graph == "video_encoder":
        return {"video_feats": p.encode_video(x["frames"])}
    if graph == "audio_encoder":
        return {"audio_feats": p.encode_audio(x["mel"])}
    assert graph == "fusion", graph
    feats = {k: x[f"{k}_feats"] for k in FUSED}
    fused = p.fuse(feats, x["present"])
    logits, va = p.head(fused)
    attributes = p.attribute_logits(fused) if p.attributes is not None else None
    out = {"fused": fused, "logits": logits, "va": va, "tokens": p.embed_streams(feats, fused, attributes),
           "token_mask": p.stream_mask(x["present"])}
    if attributes is not None:
        out["attributes"] = torch.sigmoid(attributes)  # probabilities: the runtime reads them as they are
    return out


class StageGraph(nn.Module):
    """A stage as a module with positional inputs and a tuple of outputs, both in io_spec order."""

    def __init__(self, perception: Perception, graph: GraphSpec):
        super().__init__()
        self.perception, self.graph = perception, graph

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = stage_outputs(self.perception, self.graph.name, dict(zip(self.graph.input_names, args, strict=True)))
        return tuple(out[name] for name in self.graph.output_names)


def eager(perception: Perception, graph: GraphSpec, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    with torch.no_grad():
        out = StageGraph(perception, graph).eval()(*(torch.from_numpy(feeds[n]) for n in graph.input_names))
    return {n: t.numpy() for n, t in zip(graph.output_names, out, strict=True)}


# ---------------------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------------------


def export_perception(model_or_perception: nn.Module, cfg: ModelConfig | None, out_dir: str | Path, opset: int = 17,
                      real_inputs: Any = None, seed: int = 0, threads: int = 2,
                      external_data_bytes: int = EXTERNAL_DATA_BYTES) -> dict[str, Any]:
    """Write the four graphs and io_spec.json to `out_dir`, then check parity; returns the report.

    model_or_perception: an EmotionLLM (its `.perception` is used) or a Perception.
    cfg: the model config (None: the perception's own).
    real_inputs: optional real clips for an end-to-end check: a FeatureSet or a mapping with
        image (N, S, S, 3) uint8, frames (N, T, s, s, 3) uint8, mel (N, n_mels, F) and optionally
        present (N, 3); the first MAX_REAL are used.
    external_data_bytes: a graph with more weight bytes than this stores them in <file>.data (see
        EXTERNAL_DATA_BYTES; tests force it with a small value).
    Returns {"files": {graph: {"file", "sha256"[, "data", "data_sha256"]}}, "io_spec", "opset", "versions",
    "parity"}.
    """
    perception: Perception = getattr(model_or_perception, "perception", model_or_perception)
    spec = build_io_spec(cfg or perception.cfg, llm_width=_llm_width(perception))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    was_training = perception.training
    perception.eval()
    try:
        for graph in spec.graphs.values():
            export_graph(perception, graph, out / graph.filename, opset, seed, external_data_bytes)
        atomic_write(out / SPEC_FILE, spec.save)
        parity = check_parity(perception, spec, out, real_inputs, seed, threads)
    finally:
        perception.train(was_training)
    files = {name: _file_record(out / g.filename) for name, g in spec.graphs.items()}
    return {"files": files, "io_spec": SPEC_FILE, "opset": opset, "versions": versions(), "parity": parity}


def export_graph(perception: Perception, graph: GraphSpec, path: Path, opset: int = 17, seed: int = 0,
                 external_data_bytes: int = EXTERNAL_DATA_BYTES) -> None:
    """Trace one stage to `path` (via a temporary directory), with its weights in `path`.data when they exceed
    `external_data_bytes`, and run the ONNX checker on it."""
    feeds = dummy_inputs(graph, TRACE_BATCH, seed)
    _check_eager_shapes(graph, eager(perception, graph, feeds))
    args = tuple(torch.from_numpy(feeds[n]) for n in graph.input_names)
    data = external_data_path(path)
    with tempfile.TemporaryDirectory(prefix=f".{path.name}-", dir=path.parent) as work:
        traced, tmp = Path(work) / "traced" / path.name, Path(work) / path.name
        traced.parent.mkdir()
        try:
            import onnx

            with warnings.catch_warnings(), torch.no_grad():
                # the legacy exporter is deprecated but still the one without onnxscript; the tracer warns
                # about the audio encoder's token-count check, whose sizes are static by design (io_spec)
                warnings.simplefilter("ignore", DeprecationWarning)
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                # .eval() on the wrapper: the exporter restores the wrapper's mode, recursively, afterwards;
                # past 2 GiB it writes the weights as files of their own into traced/, which onnx.load reads back
                torch.onnx.export(StageGraph(perception, graph).eval(), args, str(traced), dynamo=False,
                                  opset_version=opset, input_names=graph.input_names,
                                  output_names=graph.output_names, dynamic_axes=dynamic_axes(graph),
                                  do_constant_folding=True)
            external = _save(onnx.load(str(traced)), tmp, external_data_bytes)
            onnx.checker.check_model(str(tmp), full_check=True)  # by path: external data is checked too
        except Exception as e:
            raise ExportError(f"{graph.name}: ONNX export to {path} failed: {e}") from e
        if external:
            (Path(work) / data.name).replace(data)
        else:
            data.unlink(missing_ok=True)  # from an earlier export of a larger model
        tmp.replace(path)
        if external:  # onnx creates the weights file owner-only; it gets the graph's permissions
            shutil.copymode(path, data)


def external_data_path(path: Path) -> Path:
    """Where the weights of graph `path` go in the external-data format (one file, next to the graph)."""
    return path.with_name(path.name + DATA_SUFFIX)


def _save(model: Any, path: Path, external_data_bytes: int) -> bool:
    """Save `model` to `path`, its initializers in one external file when they exceed `external_data_bytes`."""
    import onnx

    weights = sum(t.ByteSize() for t in model.graph.initializer)
    external = weights > external_data_bytes
    onnx.save_model(model, str(path), save_as_external_data=external, all_tensors_to_one_file=True,
                    location=external_data_path(path).name, size_threshold=1024)
    return external


def _file_record(path: Path) -> dict[str, str]:
    """A graph's file and sha256, and its external-data file and that file's sha256 when it has one."""
    rec = {"file": path.name, "sha256": sha256_file(path)}
    data = external_data_path(path)
    if data.is_file():
        rec.update(data=data.name, data_sha256=sha256_file(data))
    return rec


def _check_eager_shapes(graph: GraphSpec, outputs: dict[str, np.ndarray]) -> None:
    for t in graph.outputs:
        want, got = t.concrete(TRACE_BATCH), outputs[t.name].shape
        if tuple(got) != want:
            raise ExportError(f"{graph.name}: eager output {t.name!r} has shape {tuple(got)}, io_spec says {want} "
                              "(io_spec.sizes and the model disagree)")


def _llm_width(perception: Perception) -> int:
    """The adapters' output width (the LLM's embedding width, which a config with llm.path does not state)."""
    adapter = next(iter(perception.adapters.values()))
    return adapter.table.shape[-1] if isinstance(adapter, AttributeTokens) else adapter.mlp[-1].out_features


# ---------------------------------------------------------------------------------------------
# parity
# ---------------------------------------------------------------------------------------------


def check_parity(perception: Perception, spec: IOSpec, onnx_dir: Path, real_inputs: Any = None, seed: int = 0,
                 threads: int = 2) -> dict[str, Any]:
    """ONNX Runtime (CPU) vs eager PyTorch: per graph at PARITY_BATCHES, and end to end from uint8 arrays."""
    rt = OrtPerception(onnx_dir, spec, providers=[CPU], threads=threads)
    graphs: dict[str, Any] = {}
    for name, graph in spec.graphs.items():
        for b in PARITY_BATCHES:
            feeds = dummy_inputs(graph, b, seed + b)
            got, want = rt.run_graph(name, feeds), eager(perception, graph, feeds)
            graphs.setdefault(name, {})[f"batch_{b}"] = compare(got, want)
    report: dict[str, Any] = {"metric": METRIC, "providers": rt.providers, "graphs": graphs,
                              "pipeline_random": compare_pipeline(perception, rt, _random_clips(spec, seed))}
    if real_inputs is not None:
        report["pipeline_real"] = compare_pipeline(perception, rt, _real_clips(real_inputs))
    report["worst"] = _worst(report)
    return report


def compare(got: Mapping[str, np.ndarray], want: Mapping[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Per output in `want`: max_abs_err, max_rel_err (see the module docstring), label_agreement for logits."""
    report = {}
    for name, ref in want.items():
        diff = np.abs(got[name].astype(np.float64) - ref.astype(np.float64))
        scale = float(np.abs(ref).max()) if ref.size else 0.0
        err = float(diff.max()) if diff.size else 0.0
        report[name] = {"max_abs_err": err, "max_rel_err": err / (scale + 1e-12)}
        if name == "logits":
            report[name]["label_agreement"] = float(np.mean(got[name].argmax(-1) == ref.argmax(-1)))
    return report


def compare_pipeline(perception: Perception, rt: OrtPerception, clips: dict[str, np.ndarray]) -> dict[str, Any]:
    """`rt.run` on uint8 clips vs eager Perception on the same clips through the training path's `to_batch`."""
    from emo_edge.model.inputs import to_batch

    present = clips["present"]
    if not np.array_equal(present[:, 0], present[:, 1]):
        raise ValueError("parity clips: to_batch ties image to video, so present[:, 0] must equal present[:, 1]")
    n = len(present)
    batch = to_batch(clips["frames"], clips["image"], clips["mel"], present[:, 1], present[:, 2],
                     tasks=["emotion"] * n, subtitles=[None] * n)
    with torch.no_grad():
        ref = perception(batch.image, batch.frames, batch.mel, batch.present)
    got = rt.run(**clips)
    # the encoder probes are training-only, not exported; the attribute head is, as probabilities
    want = {k: v.numpy() for k, v in ref.items() if k not in ("aux", "attributes", "aux_attr")}
    if "attributes" in ref:
        want["attributes"] = torch.sigmoid(ref["attributes"]).numpy()
    return {"n": n, "outputs": compare(got, want)}


def _random_clips(spec: IOSpec, seed: int, n: int = 4) -> dict[str, np.ndarray]:
    clips = dummy_inputs(spec.runtime_inputs, n, seed)
    rng = np.random.default_rng(seed)
    video = rng.integers(0, 2, n)
    audio = np.where(video == 0, 1, rng.integers(0, 2, n))  # at least one modality per clip
    clips["present"] = np.stack([video, video, audio], axis=1).astype(np.float32)  # to_batch's layout
    return clips


def _real_clips(real: Any) -> dict[str, np.ndarray]:
    get = real.get if isinstance(real, Mapping) else lambda k, d=None: getattr(real, k, d)
    image, frames, mel = (np.asarray(get(k))[:MAX_REAL] for k in ("image", "frames", "mel"))
    present = get("present", None)
    present = np.ones((len(image), 3), np.float32) if present is None else np.asarray(present, np.float32)[:MAX_REAL]
    return {"image": image, "frames": frames, "mel": mel.astype(np.float32), "present": present}


def _worst(report: dict[str, Any]) -> dict[str, float]:
    """The largest max_rel_err and smallest label_agreement anywhere in the report."""
    leaves: list[dict[str, float]] = []
    for per_batch in report["graphs"].values():
        for outputs in per_batch.values():
            leaves += outputs.values()
    for key in ("pipeline_random", "pipeline_real"):
        if key in report:
            leaves += report[key]["outputs"].values()
    return {"max_rel_err": max(x["max_rel_err"] for x in leaves),
            "max_abs_err": max(x["max_abs_err"] for x in leaves),
            "label_agreement": min(x["label_agreement"] for x in leaves if "label_agreement" in x)}


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def versions() -> dict[str, str]:
    import onnx
    import onnxruntime

    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
            "numpy": np.__version__}



