"""The GPU check (run through scripts/gpu_check.sh): every part records pass / fail / skipped with its reason in one
JSON file, written again after each part, and the next part runs whatever the last one did.

Parts: environment -> install (carried wheels + this repository, --no-deps, no network) -> llama.cpp CUDA build
(in the background, from the trimmed llama-cpp-python source, for this GPU's architecture only) -> the gpu-marked
tests -> a cpu-x86 bundle of the shipped default -> llama.cpp with every layer on the GPU against the CPU on the
same clips (greedy answers) -> prefill / decode timing on both.
"""

from __future__ import annotations

import argparse
import datetime as dt
import glob
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CARRIED = ROOT / ".gpu_check"  # filled by `scripts/gpu_check.sh --prepare` on a machine with network
LLAMA_VERSION = "0.3.36"
GPU_TEST_FILES = ("tests/test_gpu.py", "tests/test_scale.py", "tests/test_tensorrt_logic.py")
SAME_ANSWERS_MIN = 0.99  # share of identical greedy answers, GPU vs CPU
LLM_CLIPS = 100  # clips for that comparison, two prompts each (emotion, reason)
BUDGET_S = 480  # the whole check: 8 minutes
TIMEOUTS_S = {"install": 120, "llama_build": 360, "gpu_tests": 240, "bundle": 180, "llama_compare": 150}
# llama.cpp for one GPU: FlashAttention kernels left out (the larger part of the CUDA compile; llama.cpp's
# flash_attn "auto" then runs without them), no NCCL, no multimodal library
LLAMA_CMAKE = "-DGGML_CUDA=on -DGGML_CUDA_FA=OFF -DGGML_CUDA_NCCL=OFF -DLLAVA_BUILD=OFF"
ASSUMED = ("python3 with torch (CUDA build), numpy, pyyaml, typer, rich, scipy, opencv-python-headless, matplotlib, "
           "threadpoolctl, transformers, peft, safetensors, sentencepiece, onnx, onnxruntime (CPU), fsspec, tqdm, "
           "requests, jinja2, typing-extensions, pytest, pytest-timeout, setuptools, scikit-build-core, pip; nvcc, "
           "cmake, ninja, nvidia-smi on PATH. Carried in .gpu_check/wheels: soundfile, cffi, pycparser, gguf, "
           "diskcache; .gpu_check/synthemo*: SynthEmo clips (no espeak-ng needed)")


class Report:
    """The JSON of results, rewritten after every part so a killed run still leaves what it finished."""

    def __init__(self, path: Path, dry_run: bool):
        self.path, self.t0 = path, time.monotonic()
        self.data: dict[str, Any] = {"started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                                     "dry_run": dry_run, "assumed_on_the_machine": ASSUMED, "parts": {}}
        self.write()

    def part(self, name: str, status: str, reason: str | None = None, **details: Any) -> dict[str, Any]:
        assert status in ("pass", "fail", "skipped"), status
        entry = {"status": status, "reason": reason, **details}
        self.data["parts"][name] = entry
        print(f"[gpu_check +{self.elapsed():.0f} s] {name}: {status}" + (f" ({reason})" if reason else ""), flush=True)
        self.write()
        return entry

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def write(self) -> None:
        self.data["elapsed_s"] = round(self.elapsed(), 1)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.data, indent=2))


def run(cmd: list[str], timeout: float, env: dict[str, str] | None = None, cwd: Path = ROOT) -> tuple[int, str]:
    """Exit code (124 on timeout, 127 when the program is missing) and the last 4000 characters of its output."""
    try:
        p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
        return p.returncode, (p.stdout + p.stderr)[-4000:]
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"") + (e.stderr or b"")
        return 124, (out.decode(errors="replace") if isinstance(out, bytes) else out)[-4000:]
    except FileNotFoundError as e:
        return 127, str(e)


# ---------------------------------------------------------------------------------------------
# environment and install
# ---------------------------------------------------------------------------------------------


