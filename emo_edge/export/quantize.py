"""INT8 perception graphs by explicit quantization (QDQ) from real calibration clips; no torch.

    fp32 dir (onnx_export) ─► calibration clips (manifest) ─► runtime preprocessing (numpy)
        ├─► encoders: calibrated on the preprocessed clips
        └─► fusion:   calibrated on the fp32 encoders' outputs for the same clips
    ─► quant_pre_process ─► quantize_static(QDQ) ─► onnx.checker ─► int8 dir (same io_spec names)

Why QDQ: TensorRT's implicit INT8 calibrators are deprecated since TensorRT 10.1; a QDQ graph
carries its scales, so the same file runs on ONNX Runtime's CPU provider and builds a TensorRT
INT8 engine. Two layouts (`QuantSettings.layout`, chosen by the export profile):

    tensorrt  (the settings below) for TensorRT and ONNX Runtime's TensorRT provider. On ONNX Runtime's
              CPU provider it is slower than fp32: with no Q/DQ after a weighted op, ONNX Runtime cannot
              fuse the op into an integer kernel, so it runs the float op plus the Q/DQ pairs
              (edge-small, 2-core AVX-512 VNNI CPU: 6.7 ms against 4.0 ms fp32 for the merged perception).
    cpu       for ONNX Runtime's CPU provider (`cpu-x86`): Conv only, uint8 activations (x86's U8S8
              kernels), output Q/DQ allowed so ONNX Runtime fuses DQ->Conv->Q into QLinearConv. Same
              machine: 3.8 ms against 4.0 ms fp32 (1.06x). Quantizing the weight MatMuls too was slower
              (4.3 ms): at batch 1 their tensors are small and the Q/DQ around them cost more than they save.
    transformer  for ONNX Runtime's CPU provider on transformer encoders (SigLIP/Whisper-sized, where the
              weight MatMuls are most of the time): MatMul/Gemm with a constant weight, int8 per-channel
              weights, uint8 activations, no Q/DQ on the MatMul's output, so ONNX Runtime fuses each into
              MatMulIntegerToFloat (integer VNNI kernel, float output); measured in docs/benchmarks.md.

Settings of the tensorrt layout (all recorded in `calibration.json`):

    activations  int8, symmetric, per tensor: the only INT8 form TensorRT takes (zero point 0), and
                 ONNX Runtime's default S8S8 on CPUs. `uint8` (asymmetric) is an x86-CPU-only option.
    weights      int8, symmetric, per output channel (Conv, MatMul with a constant B, Gemm)
    ops          Conv, MatMul, Gemm only; with MatMulConstBOnly the activation-by-activation MatMuls
                 of attention, LayerNorm, Softmax and GELU stay in float (their ranges are the fragile ones)
    layout       TensorRT's Q/DQ rules (`TRT_FRIENDLY`): float biases, no Q/DQ on a weighted op's
                 output, one Q/DQ pair per consumer
    method       MinMax over the calibration clips (few clips: no histogram to fill)
    pre-process  onnxruntime's quant_pre_process first; it also makes the declared output shapes concrete

The output directory holds the four graphs (a graph left out of `graphs` is copied as fp32),
io_spec.json, calibration.json (clips used, settings, per-graph activation ranges read back from
the QDQ scales) and calibration/<graph>.json, ONNX Runtime's range cache where it supports one.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import shutil
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emo_edge import resources
from emo_edge.config import FrontendConfig, load_yaml
from emo_edge.data.features import ClipError, FeatureSet, load_clip
from emo_edge.data.schema import find_split, read_jsonl
from emo_edge.labels import LABELS
from emo_edge.runtime.io_spec import DATA_SUFFIX, GRAPHS, SPEC_FILE, IOSpec, as_io_spec
from emo_edge.runtime.perception import CPU, OrtPerception, preprocess

SUMMARY_FILE = "calibration.json"
CACHE_DIR = "calibration"  # ONNX Runtime's per-graph range caches, under the output directory
QUANT_OPS: tuple[str, ...] = ("Conv", "MatMul", "Gemm")  # the tensorrt layout
CPU_QUANT_OPS: tuple[str, ...] = ("Conv",)  # the cpu layout
TRANSFORMER_QUANT_OPS: tuple[str, ...] = ("MatMul", "Gemm")  # the transformer layout
LAYOUTS: tuple[str, ...] = ("tensorrt", "cpu", "transformer")
# the transformer layout: weight MatMuls with per-channel int8 weights and uint8 activations (x86's U8S8 VNNI
# kernels), no Q/DQ after the MatMul: ONNX Runtime's CPU provider fuses DQ(x), DQ(w) -> MatMul into
# MatMulIntegerToFloat, which dequantizes inside the kernel, so the float consumers (LayerNorm, GELU, residual
# Add) need no Q/DQ pair of their own
TRANSFORMER_CPU: dict[str, Any] = {
    "WeightSymmetric": True,
    "MatMulConstBOnly": True,
    "OpTypesToExcludeOutputQuantization": list(TRANSFORMER_QUANT_OPS),
}
METHODS: tuple[str, ...] = ("minmax", "entropy", "percentile")
ACTIVATIONS: tuple[str, ...] = ("int8", "uint8")
PREPROCESSING: tuple[str, ...] = ("model",)  # the exported model's frontend through the runtime's numpy path
# onnxruntime.quantization extra options, chosen so one QDQ file also suits TensorRT's explicit quantization
TRT_FRIENDLY: dict[str, Any] = {
    "WeightSymmetric": True,  # TensorRT takes zero points of 0 only
    "MatMulConstBOnly": True,  # weight MatMuls only; attention's activation-by-activation MatMuls stay float
    "OpTypesToExcludeOutputQuantization": list(QUANT_OPS),  # no Q/DQ after a weighted op: its consumers
    # (LayerNorm, Softmax, residual Add) want the float output; TensorRT fuses Q/DQ around the op itself
    "DedicatedQDQPair": True,  # TensorRT cannot share one Q/DQ pair between consumers
    "QuantizeBias": False,  # biases stay float: TensorRT dequantizes INT8 (not INT32) and folds float biases
}


class QuantizeError(RuntimeError):
    """A quantization or check step failed; the cause is chained."""


# ---------------------------------------------------------------------------------------------
# the calibration set
# ---------------------------------------------------------------------------------------------


@dataclass
class CalibrationManifest:
    """Which clips calibrate the INT8 graphs, and how they are prepared (see calibration/README.md)."""

    data: str  # a directory holding <split>.jsonl, or a JSONL file; relative to the manifest's directory
    name: str = ""
    split: str = "val"  # never the test split: calibration must not see what accuracy is reported on
    n_clips: int = 64  # clips drawn without replacement (fewer if the split is smaller)
    seed: int = 0  # seeds the draw and the presence patterns
    absent_share: float = 0.25  # share of clips with one modality flagged absent, as the runtime sees dropouts
    preprocessing: str = "model"

    def __post_init__(self) -> None:
        if self.n_clips < 1:
            raise ValueError(f"calibration manifest: n_clips must be >= 1, got {self.n_clips}")
        if not 0.0 <= self.absent_share <= 1.0:
            raise ValueError(f"calibration manifest: absent_share must be in [0, 1], got {self.absent_share}")
        if self.preprocessing not in PREPROCESSING:
            raise ValueError(f"calibration manifest: preprocessing {self.preprocessing!r} is not valid; "
                             f"options: {', '.join(PREPROCESSING)}")


def load_manifest(name_or_path: str | Path) -> CalibrationManifest:
    """A calibration manifest by name (`synthemo-val`, found through `emo_edge.resources`) or path.

    A relative `data` path is taken from the manifest's directory (see `resources.relative_base`)."""
    path = resources.find(resources.CALIBRATIONS, name_or_path)
    manifest = load_yaml(CalibrationManifest, path, name=path.stem)
    manifest.data = str((resources.relative_base(path, resources.CALIBRATIONS) / manifest.data).resolve())
    return manifest


