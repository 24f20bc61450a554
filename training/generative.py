"""`objective: generate`: instruction fine-tuning with TRL's `SFTTrainer`, the model writes the intent.

The same pipeline as the classification head (`training.train`), step for step: data -> model ->
train -> export (merge) -> evaluate, with the same `method: qlora | lora | full`, data layer,
validation macro-F1 (best checkpoint, early stopping) and merged export. What differs:

- the model is the base causal LM (no head); each example is a prompt-completion pair: the
  instruction listing the intents with their descriptions and the query, then the intent and EOS
  (`serving.label_scoring`); the loss is on the completion only (TRL's `completion_mask`);
- validation macro-F1 scores every label's tokens given the prompt (`LabelScorer`): the argmax of
  the label probabilities, which is what the served engine returns, not free generation;
- the export is a `*ForCausalLM` directory with the label map in `config.json` and the prompt in
  `generative.json`; `serving.factory.open_engine` serves it with `serving.generative`.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    BitsAndBytesConfig,
    EarlyStoppingCallback,
    PreTrainedModel,
    TrainerCallback,
    set_seed,
)

from serving.label_scoring import GENERATIVE_FILE, OBJECTIVE_CONFIG_KEY, IntentPrompt, PromptTokens
from training.config import TrainConfig, dump_config
from training.data import IntentDataset, Split, load_configured
from training.data.types import OOS_LABEL
from training.evaluate import split_metrics, write_evaluation
from training.export import write_baseline, write_fewshot, write_json, write_routes
from training.generative_scoring import LabelScorer
from training.metrics import compute_metrics
from training.model_card import write_model_card
from training.modeling import (
    ModelLoadError,
    compute_dtype,
    load_tokenizer,
    lora_targets,
    process_device,
    resolve_base_model,
)
from training.run_facts import is_first_process, training_facts
from training.thresholds import choose_oos_threshold

log = logging.getLogger(__name__)


def train_generative(
    config: TrainConfig, *, resume: str | bool | None = None, progress: bool = True
) -> tuple[Path, dict[str, Any]]:
    """The `objective: generate` counterpart of `training.train.train`: the model dir and metrics."""
    if config.optim.head_init != "random":
        raise ValueError("optim.head_init applies to the classification head; objective=generate has none")
    out = Path(config.output_dir)
    set_seed(config.optim.seed)
    started = time.perf_counter()

    # 1. Data: read, validate, split; the labels and their descriptions make the instruction.
    data = load_configured(config.data)

    # 2. Model: the base causal LM (4-bit for qlora) + LoRA; the prompt's tokens for its tokenizer.
    model, tokenizer, base_path, dtype = build_causal_lm(config)
    prompt = IntentPrompt(tuple(data.label_map.labels), dict(data.descriptions), config.model.max_length)
    tokens = PromptTokens(prompt, tokenizer)  # PromptError on labels that cannot be scored

    # 3. Train: SFT on prompt-completion pairs, loss on the completion; best on validation macro-F1.
    trainer = _sft_trainer(config, model, tokenizer, tokens, data, out / "checkpoints", dtype, progress)
    train_output = trainer.train(resume_from_checkpoint=resume)
    train_seconds = time.perf_counter() - started
    if not is_first_process():  # under torchrun (DDP) the first process exports and evaluates alone
        return out, {}

    # 4. Export: merge the adapter into 16/32-bit weights; label map, prompt, routes, examples.
    merged = merged_causal_lm(trainer.model, base_path, config.model.method, dtype)
    save_generative_dir(merged, tokenizer, tokens, data, out)
    write_routes(data.routes, out)
    write_fewshot(data, out, seed=config.data.seed)
    dump_config(config, out / "config.yaml")

    # 5. Evaluate the exported weights by label scoring; model card.
    metrics = evaluate_generative(merged, tokens, data, out, progress=progress)
    metrics["training"] = {
        **training_facts(config, data, train_output, train_seconds),
        "pooling": "none",
    }
    write_json(out / "metrics.json", metrics)
    write_model_card(out, config, data, metrics)
    return out, metrics


def _eval_strategy(config: TrainConfig, n_train: int) -> dict[str, Any]:
    """Evaluate (and save) each epoch, or `evals_per_epoch` times, as the head's trainer does."""
    opt = config.optim
    steps_per_epoch = max(1, n_train // (opt.batch_size * opt.gradient_accumulation))
    if not (opt.evals_per_epoch > 1 or 0 < opt.max_steps < steps_per_epoch):
        return {"eval_strategy": "epoch", "save_strategy": "epoch"}
    every = max(1, steps_per_epoch // max(1, opt.evals_per_epoch))
    if opt.max_steps > 0:
        every = min(every, opt.max_steps)
    return {"eval_strategy": "steps", "save_strategy": "steps", "eval_steps": every, "save_steps": every}


def build_causal_lm(config: TrainConfig) -> tuple[Any, Any, str, torch.dtype]:
    """The base causal LM (4-bit NF4 for qlora) with LoRA for qlora/lora, and its tokenizer."""
    cfg = config.model
    base_path = resolve_base_model(cfg.base_model)
    try:
        base_config = AutoConfig.from_pretrained(base_path)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"cannot load base model {cfg.base_model!r}: {err}") from None
    if not any(a.endswith("ForCausalLM") for a in base_config.architectures or []):
        raise ModelLoadError(f"objective=generate needs a causal LM base; {cfg.base_model!r} is not one")
    dtype = compute_dtype(cfg.precision)
    tokenizer = load_tokenizer(base_path)
    kwargs: dict[str, Any] = {"dtype": dtype if cfg.method != "full" else torch.float32}
    if cfg.method == "qlora":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type=config.quantization.quant_type,
            bnb_4bit_use_double_quant=config.quantization.double_quant,
            bnb_4bit_compute_dtype=dtype,
        )
        kwargs["device_map"] = {"": process_device()}  # one GPU per process under DDP
    model = AutoModelForCausalLM.from_pretrained(base_path, **kwargs)
    model.config.pad_token_id = tokenizer.pad_token_id
    if cfg.method == "full":
        if cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        return model, tokenizer, base_path, dtype

    from peft import LoraConfig, TaskType, get_peft_model, prepare_model_for_kbit_training

    if cfg.method == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    elif cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    peft_config = LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=config.lora.r,
        lora_alpha=config.lora.alpha,
        lora_dropout=config.lora.dropout,
        target_modules=lora_targets(model, config.lora.target_modules, ["lm_head"]),
    )
    return get_peft_model(model, peft_config), tokenizer, base_path, dtype


