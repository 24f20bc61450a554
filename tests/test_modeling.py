"""The QLoRA model really is 4-bit NF4 + LoRA with an fp32 head; pooling and pad token rules."""

from __future__ import annotations

from pathlib import Path

import bitsandbytes as bnb
import pytest
import torch

from training.config import LoraSettings, ModelConfig, QuantizationSettings
from training.data import LabelMap
from training.modeling import ModelLoadError, apply_lora, build_classifier, load_classifier

LABELS = LabelMap.from_labels(["billing", "cancel", "outage"])


def test_qlora_builds_nf4_base_lora_and_fp32_head(tiny_llama: Path) -> None:
    cfg = ModelConfig(base_model=str(tiny_llama), method="qlora")
    built = build_classifier(cfg, QuantizationSettings(), LABELS)
    assert built.pooling == "last"
    assert built.tokenizer.pad_token is not None
    assert built.model.config.pad_token_id == built.tokenizer.pad_token_id
    apply_lora(built, cfg, LoraSettings(r=4, alpha=8))

    four_bit = [m for m in built.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(four_bit) == 2 * 7  # q k v o gate up down, in each of the 2 layers
    weight = four_bit[0].weight
    assert weight.quant_state.quant_type == "nf4"
    assert weight.quant_state.nested  # double quantization
    trainable = {n for n, p in built.model.named_parameters() if p.requires_grad}
    assert any("lora_A" in n for n in trainable) and any("lora_B" in n for n in trainable)
    head = [p for n, p in built.model.named_parameters() if "score" in n and p.requires_grad]
    assert head and all(p.dtype == torch.float32 for p in head)
    assert not any(isinstance(m, bnb.nn.Linear4bit) for n, m in built.model.named_modules() if "score" in n)
    # frozen base: nothing but LoRA and the head learns
    assert all("lora_" in n or "score" in n for n in trainable)


def test_lora_on_minilm_targets_encoder_linears_not_the_head() -> None:
    cfg = ModelConfig(method="lora")
    built = build_classifier(cfg, QuantizationSettings(), LABELS)
    assert built.pooling == "mean"
    apply_lora(built, cfg, LoraSettings())
    trainable = [n for n, p in built.model.named_parameters() if p.requires_grad]
    assert any("query.lora_A" in n for n in trainable)
    assert any("classifier" in n for n in trainable) and any("pooler" in n for n in trainable)
    assert not any("classifier.lora" in n or "pooler.dense.lora" in n for n in trainable)


def test_pooling_rules(tiny_llama: Path) -> None:
    with pytest.raises(ModelLoadError, match="decoders"):
        build_classifier(
            ModelConfig(base_model=str(tiny_llama), pooling="mean"), QuantizationSettings(), LABELS
        )
    with pytest.raises(ModelLoadError, match="encoders"):
        build_classifier(ModelConfig(pooling="last"), QuantizationSettings(), LABELS)


def test_load_classifier_rejects_non_models(tmp_path: Path, tiny_llama: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"no config\.json"):
        load_classifier(tmp_path)
    with pytest.raises(ModelLoadError, match="not a classifier"):
        load_classifier(tiny_llama)  # a base LM, not a classifier
