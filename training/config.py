"""Typed training configuration: dataclasses loaded from YAML, with `key=value` overrides.

A preset is a YAML file whose sections mirror `TrainConfig`. Unknown keys and wrong types are
errors that name the key (`ConfigError`), so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ConfigDict, TypeAdapter, ValidationError
from pydantic.dataclasses import dataclass

from serving.files import read_yaml_mapping

_STRICT = ConfigDict(extra="forbid")

Method = Literal["qlora", "lora", "full"]
Objective = Literal["classify", "generate"]
Pooling = Literal["auto", "mean", "cls", "last"]
Precision = Literal["auto", "bf16", "fp16", "fp32"]


class ConfigError(ValueError):
    """A configuration problem, with a one-line message naming the key."""


@dataclass(config=_STRICT)
class ModelConfig:
    base_model: str = "sentence-transformers/all-MiniLM-L6-v2"  # HF id or local directory
    # classify: a classification head (one forward pass); generate: a causal LM instruction-tuned
    # with TRL to write the intent, served as label probabilities (training.generative)
    objective: Objective = "classify"
    method: Method = "full"  # qlora: 4-bit base + LoRA; lora: LoRA on a 16/32-bit base; full
    pooling: Pooling = "auto"  # auto: mean for encoders (BERT), last token for decoders (Llama)
    max_length: int = 64  # tokens; customer queries are short
    precision: Precision = "auto"  # compute dtype; auto: bf16 on a capable GPU, fp32 on CPU
    gradient_checkpointing: bool = False
    # an encoder's export also writes model.onnx, checked (the CPU engine, serving.onnx_engine);
    # false: vLLM serves it only (saves the export's seconds, e.g. the demo's two trainings)
    onnx_export: bool = True
    # optim.head_init=grow: the base model's label -> its name here (a renamed intent keeps its row)
    label_renames: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclass(config=_STRICT)
class LoraSettings:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: str | list[str] = "all-linear"


@dataclass(config=_STRICT)
class QuantizationSettings:
    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = True


@dataclass(config=_STRICT)
class DataSettings:
    dataset: str = "data/sample"  # path, or `banking77` / `clinc150` / a Hugging Face id
    validation_fraction: float = 0.1  # carved (stratified) from train when there is none
    seed: int = 42
    # the label map in this order (ids 0..n-1), e.g. a retrain that grows a model's head; the data
    # may not use other labels. None: the train split's labels, sorted
    labels: list[str] | None = None
    # JSON Lines of {"text", "probabilities": {label: p}} for train texts that learn a teacher's
    # distribution instead of their label (distillation; training.soft_targets). None: labels only
    soft_targets: str | None = None


@dataclass(config=_STRICT)
class OptimSettings:
    epochs: float = 3.0
    max_steps: int = -1  # > 0 overrides epochs (tests, smoke runs)
    batch_size: int = 32
    eval_batch_size: int = 128
    gradient_accumulation: int = 1
    learning_rate: float = 5e-5
    head_learning_rate: float | None = None  # classifier head (+ pooler); None: learning_rate
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    lr_scheduler: Literal["cosine", "linear", "constant_with_warmup"] = "cosine"
    label_smoothing: float = 0.0
    # linear_probe: LP-FT warm start; grow: keep the base classifier's head rows by label name and
    # fit rows for the labels it lacks on frozen features (training.head_growth)
    head_init: Literal["random", "linear_probe", "grow"] = "random"
    early_stopping_patience: int = 0  # evaluations without macro-F1 gain; 0: off
    select_best: bool = True  # keep the checkpoint best on validation macro-F1; false: the last
    # Both read the validation split, and on a small one its macro-F1 is noise: a cold start's
    # validation split of 77 texts (one per Banking77 intent) moves 1.3 points per text, stopped a
    # retrain after 3 of 6 epochs and cost it 1.7 test points (docs/BENCHMARKS.md). Below this many
    # validation texts training runs its epochs and keeps the last weights.
    min_validation_for_selection: int = 500
    evals_per_epoch: int = 1
    logging_steps: int = 20
    optimizer: str = "auto"  # auto: paged_adamw_8bit for qlora on GPU, adamw_torch otherwise
    seed: int = 42

    def selection(self, validation_examples: int) -> tuple[bool, int]:
        """(keep the checkpoint best on validation, early-stopping patience) for a validation
        split of this many texts: neither when it is too small to tell checkpoints apart."""
        if validation_examples < self.min_validation_for_selection:
            return False, 0
        return self.select_best or self.early_stopping_patience > 0, self.early_stopping_patience


@dataclass(config=_STRICT)
class ContrastiveSettings:
    """The contrastive stage before the head (training.contrastive): SetFit's first step. The
    defaults were chosen on a validation pool carved from Banking77's training split (10 labelled
    examples per intent; docs/BENCHMARKS.md, "Few-shot start"), never on a test split."""

    # auto: on for a mean-pooled encoder trained from its pretrained weights (not a champion
    # continued, optim.head_init=grow; not 4-bit, method=qlora) in one process, when the train
    # split's median intent has at most `max_per_intent` examples (few labels); off otherwise.
    # always / never: forced ("on"/"off" would read as YAML booleans)
    mode: Literal["auto", "always", "never"] = "auto"
    max_per_intent: int = 32
    # in_batch: (text, same-intent text) pairs, the batch's other intents as negatives
    # (MultipleNegativesRankingLoss); pairs: SetFit's balanced pairs (CosineSimilarityLoss)
    loss: Literal["pairs", "in_batch"] = "in_batch"
    rounds: int = 4  # pairs per labelled text (one positive and, for `pairs`, one negative each)
    # fewer rounds when there are more texts, at least one: the stage's time stays bounded (about
    # 100 steps at batch 32; a cold-start retrain has twice the first champion's labels)
    max_pairs: int = 3200
    # after the stage: keep the linear probe fitted on the trained body as the head (false:
    # SetFit's second stage, no fine-tuning), or fine-tune the whole classifier as `optim` says
    # (true). Banking77, 10 per intent, seed 42, validation pool (benchmarks/few_shot.py): 83.55%
    # probe head, 81.65% fine-tuned after the stage, 81.20% without the stage
    fine_tune: bool = False
    epochs: float = 1.0
    batch_size: int = 32
    learning_rate: float = 2e-5


@dataclass(config=_STRICT)
class TrainConfig:
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    lora: LoraSettings = dataclasses.field(default_factory=LoraSettings)
    quantization: QuantizationSettings = dataclasses.field(default_factory=QuantizationSettings)
    data: DataSettings = dataclasses.field(default_factory=DataSettings)
    optim: OptimSettings = dataclasses.field(default_factory=OptimSettings)
    contrastive: ContrastiveSettings = dataclasses.field(default_factory=ContrastiveSettings)
    output_dir: str = "runs/model"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload,no-any-return]


_ADAPTER = TypeAdapter(TrainConfig)


def _set_dotted(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {dotted!r}: {part!r} is not a section")
        node = child
    node[leaf] = value


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """`["optim.learning_rate=3e-5", "model.method=lora"]` -> nested dict (values parsed as YAML)."""
    tree: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not of the form section.key=value")
        _set_dotted(tree, key.strip(), yaml.safe_load(raw) if raw.strip() else None)
    return tree


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _first_error(err: ValidationError) -> str:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "<root>"
    if first["type"] == "unexpected_keyword_argument" or first["type"] == "extra_forbidden":
        return f"unknown config key {key!r}"
    return f"config key {key!r}: {first['msg']} (got {first.get('input')!r})"


def build_config(data: Mapping[str, Any], overrides: Iterable[str] = ()) -> TrainConfig:
    merged = _merge(dict(data), parse_overrides(overrides))
    try:
        return _ADAPTER.validate_python(merged)
    except ValidationError as err:
        raise ConfigError(_first_error(err)) from None


def load_config(path: str | Path | None, overrides: Iterable[str] = ()) -> TrainConfig:
    """Load a YAML preset (or the defaults when `path` is None) and apply overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        data = read_yaml_mapping(path, ConfigError, what="config file", expected="a mapping of sections")
    return build_config(data, overrides)


def dump_config(config: TrainConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