def load_calibration_set(manifest: CalibrationManifest, fe: FrontendConfig, n: int | None = None) -> FeatureSet:
    """The manifest's clips (a seeded draw), decoded with `load_clip` exactly as the runtime would."""
    jsonl = find_split(manifest.data, manifest.split)
    records = read_jsonl(jsonl)
    k = min(n or manifest.n_clips, len(records))
    # a prefix of one seeded permutation: a smaller n draws a subset of a larger n's clips
    pick = np.sort(np.random.default_rng(manifest.seed).permutation(len(records))[:k])
    kept, clips, bad = [], [], []
    for i in pick:
        try:
            clips.append(load_clip(records[i], jsonl.parent, fe))
            kept.append(records[i])
        except ClipError as e:
            bad.append(str(e))
    if not clips:
        raise ClipError(f"{jsonl}: none of the {k} drawn calibration clips is usable ({bad[0] if bad else 'empty'})")
    labels = np.array([LABELS.index(r.label) if r.label in LABELS else -1 for r in kept], dtype=np.int64)
    va = np.array([[r.valence or 0.0, r.arousal or 0.0] for r in kept], dtype=np.float32)
    return FeatureSet(kept, np.stack([c.frames for c in clips]), np.stack([c.image for c in clips]),
                      np.stack([c.mel for c in clips]).astype(np.float16), labels, va, bad)


