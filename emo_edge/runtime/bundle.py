"""Bundles: what `emo-edge export` writes and the runtime loads, without torch.

    BUNDLE/manifest.json           format version, versions, sha256 of every file, shapes, labels,
                                   prompt template, token layout, target profile, parity report
    BUNDLE/perception/fp32/        image/video/audio encoders + fusion (ONNX) and io_spec.json
    BUNDLE/perception/int8/        the same graphs with explicit Q/DQ (optional)
    BUNDLE/llm/                    llm-<quant>.gguf files (form "merged"), or the base model's GGUF(s) and
                                   llm-lora-f32.gguf (form "base+lora": llama.cpp applies the adapter at load),
                                   and the tokenizer
    BUNDLE/engines/                TensorRT engines, built on the device that runs them (optional)

`load_bundle` refuses a bundle whose format version, file hashes or engine build do not match,
with an error that names which file or field and why, before anything runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emo_edge.fileio import sha256_file

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
QUANTS = ("f16", "q8_0", "q4_k_m")
PRECISIONS = ("fp32", "int8")


class BundleError(ValueError):
    """A bundle that must not be used, with the reason."""


def file_table(root: Path) -> dict[str, dict[str, Any]]:
    """sha256 and size of every file under root except the manifest, keyed by relative path."""
    return {
        p.relative_to(root).as_posix(): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
        for p in sorted(root.rglob("*")) if p.is_file() and p.name != MANIFEST
    }


def read_manifest(bundle: str | Path) -> dict[str, Any]:
    root = Path(bundle)
    path = root / MANIFEST
    if not root.is_dir():
        raise BundleError(f"bundle {root}: no such directory")
    if not path.is_file():
        raise BundleError(f"bundle {root}: no {MANIFEST} (not an emo-edge bundle, or an unfinished export)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise BundleError(f"bundle {root}: {MANIFEST} is not valid JSON ({e.msg} at line {e.lineno})") from e
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(f"bundle {root}: format version {version!r}, this emo-edge reads version {FORMAT_VERSION} "
                          "(re-export the bundle with this version)")
    return manifest


def verify_files(root: Path, manifest: dict[str, Any]) -> None:
    """Every listed file present with its sha256; no required file missing from the list."""
    files = manifest.get("files", {})
    for rel, entry in files.items():
        p = root / rel
        if not p.is_file():
            raise BundleError(f"bundle {root}: missing file {rel} listed in the manifest")
        if p.stat().st_size != entry["bytes"] or sha256_file(p) != entry["sha256"]:
            raise BundleError(f"bundle {root}: {rel} does not match its sha256 in the manifest (modified or corrupt)")
    for rel in required_files(manifest):
        if rel not in files:
            raise BundleError(f"bundle {root}: required file {rel} is missing from the manifest")


def llm_adapter(root: Path, manifest: dict[str, Any]) -> Path | None:
    """The GGUF LoRA adapter llama.cpp must apply at load (form "base+lora"), None for a merged LLM."""
    llm = manifest["llm"]
    return Path(root) / llm["adapter"] if llm.get("form", "merged") == "base+lora" else None


def required_files(manifest: dict[str, Any]) -> list[str]:
    req = [manifest["llm"]["tokenizer"]]
    for prec in manifest["perception"].values():
        req += [f"{prec['dir']}/{f}" for f in prec["graphs"]]
    req += list(manifest["llm"]["files"].values())
    if manifest["llm"].get("form", "merged") == "base+lora":
        req.append(manifest["llm"]["adapter"])
    return req


@dataclass
class Bundle:
    """A verified bundle: its manifest and lazily created runners."""

    root: Path
    manifest: dict[str, Any]
    precision: str = "fp32"
    quant: str = "q4_k_m"
    threads: int = 2
    providers: list[str] | None = None
    _perception: Any = field(default=None, repr=False)
    _llm: Any = field(default=None, repr=False)

    @property
    def labels(self) -> list[str]:
        return list(self.manifest["labels"])

    @property
    def frontend(self) -> dict[str, Any]:
        return self.manifest["model"]["frontend"]

    @property
    def perception(self) -> Any:
        if self._perception is None:
            from emo_edge.runtime.perception import OrtPerception

            d = self.manifest["perception"][self.precision]["dir"]
            self._perception = OrtPerception(self.root / d, providers=self.providers, threads=self.threads)
        return self._perception

    @property
    def llm(self) -> Any:
        if self._llm is None:
            from emo_edge.runtime.llm import LlamaCppLM

            info = self.manifest["llm"]
            self._llm = LlamaCppLM(self.root / info["files"][self.quant], n_ctx=info["n_ctx"], n_threads=self.threads,
                                   lora=llm_adapter(self.root, self.manifest))
        return self._llm

    def close(self) -> None:
        if self._llm is not None:
            self._llm.close()
            self._llm = None


def load_bundle(bundle: str | Path, precision: str | None = None, quant: str | None = None, threads: int = 2,
                providers: list[str] | None = None) -> Bundle:
    """Read, verify and open a bundle (runners start on first use)."""
    root = Path(bundle)
    manifest = read_manifest(root)
    verify_files(root, manifest)
    precision = precision or manifest["target"].get("perception_precision", "fp32")
    quant = quant or manifest["llm"]["default_quant"]
    if precision not in manifest["perception"]:
        raise BundleError(f"bundle {root}: no {precision} perception graphs; it has {sorted(manifest['perception'])}")
    if quant not in manifest["llm"]["files"]:
        raise BundleError(f"bundle {root}: no {quant} LLM; it has {sorted(manifest['llm']['files'])}")
    check_engines(root, manifest)
    return Bundle(root, manifest, precision, quant, threads, providers)


def check_engines(root: Path, manifest: dict[str, Any]) -> None:
    """TensorRT engines are version-locked: refuse them on another TensorRT or GPU."""
    engines = manifest.get("engines") or []
    if not engines:
        return
    from emo_edge.export.tensorrt import check_engine_meta, current_engine_meta

    current = current_engine_meta()
    for e in engines:
        try:
            check_engine_meta(e["meta"], current)
        except ValueError as err:
            raise BundleError(f"bundle {root}: engine {e['file']}: {err}") from err


def softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)
