"""`switchboard train`, `evaluate` and `check-vllm`: fine-tune, score and verify a model dir."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from router.cli._common import (
    DatasetOpt,
    ModelDirArg,
    ProgressOpt,
    console,
    fail,
    print_metrics,
    quiet_libraries,
    require_dir,
    user_errors,
)


class SplitName(StrEnum):
    train = "train"
    validation = "validation"
    test = "test"


class Dtype(StrEnum):
    auto = "auto"
    float32 = "float32"
    float16 = "float16"
    bfloat16 = "bfloat16"


ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML preset (configs/*.yaml).")]
SplitOpt = Annotated[SplitName, typer.Option(case_sensitive=False, help="The split to score.")]


def train(
    config: ConfigOpt = None,
    dataset: DatasetOpt = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Output model directory.")] = None,
    resume: Annotated[
        str | None,
        typer.Option(help="Resume from a checkpoint dir, or `latest` for the newest in OUTPUT."),
    ] = None,
    overrides: Annotated[
        list[str] | None, typer.Argument(help="section.key=value overrides, e.g. optim.epochs=2")
    ] = None,
    progress: ProgressOpt = True,
) -> None:
    """Fine-tune an intent classifier (qlora | lora | full) and export a merged, vLLM-ready model."""
    quiet_libraries()
    with user_errors():
        from training.config import load_config

        extra = list(overrides or [])
        if dataset is not None:
            extra.append(f"data.dataset={dataset}")
        if output is not None:
            extra.append(f"output_dir={output}")
        cfg = load_config(config, extra)
        resume_from: str | bool | None = True if resume == "latest" else resume
        if isinstance(resume_from, str) and not Path(resume_from).is_dir():
            fail(f"--resume: checkpoint directory not found: {resume_from}")

        from training.train import train as run_training  # torch: once the config is known good

        result = run_training(cfg, resume=resume_from, progress=progress)
    if not result.metrics:  # a torchrun / accelerate launch process other than the first: it exports
        return
    print_metrics(result.metrics.get("test", result.metrics["validation"]), f"{result.output_dir}")
    console.print(f"model written to [bold]{result.output_dir}[/]")


def evaluate(
    model_dir: ModelDirArg,
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Dataset to evaluate on.")],
    split: SplitOpt = SplitName.test,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write metrics.json + confusion_matrix.png here."),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON only.")] = False,
    progress: ProgressOpt = True,
) -> None:
    """Accuracy, macro-F1, per-intent scores, calibration (and out-of-scope) for a model dir."""
    quiet_libraries()
    require_dir(model_dir)
    with user_errors():
        from training.evaluate import evaluate_model_dir

        metrics = evaluate_model_dir(
            model_dir, dataset, split=split.value, output_dir=output, progress=progress
        )
    if json_out:
        print(json.dumps({k: v for k, v in metrics.items() if k != "confusion"}, indent=2))
        return
    print_metrics(metrics, f"{model_dir} on {dataset} ({split.value})")


def check_vllm(
    model_dir: ModelDirArg,
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Dataset whose texts to compare on.")],
    split: SplitOpt = SplitName.test,
    dtype: Annotated[Dtype, typer.Option(case_sensitive=False, help="vLLM dtype.")] = Dtype.auto,
    max_length: Annotated[int, typer.Option(help="Truncate texts to this many tokens.")] = 64,
) -> None:
    """Load MODEL_DIR in vLLM (pooling runner, classify) and compare with transformers (>= 99.5%)."""
    quiet_libraries()
    require_dir(model_dir)
    with user_errors():
        from training.agreement import vllm_agreement
        from training.data import DatasetError, load_dataset

        splits = load_dataset(dataset).splits()
        if split.value not in splits:
            raise DatasetError(f"dataset {dataset!r} has no {split.value!r} split")
        report = vllm_agreement(
            model_dir, splits[split.value].texts, max_length=max_length, dtype=dtype.value
        )
    print(json.dumps(report))
    if not report["passed"]:
        fail(f"vLLM agrees with transformers on {report['agreement']:.2%} only", code=1)