def presence(n: int, absent_share: float, seed: int) -> np.ndarray:
    """(n, 3) flags over (image, video, audio): a share of clips lose either the camera or the microphone."""
    rng = np.random.default_rng([seed, 1])
    p = np.ones((n, 3), np.float32)
    drop, camera = rng.random(n) < absent_share, rng.random(n) < 0.5
    p[drop & camera, :2] = 0  # image and video go together, as in to_batch
    p[drop & ~camera, 2] = 0
    return p


def frontend_for(spec: IOSpec, frontend: Any = None) -> FrontendConfig:
    """The frontend that produced `spec`'s runtime inputs: `frontend` (a FrontendConfig or a ModelConfig),
    or one derived from the spec's sizes with the default audio constants; checked against the spec."""
    shapes = {t.name: t.shape for t in spec.runtime_inputs}
    size, n_frames, frame = shapes["image"][1], shapes["frames"][1], shapes["frames"][2]
    n_mels, n_mel_frames = shapes["mel"][1], shapes["mel"][2]
    fe = getattr(frontend, "frontend", frontend)
    if fe is None:
        d = FrontendConfig()
        fe = FrontendConfig(n_mels=n_mels, n_frames=n_frames, frame_size=frame, image_size=size,
                            window_seconds=(n_mel_frames - 1) * d.hop_length / d.sample_rate)
    got = (fe.image_size, fe.n_frames, fe.frame_size, fe.n_mels, fe.n_mel_frames)
    want = (size, n_frames, frame, n_mels, n_mel_frames)
    if got != want:
        raise ValueError(f"frontend sizes (image, n_frames, frame, n_mels, mel frames) {got} do not match the "
                         f"exported graphs' {want}; pass the checkpoint's frontend")
    return fe


def runtime_arrays(source: Any) -> dict[str, np.ndarray]:
    """image, frames, mel, present (ones when absent) and labels (-1 when absent) from a FeatureSet or mapping."""
    get = source.get if isinstance(source, Mapping) else lambda k, d=None: getattr(source, k, d)
    image, frames, mel = (np.asarray(get(k)) for k in ("image", "frames", "mel"))
    present, labels = get("present", None), get("labels", None)
    n = len(image)
    return {"image": image, "frames": frames, "mel": mel.astype(np.float32),
            "present": np.ones((n, 3), np.float32) if present is None else np.asarray(present, np.float32),
            "labels": np.full(n, -1, np.int64) if labels is None else np.asarray(labels, np.int64)}