def environment() -> dict[str, Any]:
    env: dict[str, Any] = {"python": platform.python_version(), "machine": platform.machine(),
                           "cpu_count": os.cpu_count()}
    try:
        import torch

        env.update(torch=torch.__version__, torch_cuda=torch.version.cuda, cuda_available=torch.cuda.is_available())
        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability(0)
            env.update(gpu=torch.cuda.get_device_name(0), gpu_count=torch.cuda.device_count(),
                       compute_capability=f"{major}.{minor}", cuda_arch=f"{major}{minor}")
    except ImportError as e:
        env.update(torch=None, cuda_available=False, torch_error=str(e))
    for tool, args in (("nvidia-smi", ["--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]),
                       ("nvcc", ["--version"]), ("cmake", ["--version"]), ("ninja", ["--version"])):
        code, out = run([tool, *args], 30)
        env[tool] = " | ".join(out.strip().splitlines())[:240] if code == 0 and out.strip() else None
    return env


def install(report: Report, site: Path) -> dict[str, str]:
    """Carried wheels and this repository into `site` (--no-deps, --no-index); the environment for later parts."""
    env = {**os.environ, "PYTHONPATH": str(site)}
    wheels = sorted(glob.glob(str(CARRIED / "wheels" / "*.whl")))
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--target",
           str(site)]
    notes = []
    if wheels:
        code, out = run([*pip, *wheels], TIMEOUTS_S["install"])
        if code:
            notes.append(f"carried wheels failed ({code}): {out[-500:]}")
    else:
        notes.append(f"no carried wheels in {CARRIED / 'wheels'} (scripts/gpu_check.sh --prepare)")
    code, out = run([*pip, "--no-build-isolation", str(ROOT)], TIMEOUTS_S["install"])
    if code:  # e.g. an older setuptools: the tests still run from the checkout
        env["PYTHONPATH"] = f"{site}{os.pathsep}{ROOT}"
        notes.append(f"pip install of the repository failed ({code}), using the checkout: {out[-800:]}")
    check = [sys.executable, "-c", "import emo_edge, soundfile; print(emo_edge.__file__)"]
    code, out = run(check, 60, env)
    status = "pass" if code == 0 and not notes else "fail"
    report.part("install", status, "; ".join(notes) or None, site=str(site), wheels=[Path(w).name for w in wheels],
                emo_edge=out.strip()[-300:])
    return env


# ---------------------------------------------------------------------------------------------
# llama.cpp with CUDA
# ---------------------------------------------------------------------------------------------


def start_llama_build(report: Report, env_info: dict[str, Any], work: Path) -> Build | None:
    """Unpack the trimmed source and start `pip wheel` with CUDA for this GPU only; None (recorded) when it can't."""
    sdist = CARRIED / f"llama-cpp-python-{LLAMA_VERSION}-trimmed.tar.gz"
    reason = ("no CUDA device (torch.cuda.is_available() is False)" if not env_info.get("cuda_available") else
              "nvcc not found" if not env_info.get("nvcc") else
              f"{sdist} missing: run scripts/vendor_llama_cpp.sh (or gpu_check.sh --prepare)" if not sdist.is_file()
              else None)
    if reason:
        report.part("llama_build", "skipped", reason)
        return None
    with tarfile.open(sdist) as tar:
        tar.extractall(work, filter="data")
    src = work / f"llama_cpp_python-{LLAMA_VERSION}"
    hints, libdir = cublas_hints()
    cmake_args = " ".join([LLAMA_CMAKE, f"-DCMAKE_CUDA_ARCHITECTURES={env_info['cuda_arch']}", *hints,
                           *driver_link_args()])
    if libdir:  # needed again when llama.cpp loads
        os.environ["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [libdir, os.environ.get("LD_LIBRARY_PATH")]))
    env = {**os.environ, "CMAKE_ARGS": cmake_args, "CMAKE_BUILD_PARALLEL_LEVEL": str(os.cpu_count() or 4)}
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
           str(src), "-w", str(work / "dist")]
    log = work / "build.log"
    with log.open("w") as f:
        proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=f, stderr=subprocess.STDOUT)
    return Build(proc, time.monotonic(), cmake_args, log)


def cublas_hints(site_dirs: list[str] | None = None) -> tuple[list[str], str | None]:
    """CMake arguments and the library directory for cuBLAS when nvcc's toolkit lacks it but a pip nvidia-cublas
    wheel (as PyTorch installs it: site-packages/nvidia/<cuXX>/{include,lib}) has it; ([], None) otherwise."""
    nvcc = shutil.which("nvcc")
    if nvcc and (Path(nvcc).resolve().parents[1] / "include" / "cublas_v2.h").is_file():
        return [], None
    for root in site_dirs if site_dirs is not None else [p for p in sys.path if p.endswith("-packages")]:
        for header in sorted(Path(root).glob("nvidia/*/include/cublas_v2.h")):
            inc, lib = header.parent, header.parent.parent / "lib"
            blas, blas_lt = sorted(lib.glob("libcublas.so*")), sorted(lib.glob("libcublasLt.so*"))
            if blas and blas_lt:
                return [f"-DCUDA_cublas_LIBRARY={blas[0]}", f"-DCUDA_cublasLt_LIBRARY={blas_lt[0]}",
                        f"-DCMAKE_CUDA_FLAGS=-I{inc}", f"-DCMAKE_CXX_FLAGS=-I{inc}"], str(lib)
    return [], None


