"""Perception on ONNX Runtime: numpy in, numpy out, never torch.

`OrtPerception` loads the four graphs written by `emo_edge.export.onnx_export` (named by
`emo_edge.runtime.io_spec`), checks every array against the spec before it reaches a session, and
chains image/video/audio encoders -> fusion by tensor name. `preprocess` is the numpy twin of
`emo_edge.model.inputs.to_batch`: uint8 NHWC RGB -> float32 NCHW in [0, 1], and a modality
flagged absent is zeroed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emo_edge.runtime.io_spec import SPEC_FILE, GraphSpec, IOSpec, as_io_spec, validate

try:  # optional: the core package installs without onnxruntime
    import onnxruntime as ort
except ImportError as e:  # pragma: no cover - depends on the environment
    ort, _ORT_IMPORT_ERROR = None, e

CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"


def _require_ort() -> Any:
    if ort is None:
        raise ImportError("onnxruntime is not installed: pip install 'emo-edge[export]' "
                          "(or onnxruntime-gpu on a CUDA machine)") from _ORT_IMPORT_ERROR
    return ort


Provider = str | tuple[str, dict[str, Any]]  # a provider name, or (name, its options) as ONNX Runtime takes them


def choose_providers(providers: Sequence[Provider] | None = None) -> list[Provider]:
    """Requested providers checked against the installed ones; default CUDA (when built in), then CPU.

    ONNX Runtime falls back to the next provider when one fails to initialise (a CUDA build without
    a usable GPU), so `OrtPerception.providers` reports what the sessions really use.
    """
    available = _require_ort().get_available_providers()
    if providers is None:
        return [CUDA, CPU] if CUDA in available else [CPU]
    names = [p if isinstance(p, str) else p[0] for p in providers]
    unknown = [p for p in names if p not in available]
    if unknown or not providers:
        raise ValueError(f"execution provider(s) {unknown or names} not available; installed: {available}")
    return list(providers)


def preprocess(image: np.ndarray, frames: np.ndarray, mel: np.ndarray, present: np.ndarray) -> dict[str, np.ndarray]:
    """Runtime arrays -> encoder inputs, as `to_batch` does: image (B, S, S, 3) uint8 -> (B, 3, S, S) in [0, 1],
    frames (B, T, s, s, 3) uint8 -> (B, T, 3, s, s) in [0, 1]; each modality times its `present` column."""
    p = present.astype(np.float32)  # (B, 3) over (image, video, audio)
    img = image.transpose(0, 3, 1, 2).astype(np.float32) / 255.0 * p[:, 0, None, None, None]
    frm = frames.transpose(0, 1, 4, 2, 3).astype(np.float32) / 255.0 * p[:, 1, None, None, None, None]
    return {"image": np.ascontiguousarray(img), "frames": np.ascontiguousarray(frm),
            "mel": mel.astype(np.float32) * p[:, 2, None, None], "present": p}


def _as_float32(x: Any, kinds: str) -> Any:
    """float32 copy of an array whose dtype kind is in `kinds` (b bool, i/u int, f float); others pass to validate."""
    return x.astype(np.float32) if isinstance(x, np.ndarray) and x.dtype.kind in kinds else x


def check_runtime_inputs(spec: IOSpec, image: Any, frames: Any, mel: Any, present: Any, where: str) -> dict[str, Any]:
    """Runtime inputs after the allowed casts (mel: any float; present: bool, int or float), validated against
    the spec's runtime_inputs (ValueError naming the tensor, what was expected and what was got)."""
    arrays = {"image": image, "frames": frames, "mel": _as_float32(mel, "f"), "present": _as_float32(present, "biuf")}
    validate(spec.runtime_inputs, arrays, where=where)
    return arrays