# ---------------------------------------------------------------------------------------------
# calibration feeds
# ---------------------------------------------------------------------------------------------


def graph_feeds(fp32: OrtPerception, clips: Mapping[str, np.ndarray], batch_size: int) -> dict[str, list[dict]]:
    """Per graph, its real input batches: preprocessed clips for the encoders, fp32 features for the fusion."""
    feeds: dict[str, list[dict]] = {g: [] for g in GRAPHS}
    for s in range(0, len(clips["image"]), batch_size):
        part = {k: clips[k][s:s + batch_size] for k in ("image", "frames", "mel", "present")}
        x = preprocess(**fp32.check_inputs(**part))
        feats = {"image_feats": fp32.encode_image(x["image"]), "video_feats": fp32.encode_video(x["frames"]),
                 "audio_feats": fp32.encode_audio(x["mel"])}
        feeds["image_encoder"].append({"image": x["image"]})
        feeds["video_encoder"].append({"frames": x["frames"]})
        feeds["audio_encoder"].append({"mel": x["mel"]})
        feeds["fusion"].append({**feats, "present": x["present"]})
    return feeds


def _reader(feeds: list[dict[str, np.ndarray]]) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class FeedReader(CalibrationDataReader):
        """Hands ONNX Runtime's calibrator one input batch (a name -> array dict) at a time."""

        def __init__(self) -> None:
            self.i = 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            self.i += 1
            return feeds[self.i - 1] if self.i <= len(feeds) else None

        def rewind(self) -> None:
            self.i = 0

        def __len__(self) -> int:
            return len(feeds)

    return FeedReader()


# ---------------------------------------------------------------------------------------------
# quantization
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuantSettings:
    # one of LAYOUTS: tensorrt (TensorRT's Q/DQ rules) | cpu (ONNX Runtime's CPU kernels, Conv only) | transformer
    # (ONNX Runtime's CPU kernels, the weight MatMuls/Gemms of transformer encoders)
    layout: str = "tensorrt"
    activations: str | None = None  # int8: symmetric, TensorRT and CPU; uint8: asymmetric, x86 CPU only;
    # None: the layout's (tensorrt int8, cpu and transformer uint8)
    per_channel: bool = True  # weights per output channel
    method: str = "minmax"  # one of METHODS
    pre_process: bool = True  # onnxruntime's quant_pre_process (shape inference + basic graph optimisation)
    batch_size: int = 8  # clips per calibration batch

    def __post_init__(self) -> None:
        if self.activations is None and self.layout in LAYOUTS:
            object.__setattr__(self, "activations", "int8" if self.layout == "tensorrt" else "uint8")
        if self.layout == "transformer" and not self.per_channel:
            raise ValueError("QuantSettings.per_channel: the transformer layout quantizes weights per channel")
        for name, value, options in (("layout", self.layout, LAYOUTS), ("activations", self.activations, ACTIVATIONS),
                                     ("method", self.method, METHODS)):
            if value not in options:
                raise ValueError(f"QuantSettings.{name}: {value!r} is not valid; options: {', '.join(options)}")
        if self.batch_size < 1:
            raise ValueError(f"QuantSettings.batch_size must be >= 1, got {self.batch_size}")


def _quantize_kwargs(settings: QuantSettings) -> dict[str, Any]:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType

    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[settings.method]
    act = QuantType.QInt8 if settings.activations == "int8" else QuantType.QUInt8
    symmetric = {"ActivationSymmetric": settings.activations == "int8"}
    ops, extra = {"tensorrt": (QUANT_OPS, {**TRT_FRIENDLY, **symmetric}),
                  "cpu": (CPU_QUANT_OPS, {"WeightSymmetric": True, **symmetric}),
                  "transformer": (TRANSFORMER_QUANT_OPS, {**TRANSFORMER_CPU, **symmetric})}[settings.layout]
    return {"quant_format": QuantFormat.QDQ, "activation_type": act, "weight_type": QuantType.QInt8,
            "per_channel": settings.per_channel, "op_types_to_quantize": list(ops), "calibrate_method": method,
            "extra_options": extra}