def driver_link_args() -> list[str]:
    """ggml links libcuda.so for its virtual-memory pool; where no unversioned libcuda.so is there to link
    (a toolkit without stubs), build without that pool (GGML_CUDA_NO_VMM) instead of failing to configure."""
    nvcc = shutil.which("nvcc")
    root = Path(nvcc).resolve().parents[1] if nvcc else Path("/usr/local/cuda")
    candidates = [root / d / "libcuda.so" for d in ("lib64", "lib64/stubs", "targets/x86_64-linux/lib/stubs")]
    code, out = run(["ldconfig", "-p"], 30)
    found = any(c.is_file() for c in candidates) or (code == 0 and " libcuda.so " in out.replace("\t", " "))
    return [] if found else ["-DGGML_CUDA_NO_VMM=ON"]


@dataclass
class Build:
    proc: subprocess.Popen
    started: float  # time.monotonic()
    cmake_args: str
    log: Path


def finish_llama_build(report: Report, build: Build | None, work: Path) -> Path | None:
    """Wait for the build, install the wheel into its own directory; that directory, or None (recorded)."""
    if build is None:
        return None
    try:
        code = build.proc.wait(timeout=max(TIMEOUTS_S["llama_build"] - (time.monotonic() - build.started), 1))
    except subprocess.TimeoutExpired:
        build.proc.kill()
        code = 124
    seconds = round(time.monotonic() - build.started, 1)
    wheels = list((work / "dist").glob("llama_cpp_python-*.whl"))
    if code or not wheels:
        report.part("llama_build", "fail", f"pip wheel exited {code}", seconds=seconds, cmake_args=build.cmake_args,
                    log_tail=build.log.read_text(errors="replace")[-2500:])
        return None
    site = work / "llama-site"
    icode, out = run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target", str(site),
                      str(wheels[0])], 120)
    report.part("llama_build", "pass" if icode == 0 else "fail", None if icode == 0 else out[-800:], seconds=seconds,
                cmake_args=build.cmake_args, wheel_mb=round(wheels[0].stat().st_size / 2**20, 1))
    return site if icode == 0 else None


# ---------------------------------------------------------------------------------------------
# the gpu-marked tests
# ---------------------------------------------------------------------------------------------


def gpu_tests(report: Report, env: dict[str, str], work: Path) -> None:
    junit = work / "junit.xml"
    env = dict(env)
    if shutil.which("espeak-ng") is None and (CARRIED / "synthemo" / "train.jsonl").is_file():
        env["EMO_EDGE_SYNTH_DIR"] = str(CARRIED / "synthemo")  # made with the conftest recipe by --prepare
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "-rs", "-s",
           f"--junitxml={junit}", *GPU_TEST_FILES]
    t0 = time.monotonic()
    code, out = run(cmd, TIMEOUTS_S["gpu_tests"], env)
    tests = _junit_cases(junit) if junit.is_file() else []
    counts = {s: sum(t["status"] == s for t in tests) for s in ("pass", "fail", "skipped")}
    if code == 124 or not tests:
        status, reason = "fail", f"pytest exited {code} with {len(tests)} results"
    elif counts["fail"]:
        status, reason = "fail", f"{counts['fail']} failed"
    elif counts["pass"]:
        status, reason = "pass", None
    else:
        status, reason = "skipped", "every gpu test skipped: " + "; ".join(sorted({t["reason"] for t in tests}))
    report.part("gpu_tests", status, reason, seconds=round(time.monotonic() - t0, 1), counts=counts, tests=tests,
                synth_dir=env.get("EMO_EDGE_SYNTH_DIR", "generated by the fixture"),
                output_tail=out[-2500:] if status == "fail" else out[-800:])