class OrtPerception:
    """The perception graphs on ONNX Runtime.

    onnx_dir: the exporter's output (the four .onnx files and io_spec.json).
    spec: an IOSpec, a model-config dict (or ModelConfig), an io-spec dict, or None to read
        `onnx_dir/io_spec.json`.
    providers: ONNX Runtime execution providers in order of preference (names, or (name, options) pairs);
        None picks CUDA when it is built in, else CPU.
    graph_providers: per graph, its own providers (the TensorRT EP's precision flags and engine cache are
        per graph); needs merged=False.
    threads: intra-op threads per session.
    merged: run the four graphs as one merged session (`run`; the default, faster); False keeps one
        session per graph. `run_graph` always uses the graph's own session, opened on first use.
    """

    _feed_names = ("image", "frames", "mel", "present")  # the merged model's inputs, as `preprocess` names them

    def __init__(self, onnx_dir: str | Path, spec: Any = None, providers: Sequence[Provider] | None = None,
                 threads: int = 2, merged: bool = True, graph_providers: dict[str, list[Provider]] | None = None):
        self.dir = Path(onnx_dir)
        self.spec: IOSpec = as_io_spec(self.dir / SPEC_FILE if spec is None else spec)
        self.threads, self._requested = threads, choose_providers(providers)
        if graph_providers is not None and merged:
            raise ValueError("graph_providers sets one session per graph: pass merged=False")
        self._graph_requested = {g: choose_providers(p) for g, p in (graph_providers or {}).items()}
        self._graph_sessions: dict[str, Any] = {}
        # `run` uses one session over the four graphs merged in memory (`emo_edge.runtime.merge`), whose
        # one thread pool may spin. Four sessions in a row must not spin: a finished session's spinning
        # workers starve the next one's (run() took 18.9 ms against 4.1 ms for its graphs one by one).
        self.merged = merged
        if merged:
            self._session = self._open(self.merged_model().SerializeToString(), self.dir / "<merged>", spin=True)
            inputs = tuple(t for g in self.spec.graphs.values() for t in g.inputs if t.name in self._feed_names)
            outputs = tuple(t for g in self.spec.graphs.values() for t in g.outputs)
            _check_session(self._session, GraphSpec("perception", inputs, outputs), self.dir)
            self._outputs = [t.name for t in outputs]
            self.providers: list[str] = self._session.get_providers()  # what is really in use
        else:
            for name in self.spec.graphs:
                self._graph_session(name)
            self.providers = self._graph_session("fusion").get_providers()

    def merged_model(self) -> Any:
        """The four graphs of `onnx_dir` as one onnx.ModelProto (`emo_edge.runtime.merge`)."""
        from emo_edge.runtime.merge import merge_perception

        models = {name: self._proto(graph) for name, graph in self.spec.graphs.items()}
        try:
            return merge_perception(models, self.spec)
        except ValueError as e:
            raise ValueError(f"{self.dir}: {e} (exported with another model config?)") from e

    def profiled_session(self, profile_prefix: str) -> Any:
        """A second session of the merged model, as `run`'s, with ONNX Runtime's profiler writing to
        `profile_prefix`*.json (profiling slows a session, so `run`'s own is left alone)."""
        opts = self._options(spin=True)
        opts.enable_profiling, opts.profile_file_prefix = True, profile_prefix
        return ort.InferenceSession(self.merged_model().SerializeToString(), sess_options=opts,
                                    providers=self._requested)

    def _options(self, spin: bool) -> Any:
        opts = _require_ort().SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = self.threads, 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        # ... and stop spinning when run() returns: workers still spinning after perception took the cores
        # from llama.cpp's prefill (window -> perception -> answer: 65.7 ms with them, 36.8 ms without)
        opts.add_session_config_entry("session.force_spinning_stop", "1")
        return opts

    def _file(self, graph: GraphSpec) -> Path:
        path = self.dir / graph.filename
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing (export with `emo_edge.export.onnx_export.export_perception`)")
        return path

    def _proto(self, graph: GraphSpec) -> Any:
        import onnx

        path = self._file(graph)
        try:
            return onnx.load(str(path))
        except Exception as e:
            raise RuntimeError(f"{path}: not a readable ONNX model: {e}") from e

    def _open(self, model: str | bytes, where: Path, spin: bool, providers: list[Provider] | None = None) -> Any:
        try:
            return ort.InferenceSession(model, sess_options=self._options(spin),
                                        providers=providers or self._requested)
        except Exception as e:
            raise RuntimeError(f"onnxruntime could not load {where}: {e}") from e

    def _graph_session(self, name: str) -> Any:
        """One graph's own session (opened on first use): for stage-by-stage runs and timings."""
        if name not in self._graph_sessions:
            graph = self.spec.graphs[name]
            path = self._file(graph)
            sess = self._open(str(path), path, spin=False, providers=self._graph_requested.get(name))
            _check_session(sess, graph, path)
            self._graph_sessions[name] = sess
        return self._graph_sessions[name]

    # per-stage (float inputs, as the graphs take them)
    def run_graph(self, name: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if name not in self.spec.graphs:
            raise ValueError(f"unknown graph {name!r}; graphs: {list(self.spec.graphs)}")
        graph = self.spec.graphs[name]
        validate(graph.inputs, feeds, where=name)
        return dict(zip(graph.output_names, self._graph_session(name).run(graph.output_names, feeds), strict=True))

    def encode_image(self, image: np.ndarray) -> np.ndarray:  # (B, 3, S, S) -> (B, G*G, Wi)
        return self.run_graph("image_encoder", {"image": image})["image_feats"]

    def encode_video(self, frames: np.ndarray) -> np.ndarray:  # (B, T, 3, s, s) -> (B, T*k, Wv)
        return self.run_graph("video_encoder", {"frames": frames})["video_feats"]

    def encode_audio(self, mel: np.ndarray) -> np.ndarray:  # (B, n_mels, F) -> (B, Na, Wa)
        return self.run_graph("audio_encoder", {"mel": mel})["audio_feats"]

    def fuse(self, image_feats: np.ndarray, video_feats: np.ndarray, audio_feats: np.ndarray,
             present: np.ndarray) -> dict[str, np.ndarray]:
        """-> fused, logits, va, tokens, token_mask."""
        return self.run_graph("fusion", {"image_feats": image_feats, "video_feats": video_feats,
                                         "audio_feats": audio_feats, "present": present})

    # the whole perception from runtime arrays
    def check_inputs(self, image: Any, frames: Any, mel: Any, present: Any) -> dict[str, Any]:
        """Runtime inputs after the allowed casts (mel: any float; present: bool, int or float), validated."""
        return check_runtime_inputs(self.spec, image, frames, mel, present, where="OrtPerception.run")

    def run(self, image: np.ndarray, frames: np.ndarray, mel: np.ndarray, present: np.ndarray) -> dict[str, np.ndarray]:
        """image (B, S, S, 3) uint8, frames (B, T, s, s, 3) uint8, mel (B, n_mels, F) float, present (B, 3)
        over (image, video, audio) -> fused, logits, va, tokens, token_mask and the three *_feats."""
        x = preprocess(**self.check_inputs(image, frames, mel, present))
        if not self.merged:
            feats = {"image_feats": self.encode_image(x["image"]), "video_feats": self.encode_video(x["frames"]),
                     "audio_feats": self.encode_audio(x["mel"])}
            return {**self.fuse(**feats, present=x["present"]), **feats}
        return dict(zip(self._outputs, self._session.run(self._outputs, x), strict=True))


def _check_session(sess: Any, graph: GraphSpec, path: Path) -> None:
    """The file's declared inputs/outputs must be the spec's (a file from another config fails here)."""
    for kind, declared, expected in (("inputs", sess.get_inputs(), graph.inputs),
                                     ("outputs", sess.get_outputs(), graph.outputs)):
        got = [(t.name, tuple("?" if d is None else d for d in t.shape)) for t in declared]
        want = [(t.name, tuple(t.shape)) for t in expected]
        if got != want:
            raise ValueError(f"{path}: {kind} {got} do not match the io spec {want} "
                             "(exported with another model config?)")
