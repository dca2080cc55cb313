"""Bundles: what `emo-edge export` writes and the runtime loads, without torch.

    BUNDLE/manifest.json           format version, versions, sha256 of every file, shapes, labels,
                                   prompt template, token layout, target profile, parity report
    BUNDLE/perception/fp32/        image/video/audio encoders + fusion (ONNX) and io_spec.json
    BUNDLE/perception/int8/        the same graphs with explicit Q/DQ (optional)
    BUNDLE/llm/                    llm-<quant>.gguf files (form "merged"), or the base model's GGUF(s) and
                                   llm-lora-f32.gguf (form "base+lora": llama.cpp applies the adapter at load),
                                   and the tokenizer
    BUNDLE/engines/                TensorRT engines built on the device (`emo-edge engines build`), and the
                                   TensorRT EP's engine and timing caches (engines/ort-trt/)

The manifest is `emo_edge.runtime.manifest.Manifest`. `load_bundle` refuses a bundle whose format
version, fields, file hashes or engine builds do not match, with a BundleError that names which file,
field or engine and why, before anything runs; then it makes the execution plan from the target
profile (`emo_edge.runtime.plan`), which the runners follow.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emo_edge.config import FrontendConfig
from emo_edge.fileio import sha256_file
from emo_edge.runtime.manifest import ENTRIES, FORMAT_VERSION, MANIFEST, QUANTS, BundleError, Manifest
from emo_edge.runtime.plan import ExecutionPlan, Machine, make_plan
from emo_edge.runtime.profile import AUTO_THREADS

__all__ = ["ENTRIES", "FORMAT_VERSION", "MANIFEST", "QUANTS", "Bundle", "BundleError", "Manifest", "load_bundle",
           "read_manifest"]
log = logging.getLogger("emo_edge.runtime")


def file_table(root: Path) -> dict[str, dict[str, Any]]:
    """sha256 and size of every file under root except the manifest, keyed by relative path."""
    return {
        p.relative_to(root).as_posix(): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
        for p in sorted(root.rglob("*")) if p.is_file() and p.name != MANIFEST
    }


def read_manifest(bundle: str | Path) -> Manifest:
    root = Path(bundle)
    path = root / MANIFEST
    if not root.is_dir():
        raise BundleError(f"bundle {root}: no such directory")
    if not path.is_file():
        raise BundleError(f"bundle {root}: no {MANIFEST} (not an emo-edge bundle, or an unfinished export)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise BundleError(f"bundle {root}: {MANIFEST} is not valid JSON ({e.msg} at line {e.lineno})") from e
    version = data.get("format_version") if isinstance(data, dict) else None
    if version != FORMAT_VERSION:
        raise BundleError(f"bundle {root}: format version {version!r}, this emo-edge reads version {FORMAT_VERSION} "
                          "(re-export the bundle with this version)")
    try:
        return Manifest.from_dict(data)
    except BundleError as e:
        raise BundleError(f"bundle {root}: {e}") from e


def write_manifest(root: Path, manifest: Manifest) -> None:
    """manifest.json through a temporary file and a rename: a reader sees the old one or the new one."""
    tmp = root / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest.to_dict(), indent=2))
    tmp.replace(root / MANIFEST)


def verify_files(root: Path, manifest: Manifest) -> None:
    """Every listed file present with its sha256; no required file missing from the list."""
    files = manifest.files
    for rel, entry in files.items():
        p = root / rel
        if not p.is_file():
            raise BundleError(f"bundle {root}: missing file {rel} listed in the manifest")
        if p.stat().st_size != entry["bytes"] or sha256_file(p) != entry["sha256"]:
            raise BundleError(f"bundle {root}: {rel} does not match its sha256 in the manifest (modified or corrupt)")
    for rel in manifest.required_files():
        if rel not in files:
            raise BundleError(f"bundle {root}: required file {rel} is missing from the manifest")


def llm_adapter(root: Path, manifest: Manifest) -> Path | None:
    """The GGUF LoRA adapter llama.cpp must apply at load (form "base+lora"), None for a merged LLM."""
    return Path(root) / manifest.llm.adapter if manifest.llm.form == "base+lora" and manifest.llm.adapter else None


@dataclass
class Bundle:
    """A verified bundle: its manifest, the execution plan, and runners created on first use from the plan."""

    root: Path
    manifest: Manifest
    plan: ExecutionPlan
    _perception: Any = field(default=None, repr=False)
    _llm: Any = field(default=None, repr=False)
    # with the plan's n_threads 0 (auto), once the LLM is loaded: {"chosen", "ms_per_token": {count: median ms}}
    llm_threads: dict[str, Any] | None = None

    @property
    def labels(self) -> list[str]:
        return list(self.manifest.labels)

    @property
    def frontend(self) -> FrontendConfig:
        return self.manifest.model.frontend

    @property
    def precision(self) -> str:
        """The graph set in use: fp32 or int8 (the TensorRT route names its engines' precisions in the plan)."""
        d = self.plan.perception.graphs_dir
        return next((k for k, e in self.manifest.perception.items() if e.dir == d), self.manifest.perception_entry)

    @property
    def quant(self) -> str:
        return self.plan.llm.quant

    @property
    def perception(self) -> Any:
        if self._perception is None:
            self._perception = open_perception(self.root, self.manifest, self.plan)
        return self._perception

    @property
    def llm(self) -> Any:
        if self._llm is None:
            from emo_edge.runtime.llm import LlamaCppLM

            m = self.plan.llm
            auto = list(range(1, min(AUTO_THREADS, os.cpu_count() or 1) + 1)) if m.n_threads == 0 else []
            self._llm = LlamaCppLM(self.root / m.file, n_ctx=m.n_ctx, n_threads=auto[-1] if auto else m.n_threads,
                                   n_gpu_layers=m.n_gpu_layers, lora=self.root / m.lora if m.lora else None)
            if auto:  # n_threads 0: the fastest count on this machine, for this model
                self.llm_threads = self._llm.fastest_threads(auto)
                log.info("llama.cpp threads: %d (auto; ms per token %s)", self.llm_threads["chosen"],
                         self.llm_threads["ms_per_token"])
        return self._llm

    def close(self) -> None:
        if self._llm is not None:
            self._llm.close()
            self._llm = None
        if self._perception is not None and hasattr(self._perception, "close"):
            self._perception.close()
        self._perception = None


def open_perception(root: Path, manifest: Manifest, plan: ExecutionPlan) -> Any:
    """The perception runner the plan names: `TrtPerception` over the engines, or `OrtPerception` with the
    plan's providers (one merged session, or one per graph when the providers carry per-graph options)."""
    p = plan.perception
    if p.backend == "tensorrt":
        from emo_edge.runtime.tensorrt import TrtPerception

        return TrtPerception({g: root / f for g, f in p.engines.items()}, manifest.io_spec)
    from emo_edge.runtime.perception import OrtPerception

    assert p.graphs_dir is not None
    if p.merged:
        return OrtPerception(root / p.graphs_dir, providers=p.providers, threads=p.threads)
    per_graph = {g: [(name, o) if o else name for name, o in zip(p.providers, opts, strict=True)]
                 for g, opts in p.provider_options.items()}
    return OrtPerception(root / p.graphs_dir, providers=p.providers, threads=p.threads, merged=False,
                         graph_providers=per_graph)


def load_bundle(bundle: str | Path, precision: str | None = None, quant: str | None = None,
                threads: int | None = None, fallback: str | None = None, machine: Machine | None = None) -> Bundle:
    """Read and verify a bundle and plan how it runs here (runners start on first use).

    precision (fp32 | int8 graph set), quant and threads override the target profile; fallback="cpu" lets a
    target whose GPU / TensorRT / GPU llama.cpp this machine lacks run on the CPU (logged, and in the plan).
    BundleError naming the file, field, engine or missing capability otherwise.
    """
    root = Path(bundle)
    manifest = read_manifest(root)
    verify_files(root, manifest)
    if precision is not None and precision not in manifest.perception:
        raise BundleError(f"bundle {root}: no {precision} perception graphs; it has {sorted(manifest.perception)}")
    machine = machine or Machine.probe()
    plan = make_plan(manifest, root, machine, precision, quant, threads, fallback)
    if plan.perception.backend == "tensorrt":
        check_engines(root, manifest, machine.engine_meta)
    for line in plan.describe():
        log.info("plan: %s", line)
    return Bundle(root, manifest, plan)


def check_engines(root: Path, manifest: Manifest, current: dict[str, Any] | None = None) -> None:
    """TensorRT engines are version-locked: refuse one built with another TensorRT or on another GPU, or whose
    file is gone, with a BundleError naming the engine. `current`: this device's `current_engine_meta()`."""
    if not manifest.engines:
        return
    from emo_edge.runtime.tensorrt import EngineMismatchError, check_engine_meta, current_engine_meta

    for e in manifest.engines:
        if not (root / e.file).is_file():
            raise BundleError(f"bundle {root}: engine {e.file} ({e.graph}, {e.precision}) is missing; rebuild with "
                              f"`emo-edge engines build {root}`")
    here = current if current is not None else current_engine_meta()
    for e in manifest.engines:
        try:
            check_engine_meta(dataclasses.asdict(e.meta), here)
        except EngineMismatchError as err:
            raise BundleError(f"bundle {root}: engine {e.file} ({e.graph}): {err}") from err


def softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)