def _junit_cases(path: Path) -> list[dict[str, Any]]:
    cases = []
    for case in ET.parse(path).getroot().iter("testcase"):
        status, reason = "pass", None
        for child in case:
            if child.tag in ("failure", "error"):
                status, reason = "fail", (child.get("message") or "")[:500]
            elif child.tag == "skipped":
                status, reason = "skipped", (child.get("message") or "")[:300]
        cases.append({"test": f"{case.get('classname')}::{case.get('name')}", "status": status, "reason": reason,
                      "seconds": float(case.get("time") or 0)})
    return cases


# ---------------------------------------------------------------------------------------------
# a bundle, then llama.cpp GPU vs CPU
# ---------------------------------------------------------------------------------------------


def llm_clips() -> Path | None:
    for d in (CARRIED / "synthemo-llm", CARRIED / "synthemo"):
        if (d / "test.jsonl").is_file():
            return d
    return None


def export_bundle(report: Report, env: dict[str, str], work: Path) -> Path | None:
    data = CARRIED / "synthemo"
    if not (data / "val.jsonl").is_file():
        report.part("bundle", "skipped", f"no clips in {data} (scripts/gpu_check.sh --prepare)")
        return None
    out = work / "bundle"
    code_ = (f"from emo_edge.export.bundle import build_bundle\n"
             f"build_bundle('default', 'cpu-x86', {str(out)!r}, data={str(data)!r}, "
             f"calibration={str(data / 'val.jsonl')!r}, parity_clips=4, force=True, threads={os.cpu_count() or 2})")
    t0 = time.monotonic()
    code, out_text = run([sys.executable, "-c", code_], TIMEOUTS_S["bundle"], env)
    ok = code == 0 and (out / "manifest.json").is_file()
    report.part("bundle", "pass" if ok else "fail", None if ok else f"export exited {code}",
                seconds=round(time.monotonic() - t0, 1), path=str(out), output_tail=out_text[-1500:])
    return out if ok else None


def llama_compare(report: Report, env: dict[str, str], llama_site: Path | None, bundle: Path | None) -> None:
    clips = llm_clips()
    reason = ("llama.cpp CUDA build unavailable (see llama_build)" if llama_site is None else
              "no bundle (see bundle)" if bundle is None else
              "no clips (scripts/gpu_check.sh --prepare)" if clips is None else None)
    if reason:
        report.part("llama_gpu_vs_cpu", "skipped", reason)
        report.part("llama_timing", "skipped", reason)
        return
    env = {**env, "PYTHONPATH": f"{llama_site}{os.pathsep}{env['PYTHONPATH']}"}
    result_file = bundle.parent / "llama_compare.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--llama-compare", str(bundle), str(clips),
           str(result_file)]
    code, out = run(cmd, TIMEOUTS_S["llama_compare"], env)
    if code or not result_file.is_file():
        report.part("llama_gpu_vs_cpu", "fail", f"comparison exited {code}", output_tail=out[-2500:])
        report.part("llama_timing", "skipped", "the comparison failed")
        return
    r = json.loads(result_file.read_text())
    ok = r["gpu_offload"] and r["identical_share"] >= SAME_ANSWERS_MIN
    why = None if ok else ("llama.cpp reports no GPU offload" if not r["gpu_offload"] else
                           f"identical answers {r['identical_share']:.3f} < {SAME_ANSWERS_MIN}")
    report.part("llama_gpu_vs_cpu", "pass" if ok else "fail", why,
                **{k: r[k] for k in ("answers", "identical", "identical_share", "clips", "differing", "gpu_offload")})
    report.part("llama_timing", "pass", None, **r["timing"])


