"""`switchboard train`: data -> model -> train -> export (merge) -> evaluate, in that order.

The output directory holds the merged model (vLLM-loadable), its tokenizer and label map,
`metrics.json` (validation and test), the resolved `config.yaml`, a model card `README.md`,
`confusion_matrix.png`, the route map when the dataset has one, and `checkpoints/` (resumable).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from datasets import Dataset
from transformers import (
    DataCollatorWithPadding,
    EarlyStoppingCallback,
    PreTrainedTokenizerBase,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)

from training.config import TrainConfig, dump_config
from training.contrastive import contrastive_body, wanted
from training.data import IntentDataset, Split, load_configured
from training.data.types import OOS_LABEL
from training.evaluate import split_metrics, split_probabilities, write_evaluation
from training.export import (
    merged_model,
    save_model_dir,
    write_baseline,
    write_fewshot,
    write_json,
    write_routes,
)
from training.head_growth import grow_head
from training.head_init import linear_probe_init
from training.metrics import trainer_compute_metrics
from training.model_card import write_model_card
from training.modeling import BuiltModel, apply_lora, build_classifier
from training.run_facts import training_facts
from training.soft_targets import SOFT_TARGETS_COLUMN, SoftTargetTrainer, read_soft_targets, target_rows
from training.thresholds import choose_oos_threshold

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    output_dir: Path
    metrics: dict[str, Any]  # empty in a distributed run's processes other than the first


def train(config: TrainConfig, *, resume: str | bool | None = None, progress: bool = True) -> TrainResult:
    if config.model.objective == "generate":  # TRL SFT on prompt-completion pairs, same steps
        from training.generative import train_generative

        return TrainResult(*train_generative(config, resume=resume, progress=progress))
    out = Path(config.output_dir)
    set_seed(config.optim.seed)
    started = time.perf_counter()

    # 1. Data: read, validate, split; the label map is fixed here and saved with the model.
    data = load_configured(config.data)

    # 2. Model: base (4-bit for qlora) + classification head; LP-FT head warm start, or the base
    #    classifier's head grown to these labels (retrain with new intents); LoRA.
    built = build_classifier(config.model, config.quantization, data.label_map)
    contrastive = None
    cs = config.contrastive
    few_labels = wanted(
        cs.mode, cs.max_per_intent, built.pooling, data.train.labels,
        continued=config.optim.head_init == "grow", four_bit=config.model.method == "qlora",
        processes=int(os.environ.get("WORLD_SIZE", "1")),
    )  # fmt: skip
    if resume is None and few_labels:
        # 2a. few labels: SetFit's contrastive stage moves the body before any head is fit
        contrastive = contrastive_body(
            cast(torch.nn.Module, built.model.base_model), built.base_path,
            data.train.texts, data.train.labels,
            loss=cs.loss, rounds=cs.rounds, max_pairs=cs.max_pairs, epochs=cs.epochs,
            batch_size=cs.batch_size, learning_rate=cs.learning_rate, max_steps=config.optim.max_steps,
            max_length=config.model.max_length, seed=config.optim.seed, progress=progress,
        )  # fmt: skip
    growth = None
    if config.optim.head_init == "grow" and resume is None:
        growth = grow_head(
            built.model,
            built.tokenizer,
            built.base_path,
            data.train.texts,
            data.train.labels,
            renames=config.model.label_renames,
            max_length=config.model.max_length,
            seed=config.optim.seed,
            progress=progress,
        )
    head_only = contrastive is not None and not cs.fine_tune  # the probe is the head: SetFit
    if (config.optim.head_init == "linear_probe" or head_only) and resume is None:
        linear_probe_init(
            built.model,
            built.tokenizer,
            data.train.texts,
            data.label_map.encode(data.train.labels),
            max_length=config.model.max_length,
            progress=progress,
        )
    apply_lora(built, config.model, config.lora)

    # 3. Train: best checkpoint on validation macro-F1, early stopping, resumable (not after a
    #    contrastive stage whose probe is the head: contrastive.fine_tune=false).
    trained, train_output = built.model, None
    if not head_only:
        trainer = _trainer(config, built, data, out / "checkpoints", progress)
        train_output = trainer.train(resume_from_checkpoint=resume)
        trained = trainer.model  # type: ignore[assignment]
        if not trainer.is_world_process_zero():
            # under torchrun / accelerate launch (DDP) every process trains; the first one exports
            # and evaluates alone (no collective calls follow), the others are done: no metrics here
            return TrainResult(out, {})
    train_seconds = time.perf_counter() - started

    # 4. Export: merge the adapter into 16/32-bit weights, save model + tokenizer + label map.
    model = merged_model(built, trained, config.model.method)
    save_model_dir(built, model, out)
    write_routes(data.routes, out)
    write_fewshot(data, out, seed=config.data.seed)  # the cascade's prompt examples
    dump_config(config, out / "config.yaml")

    # 5. Evaluate the exported weights (validation, test, out-of-scope threshold); model card.
    evaluated: dict[str, Any] = {}
    metrics = evaluate_export(
        model, built.tokenizer, data, out, max_length=config.model.max_length, progress=progress,
        keep=evaluated,
    )  # fmt: skip
    # 6. ONNX beside the safetensors (the small encoders' CPU engine), checked and measured.
    onnx = (
        export_onnx(out, data, model, evaluated.get("validation"), seed=config.data.seed)
        if config.model.onnx_export
        else None
    )
    if onnx is not None:
        metrics["onnx"] = onnx
    metrics["training"] = {
        **training_facts(config, data, train_output, train_seconds),
        "total_seconds": round(time.perf_counter() - started, 1),  # with export, evaluation, ONNX
        "pooling": built.pooling,
        **({"head_growth": growth.to_json()} if growth is not None else {}),
        **({"contrastive": contrastive.to_json()} if contrastive is not None else {}),
    }
    write_json(out / "metrics.json", metrics)
    write_model_card(out, config, data, metrics)
    return TrainResult(out, metrics)


def evaluate_export(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    data: IntentDataset,
    out: Path,
    *,
    max_length: int,
    progress: bool = True,
    keep: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Validation and test metrics of exported weights; with an `oos` label, the confidence
    threshold below which a query is out of scope is chosen on validation only. Draws the
    confusion matrix into `out`. `keep`, when given, receives each split's probabilities."""
    labels = data.label_map.labels
    evaluated = {
        name: split_probabilities(model, tokenizer, split, labels, max_length=max_length, progress=progress)
        for name, split in (("validation", data.validation), ("test", data.test))
        if split is not None
    }
    if keep is not None:
        keep.update({name: probs for name, (_, probs) in evaluated.items()})
    metrics: dict[str, Any] = {}
    if data.has_oos:
        metrics["oos_threshold"] = choose_oos_threshold(
            evaluated["validation"][1], evaluated["validation"][0], labels.index(OOS_LABEL)
        )
    threshold = metrics["oos_threshold"]["threshold"] if data.has_oos else None
    for name, (y_true, probs) in evaluated.items():
        metrics[name] = split_metrics(y_true, probs, labels, oos_threshold=threshold)
    if "validation" in evaluated:  # the router's drift signals compare live traffic with this
        write_baseline(
            data.train.labels, list(labels), out,
            validation_probs=evaluated["validation"][1],
            accuracy=metrics["validation"].get("accuracy"),
        )  # fmt: skip
    split = "test" if data.test is not None else "validation"
    write_evaluation(metrics[split], labels, out, title=f"{data.name} ({split})")
    return metrics