def quantize_graph(src: Path, dst: Path, feeds: list[dict[str, np.ndarray]], settings: QuantSettings,
                   cache: Path | None = None) -> dict[str, Any]:
    """One fp32 graph -> one checked QDQ graph at `dst`; returns how it was made."""
    import onnx
    from onnxruntime.quantization import quantize_static

    kwargs = _quantize_kwargs(settings)
    cache_ok = cache is not None and "calibration_cache_path" in inspect.signature(quantize_static).parameters
    if cache_ok:
        cache.unlink(missing_ok=True)  # a stale cache would replace calibration: always recompute
        kwargs["calibration_cache_path"] = str(cache)
    tmp = dst.with_name(dst.stem + ".tmp.onnx")
    with tempfile.TemporaryDirectory(prefix="emo-quant-") as work:
        model_in, pre = _pre_process(src, Path(work), settings.pre_process)
        if settings.layout == "transformer":
            kwargs["nodes_to_exclude"] = activation_matmuls(model_in)
        try:
            quantize_static(str(model_in), str(tmp), _reader(feeds), **kwargs)
            onnx.checker.check_model(str(tmp), full_check=True)
        except Exception as e:
            tmp.unlink(missing_ok=True)
            raise QuantizeError(f"{src.name}: INT8 quantization failed: {e}") from e
    tmp.replace(dst)
    if cache_ok and cache.is_file():  # ONNX Runtime writes its range cache owner-only; it ships in the bundle
        shutil.copymode(dst, cache)
    return {"pre_process": pre, "batches": len(feeds), "range_cache": f"{CACHE_DIR}/{cache.name}" if cache_ok else None}