def _compare_main(bundle: Path, clips: Path, out: Path) -> None:
    """In a fresh process with the CUDA llama-cpp-python first on the path: greedy answers and timings."""
    import llama_cpp
    import numpy as np

    from emo_edge.data.features import load_features
    from emo_edge.prompts import suffix
    from emo_edge.runtime.bundle import load_bundle
    from emo_edge.runtime.llm import LlamaCppLM
    from emo_edge.runtime.pipeline import EmotionRuntime

    b = load_bundle(bundle)
    rt = EmotionRuntime(b)
    fs = load_features(clips / "test.jsonl", b.frontend, progress=False, use_cache=False)
    present = np.ones((len(fs), 3), np.float32)
    p = rt.perceive(fs.image, fs.frames, fs.mel, present)
    prompt = b.manifest.prompt
    gguf, n_ctx = b.root / b.plan.llm.file, b.plan.llm.n_ctx
    threads = os.cpu_count() or 2
    answers, timing = {}, {}
    for where, layers in (("gpu", -1), ("cpu", 0)):
        lm = LlamaCppLM(gguf, n_ctx=n_ctx, n_threads=threads, n_gpu_layers=layers)
        got, prefill_s, decode_s, tokens = [], 0.0, 0.0, 0
        for i, rec in enumerate(fs.records):
            for task, limit in (("emotion", 8), ("reason", 96)):
                text = suffix(task, rec.subtitle, prompt["template"], prompt["instructions"], p["evidence"][i])
                t0 = time.perf_counter()
                lm.prefill(lm.prefix_ids(), p["tokens"][i].astype(np.float32), p["token_mask"][i], lm.tokenize(text))
                t1 = time.perf_counter()
                pieces: list[str] = []
                got.append(lm.generate(limit, on_token=pieces.append))  # one piece per streamed token
                prefill_s, decode_s = prefill_s + t1 - t0, decode_s + time.perf_counter() - t1
                tokens += len(pieces)
        lm.close()
        answers[where] = got
        n = len(got)
        timing[where] = {"n_gpu_layers": layers, "n_threads": threads, "prompts": n,
                         "prefill_ms_mean": round(1000 * prefill_s / n, 3),
                         "decode_tok_s": round(tokens / decode_s, 1) if decode_s else None, "decoded_tokens": tokens}
    same = [a == c for a, c in zip(answers["gpu"], answers["cpu"], strict=True)]
    differing = [{"gpu": a, "cpu": c} for a, c, s in zip(answers["gpu"], answers["cpu"], same, strict=True) if not s]
    out.write_text(json.dumps({
        "gpu_offload": bool(llama_cpp.llama_supports_gpu_offload()), "clips": len(fs), "answers": len(same),
        "identical": sum(same), "identical_share": sum(same) / len(same), "differing": differing[:10],
        "timing": {"model": b.plan.llm.file, **timing}}, indent=2))


def prepare_data(carried: Path) -> None:
    """Here, with espeak-ng: the test suite's SynthEmo set (tests/conftest.py's recipe) and the llama.cpp clips."""
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import SYNTH_SEED, SYNTH_SPLITS, SYNTH_VERSION

    from emo_edge.data.synth import generate

    for split, n in SYNTH_SPLITS:
        generate(carried / "synthemo", n, seed=SYNTH_SEED, split=split, workers=2, progress=False,
                 version=SYNTH_VERSION)
    generate(carried / "synthemo-llm", LLM_CLIPS, seed=11, split="test", workers=2, progress=False)


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("json", nargs="?", help="results file (default $OUT/gpu_check.json, else ./gpu_check.json)")
    ap.add_argument("--dry-run", action="store_true", help="record the environment; every other part is skipped")
    ap.add_argument("--llama-compare", nargs=3, metavar=("BUNDLE", "CLIPS", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--prepare-data", metavar="DIR", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.prepare_data:
        prepare_data(Path(args.prepare_data))
        return 0
    if args.llama_compare:
        _compare_main(*(Path(a) for a in args.llama_compare))
        return 0
    default = Path(os.environ["OUT"]) / "gpu_check.json" if os.environ.get("OUT") else Path("gpu_check.json")
    report = Report(Path(args.json) if args.json else default, args.dry_run)
    env_info = environment()
    report.part("environment", "pass", None, **env_info)
    parts = ("install", "llama_build", "gpu_tests", "bundle", "llama_gpu_vs_cpu", "llama_timing")
    if args.dry_run:
        for name in parts:
            report.part(name, "skipped", "dry run")
        return 0
    work = Path(os.environ.get("GPU_CHECK_WORK", "/tmp/emo-edge-gpu-check"))
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = install(report, work / "site")
    build = start_llama_build(report, env_info, work)  # compiles while the tests run
    gpu_tests(report, env, work)
    if env_info.get("cuda_available"):
        bundle = export_bundle(report, env, work)
    else:
        bundle = None
        report.part("bundle", "skipped", "only the llama.cpp parts need it, and they need CUDA")
    llama_site = finish_llama_build(report, build, work)
    llama_compare(report, env, llama_site, bundle)
    statuses = [p["status"] for p in report.data["parts"].values()]
    report.data["summary"] = {s: statuses.count(s) for s in ("pass", "fail", "skipped")}
    report.data["within_budget"] = report.elapsed() <= BUDGET_S
    report.write()
    print(json.dumps(report.data["summary"]), f"-> {report.path}")
    return 1 if "fail" in statuses else 0


if __name__ == "__main__":
    sys.exit(main())