def export_onnx(
    out: Path, data: IntentDataset, model: Any, validation_probs: Any = None, *, seed: int = 0
) -> dict[str, Any] | None:
    """`training.onnx_pipeline` on the saved model (encoders; a decoder stays on vLLM): its
    summary for metrics.json, None when skipped. The torch side of the fp32 check reuses the
    evaluation's validation probabilities when they were computed in float32. A failure is
    logged and recorded (the model is saved and served by vLLM all the same)."""
    from training.modeling import is_decoder

    if is_decoder(model.config):
        return None
    from training.onnx_checks import check_texts
    from training.onnx_pipeline import export_checked, record_failure, summary

    fp32 = next(model.parameters()).dtype == torch.float32
    texts = check_texts(
        data.label_map.labels, data.validation.texts, data.validation.labels, data.train.texts, seed=seed
    )
    try:
        report = export_checked(out, texts, torch_validation=validation_probs if fp32 else None)
    except ImportError as err:  # an install without the export's packages (onnx, onnxruntime)
        log.warning("no ONNX export: %s (pip install '.[train]')", err)
        report = record_failure(out, err)
    except Exception as err:
        log.exception("the ONNX export failed; the model is served by vLLM")
        report = record_failure(out, err)
    return summary(report)


def _tokenized(
    split: Split,
    data: IntentDataset,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    targets: list[list[float]] | None = None,
) -> Dataset:
    columns: dict[str, Any] = {"text": split.texts, "labels": data.label_map.encode(split.labels)}
    if targets is not None:
        columns[SOFT_TARGETS_COLUMN] = targets
    ds = Dataset.from_dict(columns)
    return ds.map(
        lambda batch: tokenizer(batch["text"], truncation=True, max_length=max_length),
        batched=True,
        remove_columns=["text"],
    )


