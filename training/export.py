"""Export = merge: a self-contained model directory that transformers and vLLM both load.

LoRA on vLLM classification models is not dependable; merged weights are. For QLoRA the base is
reloaded in 16/32-bit (never the 4-bit weights), the adapter applied and `merge_and_unload()`ed.
"""

from __future__ import annotations

import json
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedModel

from serving.model_dir import BASELINE_FILE, FEWSHOT_FILE, Baseline, FewShotExamples
from training.baselines.examples import texts_by_intent
from training.data import IntentDataset
from training.modeling import POOLING_CONFIG_KEY, BuiltModel, classifier_class, process_device

FEWSHOT_PER_INTENT = 50  # enough for any `escalation_shots` the router accepts (at most 50)

# vLLM reads the pooling of a checkpoint from its sentence-transformers module list. It also
# derives `use_activation` (softmax over the classify logits) from a Normalize module being
# listed, so the list names one; without it `vllm serve` would return raw logits as "probs".
_ST_MODULES = [
    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
    {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    {
        "idx": 2,
        "name": "2",
        "path": "2_Normalize",
        "type": "sentence_transformers.models.Normalize",
    },
]


def merged_model(built: BuiltModel, trained: nn.Module, method: str) -> PreTrainedModel:
    """The trained classifier as plain transformers weights (no adapter, no 4-bit layers)."""
    if method == "full":
        return trained  # type: ignore[return-value]
    if method == "lora":
        return trained.merge_and_unload()  # type: ignore[operator,no-any-return]
    # qlora: save the adapter, reload the base unquantized, apply and merge
    from peft import PeftModel

    dtype = torch.bfloat16 if built.dtype == torch.bfloat16 else torch.float32
    config: Any = trained.config
    with tempfile.TemporaryDirectory() as tmp:
        trained.save_pretrained(tmp)  # type: ignore[operator]
        base = classifier_class(built.pooling).from_pretrained(
            built.base_path,
            num_labels=config.num_labels,
            id2label=config.id2label,
            label2id=config.label2id,
            pad_token_id=config.pad_token_id,
            dtype=dtype,
            device_map={"": process_device()},  # the export is evaluated where it was trained
        )
        merged = PeftModel.from_pretrained(base, tmp).merge_and_unload()
    return merged  # type: ignore[no-any-return]


def _architecture(model: PreTrainedModel, pooling: str) -> str:
    # the mean-pooling subclass is saved under the stock name; vLLM picks MEAN from modules.json
    return "BertForSequenceClassification" if pooling == "mean" else type(model).__name__


def save_model_dir(built: BuiltModel, model: PreTrainedModel, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    model.config.pad_token_id = built.tokenizer.pad_token_id
    setattr(model.config, POOLING_CONFIG_KEY, built.pooling)
    model.save_pretrained(out_dir, safe_serialization=True)
    # save_pretrained writes the Python class name; vLLM needs the stock architecture name
    config_file = out_dir / "config.json"
    config = json.loads(config_file.read_text())
    config["architectures"] = [_architecture(model, built.pooling)]
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    built.tokenizer.save_pretrained(out_dir)
    if built.pooling in ("mean", "cls"):
        write_pooling_files(out_dir, model.config.hidden_size, built.pooling)
    return out_dir


def write_pooling_files(out_dir: Path, hidden_size: int, pooling: str) -> None:
    (out_dir / "modules.json").write_text(json.dumps(_ST_MODULES, indent=2))
    pool_dir = out_dir / "1_Pooling"
    pool_dir.mkdir(exist_ok=True)
    pool_cfg = {
        "word_embedding_dimension": hidden_size,
        "pooling_mode_cls_token": pooling == "cls",
        "pooling_mode_mean_tokens": pooling == "mean",
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
    }
    (pool_dir / "config.json").write_text(json.dumps(pool_cfg, indent=2))
    (out_dir / "2_Normalize").mkdir(exist_ok=True)


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_fewshot(
    data: IntentDataset, out_dir: Path, *, seed: int, per_intent: int = FEWSHOT_PER_INTENT
) -> Path:
    """Ship few-shot examples with the model (`serving.model_dir.FEWSHOT_FILE`): up to
    `per_intent` seeded training texts of each intent and the intent descriptions, so the router's
    cascade mode builds its LLM prompt from the model directory and never loads a dataset."""
    rng = random.Random(seed)
    sample = {
        label: rng.sample(texts, min(per_intent, len(texts)))
        for label, texts in sorted(texts_by_intent(data.train).items())
    }
    examples = FewShotExamples(sample, dict(data.descriptions), seed=seed, source=data.name)
    path = out_dir / FEWSHOT_FILE
    write_json(path, examples.to_json())
    return path


def write_baseline(
    train_labels: list[str],
    labels: list[str],
    out_dir: Path,
    *,
    validation_probs: Any = None,
    accuracy: float | None = None,
) -> Path:
    """Ship the drift baseline with the model (`serving.model_dir.BASELINE_FILE`): each intent's
    share of the training split (the prior the router's intent-mix drift compares with), and the
    percentiles of validation's top-1 probability (the expected share under any threshold)."""
    counts = {label: 0 for label in labels}
    for label in train_labels:
        counts[label] = counts.get(label, 0) + 1
    total = max(1, len(train_labels))
    quantiles: tuple[float, ...] = ()
    if validation_probs is not None and len(validation_probs):
        top1 = np.asarray(validation_probs, dtype=np.float64).max(axis=1)
        quantiles = tuple(round(float(q), 6) for q in np.quantile(top1, np.linspace(0.0, 1.0, 101)))
    baseline = Baseline(
        {label: round(n / total, 6) for label, n in counts.items()}, quantiles,
        None if accuracy is None else float(accuracy),
    )  # fmt: skip
    path = out_dir / BASELINE_FILE
    write_json(path, baseline.to_json())
    return path


def write_routes(routes: dict[str, str], out_dir: Path) -> None:
    """Ship the dataset's route map (intent -> department) with the model."""
    import yaml

    if routes:
        text = "# intent -> route (department), from the training dataset\n"
        (out_dir / "routes.yaml").write_text(text + yaml.safe_dump({"routes": routes}, sort_keys=True))
