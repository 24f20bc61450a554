"""A QLoRA export stays on the GPU it was trained on, for both objectives.

The merge reloads the base unquantized; loaded without a device it landed on the CPU, and the
export's evaluation ran there: on an H200, label scoring of a Llama-3.2-1B export took 4.8 s per
text instead of 0.08 s (docs/BENCHMARKS.md "QLoRA on GPU"). Skipped without CUDA.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from training.config import load_config
from training.data.types import LabelMap
from training.export import merged_model
from training.generative import build_causal_lm, merged_causal_lm
from training.modeling import apply_lora, build_classifier

pytestmark = pytest.mark.gpu
REPO = Path(__file__).resolve().parents[1]


def _device(model: object) -> str:
    return next(model.parameters()).device.type  # type: ignore[attr-defined]


def test_a_qlora_classifier_merges_on_the_gpu(tiny_llama: Path) -> None:
    cfg = load_config(REPO / "configs" / "llama-3.2-1b-qlora.yaml", [f"model.base_model={tiny_llama}"])
    built = build_classifier(cfg.model, cfg.quantization, LabelMap(("billing", "tech_support")))
    apply_lora(built, cfg.model, cfg.lora)
    assert _device(built.model) == "cuda"
    assert _device(merged_model(built, built.model, "qlora")) == "cuda"


def test_a_qlora_causal_lm_merges_on_the_gpu(tiny_llama: Path) -> None:
    cfg = load_config(
        REPO / "configs" / "llama-3.2-1b-qlora-generate.yaml", [f"model.base_model={tiny_llama}"]
    )
    model, _, base_path, dtype = build_causal_lm(cfg)
    assert _device(model) == "cuda"
    assert _device(merged_causal_lm(model, base_path, "qlora", dtype)) == "cuda"