def _trainer(
    config: TrainConfig, built: BuiltModel, data: IntentDataset, ckpt_dir: Path, progress: bool
) -> Trainer:
    opt = config.optim
    on_gpu = torch.cuda.is_available()
    select_best, patience = opt.selection(len(data.validation))
    steps_per_epoch = max(1, len(data.train) // (opt.batch_size * opt.gradient_accumulation))
    strategy: dict[str, Any] = {"eval_strategy": "epoch", "save_strategy": "epoch"}
    if opt.evals_per_epoch > 1 or 0 < opt.max_steps < steps_per_epoch:
        every = max(1, steps_per_epoch // max(1, opt.evals_per_epoch))
        if opt.max_steps > 0:
            every = min(every, opt.max_steps)
        strategy = {
            "eval_strategy": "steps",
            "save_strategy": "steps",
            "eval_steps": every,
            "save_steps": every,
        }
    targets = None
    if config.data.soft_targets is not None:  # distillation: a target distribution for every row
        soft = read_soft_targets(config.data.soft_targets, data.label_map, data.train.texts)
        log.info("soft targets for %d of %d train texts", len(soft), len(data.train))
        targets = target_rows(
            data.train.texts,
            data.label_map.encode(data.train.labels),
            soft,
            len(data.label_map),
            opt.label_smoothing,
        )
    optim = opt.optimizer
    if optim == "auto":
        optim = "paged_adamw_8bit" if config.model.method == "qlora" and on_gpu else "adamw_torch"
    args = TrainingArguments(
        output_dir=str(ckpt_dir),
        per_device_train_batch_size=opt.batch_size,
        per_device_eval_batch_size=opt.eval_batch_size,
        gradient_accumulation_steps=opt.gradient_accumulation,
        num_train_epochs=opt.epochs,
        max_steps=opt.max_steps,
        learning_rate=opt.learning_rate,
        weight_decay=opt.weight_decay,
        warmup_steps=opt.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        lr_scheduler_type=opt.lr_scheduler,
        label_smoothing_factor=opt.label_smoothing,
        optim=optim,
        bf16=on_gpu and built.dtype == torch.bfloat16,
        fp16=on_gpu and built.dtype == torch.float16,
        load_best_model_at_end=select_best,
        metric_for_best_model="macro_f1",
        greater_is_better=True,
        save_total_limit=2,
        logging_steps=opt.logging_steps,
        seed=opt.seed,
        data_seed=opt.seed,
        train_sampling_strategy="group_by_length",
        report_to="none",
        include_num_input_tokens_seen="non_padding",  # training tokens/s in metrics.json
        disable_tqdm=not progress,
        dataloader_num_workers=0,
        use_cpu=not on_gpu,
        remove_unused_columns=targets is None,  # with soft targets, compute_loss reads that column
        **strategy,
    )
    callbacks: list[TrainerCallback] = []
    if patience > 0:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=patience))
    trainer = (SoftTargetTrainer if targets is not None else Trainer)(
        model=built.model,
        args=args,
        train_dataset=_tokenized(data.train, data, built.tokenizer, config.model.max_length, targets),
        eval_dataset=_tokenized(data.validation, data, built.tokenizer, config.model.max_length),
        data_collator=DataCollatorWithPadding(built.tokenizer),
        compute_metrics=trainer_compute_metrics,
        callbacks=callbacks,
        optimizer_cls_and_kwargs=_head_lr_optimizer(config, built),
    )
    return trainer


def _head_lr_optimizer(config: TrainConfig, built: BuiltModel) -> Any:
    """AdamW with a separate learning rate for the head, when one is configured."""
    opt = config.optim
    if opt.head_learning_rate is None:
        return None
    head, body_decay, body_nodecay = [], [], []
    for name, param in built.model.named_parameters():
        if not param.requires_grad:
            continue
        if any(f".{h}." in f".{name}" for h in built.head_modules):
            head.append(param)
        elif param.ndim < 2:
            body_nodecay.append(param)
        else:
            body_decay.append(param)
    groups = [
        {"params": body_decay, "weight_decay": opt.weight_decay},
        {"params": body_nodecay, "weight_decay": 0.0},
        {"params": head, "weight_decay": opt.weight_decay, "lr": opt.head_learning_rate},
    ]
    return torch.optim.AdamW, {"params": groups, "lr": opt.learning_rate}