def sft_examples(split: Split, data: IntentDataset, tokens: PromptTokens) -> Dataset:
    """Pre-tokenised prompt-completion pairs: `input_ids` and the `completion_mask` TRL turns into
    labels (-100 on the prompt). Built piece by piece, exactly as the engine scores them."""
    index = {label: i for i, label in enumerate(tokens.prompt.labels)}
    ids, masks = [], []
    for text, label in zip(split.texts, split.labels, strict=True):
        prompt = tokens.prompt_ids(text)
        answer = list(tokens.label_ids[index[label]])
        ids.append(prompt + answer)
        masks.append([0] * len(prompt) + [1] * len(answer))
    return Dataset.from_dict({"input_ids": ids, "completion_mask": masks})


class LabelScoringEval(TrainerCallback):
    """Adds `eval_macro_f1` / `eval_accuracy` (label scoring on validation) to each evaluation's
    metrics, before best-checkpoint selection and early stopping read them."""

    def __init__(self, tokens: PromptTokens, split: Split, labels: list[str], progress: bool) -> None:
        self.tokens, self.split, self.labels, self.progress = tokens, split, labels, progress
        self.model: Any = None

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: Any = None, **kwargs: Any) -> None:
        model = kwargs.get("model") or self.model
        if metrics is None or model is None:
            return
        index = {label: i for i, label in enumerate(self.labels)}
        probs = LabelScorer(model, self.tokens).probabilities(self.split.texts, progress=self.progress)
        y_true = [index[label] for label in self.split.labels]
        scores = compute_metrics(torch.tensor(y_true).numpy(), probs, self.labels)
        metrics["eval_macro_f1"] = scores["macro_f1"]
        metrics["eval_accuracy"] = scores["accuracy"]


