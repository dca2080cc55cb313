"""Export the full-size `paper` image encoder (EVA-g-sized ViT: width 1408, 40 layers, 224 px / patch 14; ~1.0 B
parameters, ~4 GB of fp32 weights) with RANDOM weights through the exporter's own `export_graph`, so its weights
go to ONNX's external-data format, then check parity against eager PyTorch on ONNX Runtime's CPU provider.

Writes OUT/image_encoder.onnx (+ .data) and OUT/report.json: seconds per step, file sizes, parity. Run through
scripts/export_paper_image_encoder.sh, which adds the peak RSS (/usr/bin/time -v).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from emo_edge.config import load_preset
from emo_edge.export.onnx_export import compare, eager, export_graph, external_data_path, versions
from emo_edge.model.perception import ImageEncoder
from emo_edge.runtime.io_spec import build_io_spec, dummy_inputs


class ImageStage(nn.Module):
    """Just the image encoder behind the stage method the exporter calls (the rest of `paper` is not built)."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.image_encoder = encoder

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:  # (B, 3, S, S) -> (B, G*G, Wi)
        return self.image_encoder(image)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/export/paper-image-encoder"))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    cfg = load_preset("paper").model
    graph = build_io_spec(cfg, llm_width=cfg.llm.hidden).graphs["image_encoder"]
    t: dict[str, float] = {}
    t0 = time.perf_counter()
    torch.manual_seed(0)
    stage = ImageStage(ImageEncoder(cfg)).eval()  # random weights: the cost of the graph, not its accuracy
    n_params = sum(p.numel() for p in stage.parameters())
    t["build_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    path = args.out / graph.filename
    export_graph(stage, graph, path)  # checker included
    t["export_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    parity = parity_check(stage, graph, path, args.threads)
    t["parity_s"] = time.perf_counter() - t0
    data = external_data_path(path)
    report = {"model": "paper image_encoder (RANDOM weights)", "params": n_params, "seconds": t,
              "files": {path.name: path.stat().st_size, data.name: data.stat().st_size if data.is_file() else None},
              "parity": parity, "versions": versions()}
    (args.out / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


def parity_check(stage: nn.Module, graph, path: Path, threads: int) -> dict:
    """ONNX Runtime (CPU, the graph's own session: it reads the external data next to it) vs eager, batch 1 and 2."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    out = {}
    for b in (1, 2):
        feeds = dummy_inputs(graph, b, seed=b)
        got = dict(zip(graph.output_names, sess.run(graph.output_names, feeds), strict=True))
        out[f"batch_{b}"] = compare(got, eager(stage, graph, feeds))
    out["max_rel_err"] = max(v["max_rel_err"] for b in out.values() for v in b.values())
    assert np.isfinite(out["max_rel_err"])
    return out


if __name__ == "__main__":
    main()
