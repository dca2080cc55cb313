"""`emo-edge engines build BUNDLE`: the bundle's TensorRT engines, built on the device that will run them.

Per graph, at the precision the bundle's target profile gives it: fp16 / fp32 engines from the fp32 ONNX
graph, int8 from the QDQ graph (explicit quantization: the scales are in the graph). Each build uses the
optimisation profile of the io table over the profile's batch range and one shared timing cache, and the
manifest records per engine the TensorRT version, GPU, compute capability and builder flags.

Atomic: the bundle is copied to a hidden sibling as hard links (nothing is ever written through them:
engines and the manifest are new files, the timing cache is un-linked before it is written), the engines
are built there, the copy is verified through the runtime (hashes, engine records against this device),
and only then swapped in for the bundle. A failure at any step removes the copy: the bundle is as it was.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from emo_edge.fileio import sha256_file, staging_dir
from emo_edge.runtime.bundle import check_engines, read_manifest, verify_files, write_manifest
from emo_edge.runtime.io_spec import GRAPHS
from emo_edge.runtime.manifest import BundleError, EngineMeta, EngineRecord, Manifest
from emo_edge.runtime.plan import ENGINE_DIR
from emo_edge.runtime.tensorrt import ENGINE_SUFFIX, meta_path, profile_build_config, tensorrt_unavailable_reason

TIMING_CACHE = f"{ENGINE_DIR}/timing.cache"
# (onnx path, engine path, engine_build_config) -> build record with at least the EngineMeta keys
Builder = Callable[[Path, Path, Mapping[str, Any]], Mapping[str, Any]]


def engine_file(graph: str, precision: str) -> str:
    return f"{ENGINE_DIR}/{graph}-{precision}{ENGINE_SUFFIX}"


def engine_sources(manifest: Manifest) -> dict[str, tuple[str, str]]:
    """graph -> (precision, bundle-relative ONNX file to build it from), as the target profile asks."""
    out = {}
    for g in GRAPHS:
        precision = manifest.target.perception.precision[g]
        entry = "int8" if precision == "int8" else "fp32"
        if entry not in manifest.perception:
            raise BundleError(f"{g} is int8 in the target profile but the bundle has no int8 (QDQ) graphs; "
                              "re-export it for this target")
        out[g] = (precision, f"{manifest.perception[entry].dir}/{g}.onnx")
    return out


def build_engines(bundle: str | Path, builder: Builder | None = None,
                  device: Mapping[str, Any] | None = None) -> Manifest:
    """Build every engine of `bundle` and add them to it atomically; returns the new manifest.

    builder: the TensorRT build call (default `emo_edge.export.tensorrt.build_engine`, which needs TensorRT and
    a GPU); device: this device's `current_engine_meta()` to verify the records against (default: read it).
    """
    root = Path(bundle)
    if builder is None:
        reason = tensorrt_unavailable_reason()
        if reason is not None:
            raise BundleError(f"cannot build TensorRT engines here: {reason}. Build them on the target device "
                              "(a Jetson with JetPack 6, or a machine with an NVIDIA GPU and `pip install tensorrt`)")
        from emo_edge.export.tensorrt import build_engine

        builder = build_engine
    manifest = read_manifest(root)
    verify_files(root, manifest)
    tmp = staging_dir(root.parent, f".{root.name}.engines-")
    try:
        shutil.copytree(root, tmp, copy_function=_link, dirs_exist_ok=True)
        new = _build_into(tmp, manifest, builder)
        write_manifest(tmp, new)
        _verify(tmp, device)
        _swap(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return new


def _build_into(tmp: Path, manifest: Manifest, builder: Builder) -> Manifest:
    cache = tmp / TIMING_CACHE
    cache.parent.mkdir(parents=True, exist_ok=True)
    if cache.is_file():  # break the hard link: the builder rewrites the cache in place
        data = cache.read_bytes()
        cache.unlink()
        cache.write_bytes(data)
    records, files = [], dict(manifest.files)
    for graph, (precision, onnx) in engine_sources(manifest).items():
        cfg = profile_build_config(manifest.target, graph, manifest.io_spec, timing_cache=cache)
        rel = engine_file(graph, precision)
        for stale in (tmp / rel, meta_path(tmp / rel)):  # never write through a link to the original bundle
            stale.unlink(missing_ok=True)
        record = builder(tmp / onnx, tmp / rel, cfg)
        meta = EngineMeta(str(record["tensorrt"]), str(record["gpu"]), str(record["compute_capability"]),
                          sorted(record.get("flags", cfg["flags"])))
        records.append(EngineRecord(graph, precision, rel, onnx, meta, cfg["profile"]))
        if not (tmp / rel).is_file():
            raise BundleError(f"the builder wrote no engine file {rel} for {graph}")
        for path in (tmp / rel, meta_path(tmp / rel)):  # the engine and its build record, when written
            if path.is_file():
                files[path.relative_to(tmp).as_posix()] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    return dataclasses.replace(manifest, engines=records, files=files)


def _verify(tmp: Path, device: Mapping[str, Any] | None) -> None:
    """The copy as the runtime will see it: manifest fields, hashes, and every engine against this device."""
    manifest = read_manifest(tmp)
    verify_files(tmp, manifest)
    check_engines(tmp, manifest, current=dict(device) if device is not None else None)


def _link(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # a file system without hard links: a real copy
        shutil.copy2(src, dst)


def _swap(tmp: Path, root: Path) -> None:
    """`tmp` takes the bundle's place; the old bundle is removed only after the rename succeeded."""
    old = root.with_name(f".{root.name}.old-{os.getpid()}")
    root.rename(old)
    try:
        tmp.rename(root)
    except OSError:
        old.rename(root)
        raise
    shutil.rmtree(old, ignore_errors=True)