def _sft_trainer(
    config: TrainConfig,
    model: Any,
    tokenizer: Any,
    tokens: PromptTokens,
    data: IntentDataset,
    ckpt_dir: Path,
    dtype: torch.dtype,
    progress: bool,
) -> Any:
    from trl import SFTConfig, SFTTrainer

    opt = config.optim
    on_gpu = torch.cuda.is_available()
    optim = opt.optimizer
    if optim == "auto":
        optim = "paged_adamw_8bit" if config.model.method == "qlora" and on_gpu else "adamw_torch"
    select_best, patience = opt.selection(len(data.validation))
    args = SFTConfig(
        output_dir=str(ckpt_dir),
        per_device_train_batch_size=opt.batch_size,
        per_device_eval_batch_size=opt.eval_batch_size,
        gradient_accumulation_steps=opt.gradient_accumulation,
        num_train_epochs=opt.epochs,
        max_steps=opt.max_steps,
        learning_rate=opt.learning_rate,
        weight_decay=opt.weight_decay,
        warmup_steps=opt.warmup_ratio,
        lr_scheduler_type=opt.lr_scheduler,
        optim=optim,
        bf16=on_gpu and dtype == torch.bfloat16,
        fp16=on_gpu and dtype == torch.float16,
        load_best_model_at_end=select_best,
        metric_for_best_model="macro_f1",
        greater_is_better=True,
        save_total_limit=2,
        logging_steps=opt.logging_steps,
        seed=opt.seed,
        data_seed=opt.seed,
        report_to="none",
        disable_tqdm=not progress,
        dataloader_num_workers=0,
        use_cpu=not on_gpu,
        # the examples come tokenised (prompt + answer fit by construction): no truncation, no packing
        max_length=None,
        packing=False,
        completion_only_loss=True,
        include_num_input_tokens_seen="non_padding",  # training tokens/s in metrics.json, as the head
        **_eval_strategy(config, len(data.train)),
    )
    scorer = LabelScoringEval(tokens, data.validation, list(data.label_map.labels), progress)
    callbacks: list[TrainerCallback] = [scorer]  # before early stopping: it reads eval_macro_f1
    if patience > 0:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=patience))
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=sft_examples(data.train, data, tokens),
        eval_dataset=sft_examples(data.validation, data, tokens),
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    scorer.model = trainer.model
    return trainer


def merged_causal_lm(trained: Any, base_path: str, method: str, dtype: torch.dtype) -> PreTrainedModel:
    """The trained causal LM as plain transformers weights (qlora: the base reloaded unquantized)."""
    if method == "full":
        return trained  # type: ignore[no-any-return]
    if method == "lora":
        return trained.merge_and_unload()  # type: ignore[no-any-return]
    from peft import PeftModel

    load_dtype = torch.bfloat16 if dtype == torch.bfloat16 else torch.float32
    with tempfile.TemporaryDirectory() as tmp:
        trained.save_pretrained(tmp)
        # on the training device: the export is evaluated (label scoring) where it was trained
        base = AutoModelForCausalLM.from_pretrained(
            base_path, dtype=load_dtype, device_map={"": process_device()}
        )
        merged = PeftModel.from_pretrained(base, tmp).merge_and_unload()
    return merged  # type: ignore[no-any-return]


def save_generative_dir(
    model: PreTrainedModel, tokenizer: Any, tokens: PromptTokens, data: IntentDataset, out: Path
) -> Path:
    """The merged causal LM + tokenizer, the label map in `config.json` (so `read_model_info`, the
    registry and the router read it like a head model's) and the prompt in `GENERATIVE_FILE`."""
    out.mkdir(parents=True, exist_ok=True)
    labels = data.label_map
    model.config.id2label = dict(labels.id2label)
    model.config.label2id = dict(labels.label2id)
    model.config.pad_token_id = tokenizer.pad_token_id
    setattr(model.config, OBJECTIVE_CONFIG_KEY, "generate")
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    prompt = IntentPrompt(
        tokens.prompt.labels,
        tokens.prompt.descriptions,
        tokens.prompt.max_query_tokens,
        max_sequence_tokens=tokens.max_sequence_length(),
    )
    write_json(out / GENERATIVE_FILE, prompt.to_json())
    return out


def evaluate_generative(
    model: Any, tokens: PromptTokens, data: IntentDataset, out: Path, *, progress: bool = True
) -> dict[str, Any]:
    """Validation and test metrics of the exported weights by label scoring (the head's
    `evaluate_export`, with the out-of-scope threshold and the drift baseline)."""
    labels = list(tokens.prompt.labels)
    index = {label: i for i, label in enumerate(labels)}
    scorer = LabelScorer(model, tokens)
    evaluated = {
        name: (
            torch.tensor([index[label] for label in split.labels]).numpy(),
            scorer.probabilities(split.texts, progress=progress),
        )
        for name, split in (("validation", data.validation), ("test", data.test))
        if split is not None
    }
    metrics: dict[str, Any] = {}
    if data.has_oos:
        metrics["oos_threshold"] = choose_oos_threshold(
            evaluated["validation"][1], evaluated["validation"][0], labels.index(OOS_LABEL)
        )
    threshold = metrics["oos_threshold"]["threshold"] if data.has_oos else None
    for name, (y_true, probs) in evaluated.items():
        metrics[name] = split_metrics(y_true, probs, labels, oos_threshold=threshold)
    write_baseline(
        data.train.labels, labels, out,
        validation_probs=evaluated["validation"][1],
        accuracy=metrics["validation"].get("accuracy"),
    )  # fmt: skip
    split = "test" if data.test is not None else "validation"
    write_evaluation(metrics[split], labels, out, title=f"{data.name} ({split})")
    return metrics