def activation_matmuls(path: Path) -> list[str]:
    """Names of the MatMuls whose B is not a weight (attention's Q.K^T and P.V). ONNX Runtime's QDQ quantizer
    does not apply MatMulConstBOnly (only its QOperator form does), so they are excluded by name."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    weights = {t.name for t in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and n.input[1] not in weights]


def _pre_process(src: Path, work: Path, enabled: bool) -> tuple[Path, str]:
    """quant_pre_process when asked and possible; a failure is recorded and the fp32 graph used as is."""
    if not enabled:
        return src, "off"
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = work / src.name
    try:
        quant_pre_process(str(src), str(out))
    except Exception as e:  # the quantizer runs its own shape inference, so this is not fatal
        warnings.warn(f"{src.name}: quant_pre_process failed, quantizing the graph as exported: {e}", stacklevel=3)
        return src, f"failed: {type(e).__name__}: {e}"
    return out, "quant_pre_process (symbolic shape inference, basic ORT optimisations, ONNX shape inference)"


def calibrate(onnx_dir: str | Path, manifest_or_paths: Any, out_dir: str | Path, n: int | None = None, *,
              frontend: Any = None, settings: QuantSettings | None = None, graphs: Sequence[str] = GRAPHS,
              threads: int = 2) -> dict[str, Any]:
    """Write QDQ INT8 graphs for `graphs` (the rest copied as fp32) to `out_dir`; returns calibration.json's content.

    onnx_dir: the fp32 export (four .onnx files and io_spec.json).
    manifest_or_paths: a manifest YAML path or CalibrationManifest; a JSONL file or a directory with
        val.jsonl (drawn with the manifest defaults); or ready clips: a FeatureSet or a mapping with
        image (N, S, S, 3) uint8, frames (N, T, s, s, 3) uint8, mel (N, n_mels, F) and optionally present (N, 3).
    n: clips to use (default: the manifest's n_clips, or all ready clips).
    frontend: the checkpoint's FrontendConfig or ModelConfig; default derived from io_spec.json and checked.
    """
    settings = settings or QuantSettings()
    unknown = [g for g in graphs if g not in GRAPHS]
    if unknown:
        raise ValueError(f"unknown graph(s) {unknown}; graphs: {list(GRAPHS)}")
    src, out = Path(onnx_dir), Path(out_dir)
    spec = as_io_spec(src / SPEC_FILE)
    clips, source = _calibration_clips(manifest_or_paths, frontend_for(spec, frontend), n)
    fp32 = OrtPerception(src, spec, providers=[CPU], threads=threads)
    feeds = graph_feeds(fp32, clips, settings.batch_size)
    (out / CACHE_DIR).mkdir(parents=True, exist_ok=True)
    made = {}
    for name, graph in spec.graphs.items():
        if name in graphs:
            made[name] = quantize_graph(src / graph.filename, out / graph.filename, feeds[name], settings,
                                        out / CACHE_DIR / f"{name}.json")
        else:
            shutil.copyfile(src / graph.filename, out / graph.filename)
            data = src / (graph.filename + DATA_SUFFIX)  # its weights, when exported in the external-data format
            if data.is_file():
                shutil.copyfile(data, out / data.name)
            (out / CACHE_DIR / f"{name}.json").unlink(missing_ok=True)  # from an earlier run, if any
    spec.save(out / SPEC_FILE)
    OrtPerception(out, providers=[CPU], threads=threads)  # every file loads and matches the io spec
    summary = _summary(src, out, spec, made, settings, source, clips)
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
    return summary


def _calibration_clips(source: Any, fe: FrontendConfig, n: int | None) -> tuple[dict[str, np.ndarray], dict]:
    """Runtime arrays of the calibration clips, and a description of where they came from."""
    if isinstance(source, FeatureSet | Mapping):
        clips = {k: v[:n] for k, v in runtime_arrays(source).items()}
        ids = [r.id for r in source.records[:n]] if isinstance(source, FeatureSet) else None
        return clips, {"source": type(source).__name__, "ids": ids}
    if isinstance(source, CalibrationManifest):
        manifest = source
    elif Path(source).suffix in (".yaml", ".yml"):
        manifest = load_manifest(source)
    else:
        manifest = CalibrationManifest(data=str(source))
    fs = load_calibration_set(manifest, fe, n)
    clips = runtime_arrays(fs)
    clips["present"] = presence(len(fs), manifest.absent_share, manifest.seed)
    return clips, {"source": "manifest", "manifest": dataclasses.asdict(manifest), "ids": [r.id for r in fs.records],
                   "skipped": fs.bad}


def _summary(src: Path, out: Path, spec: IOSpec, made: dict[str, dict], settings: QuantSettings,
             source: dict, clips: Mapping[str, np.ndarray]) -> dict[str, Any]:
    import onnxruntime

    p = clips["present"]
    patterns = {"all": int((p.min(1) == 1).sum()), "no_camera": int((p[:, 0] == 0).sum()),
                "no_audio": int((p[:, 2] == 0).sum())}
    graphs = {name: {"file": g.filename, "precision": "int8" if name in made else "fp32", **made.get(name, {}),
                     **(qdq_summary(out / g.filename) if name in made else {})} for name, g in spec.graphs.items()}
    return {"fp32_dir": str(src), "clips": {"n": len(p), "presence": patterns, **source},
            "settings": {**dataclasses.asdict(settings), "format": "QDQ",
                         "ops": _quantize_kwargs(settings)["op_types_to_quantize"],
                         "weights": "int8 symmetric" + (" per channel" if settings.per_channel else " per tensor"),
                         "extra_options": _quantize_kwargs(settings)["extra_options"],
                         "onnxruntime": onnxruntime.__version__},
            "graphs": graphs}


def qdq_summary(path: str | Path) -> dict[str, Any]:
    """Q/DQ node counts and, per quantized activation, the float range its scale and zero point can represent."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    nodes = model.graph.node
    q = [nd for nd in nodes if nd.op_type == "QuantizeLinear"]
    dq = [nd for nd in nodes if nd.op_type == "DequantizeLinear"]
    ranges = {}
    for nd in q:
        scale, zp = consts.get(nd.input[1]), consts.get(nd.input[2]) if len(nd.input) > 2 else None
        if scale is None or scale.size != 1:
            continue
        info = np.iinfo(zp.dtype if zp is not None else np.uint8)
        z = float(zp) if zp is not None else 0.0
        ranges[nd.input[0]] = [float((info.min - z) * scale), float((info.max - z) * scale)]
    per_channel = sum(1 for nd in dq if nd.input[0] in consts and np.size(consts.get(nd.input[1], 0)) > 1)
    return {"quantize_nodes": len(q), "dequantize_nodes": len(dq), "per_channel_weights": per_channel,
            "activation_ranges": ranges}


# ---------------------------------------------------------------------------------------------
# accuracy check
# ---------------------------------------------------------------------------------------------


def compare_int8(fp32_dir: str | Path, int8_dir: str | Path, features: Any, threads: int = 2,
                 batch_size: int = 16) -> dict[str, Any]:
    """fp32 vs int8 perception on the same clips (a FeatureSet or a mapping of runtime arrays).

    label_agreement: share of clips with the same head argmax; accuracy_*: head accuracy on clips with a
    label in LABELS (None without labels); *_max_abs_diff / *_max_rel_diff (relative to max |fp32|) for the
    fusion tokens (`fused`), the LLM tokens (`tokens`), `va` and `logits`; fused_min_cosine: the smallest per-clip
    cosine similarity of the fusion tokens (what survives of them when labels are near-ties, as with random weights).
    """
    if as_io_spec(Path(fp32_dir) / SPEC_FILE) != as_io_spec(Path(int8_dir) / SPEC_FILE):
        raise ValueError(f"{fp32_dir} and {int8_dir} have different io specs (exports of different models?)")
    clips = runtime_arrays(features)
    ref, got = (_run_all(OrtPerception(d, providers=[CPU], threads=threads), clips, batch_size)
                for d in (fp32_dir, int8_dir))
    pred_ref, pred_got = ref["logits"].argmax(1), got["logits"].argmax(1)
    labelled = clips["labels"] >= 0
    report: dict[str, Any] = {"n": int(len(pred_ref)), "labelled": int(labelled.sum()),
                              "label_agreement": float(np.mean(pred_ref == pred_got))}
    for key, pred in (("accuracy_fp32", pred_ref), ("accuracy_int8", pred_got)):
        report[key] = float(np.mean(pred[labelled] == clips["labels"][labelled])) if labelled.any() else None
    for name in ("fused", "tokens", "va", "logits"):
        diff = float(np.abs(got[name] - ref[name]).max())
        report[f"{name}_max_abs_diff"] = diff
        report[f"{name}_max_rel_diff"] = diff / (float(np.abs(ref[name]).max()) + 1e-12)
    report["fused_min_cosine"] = float(cosine_rows(ref["fused"], got["fused"]).min())
    return report


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N,) cosine similarity of each clip's flattened tensor in `a` with the same clip's in `b`."""
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)


def _run_all(rt: OrtPerception, clips: Mapping[str, np.ndarray], batch_size: int) -> dict[str, np.ndarray]:
    parts = []
    for s in range(0, len(clips["image"]), batch_size):
        out = rt.run(**{k: clips[k][s:s + batch_size] for k in ("image", "frames", "mel", "present")})
        parts.append({k: out[k] for k in ("fused", "tokens", "va", "logits")})
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
