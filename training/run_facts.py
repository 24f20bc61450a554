"""What `metrics.json` records about a training run (`training` section): the same keys for both
objectives, so reports, the registry and benchmarks read one shape."""

from __future__ import annotations

import resource
from typing import Any

import torch

from training.config import TrainConfig
from training.data import IntentDataset


def peak_memory_mb() -> float:
    """Peak GPU memory allocated, or on CPU the process's peak resident set (MiB)."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def is_first_process() -> bool:
    """True outside a distributed run, and in its first process (the one that exports)."""
    return not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0


def training_facts(config: TrainConfig, data: IntentDataset, output: Any, seconds: float) -> dict[str, Any]:
    """`output` is the trainer's `TrainOutput` (None: no fine-tuning ran, the head is the linear
    probe on a contrastively trained body); `seconds` the wall time from start to trained."""
    metrics = output.metrics if output is not None else {}
    return {
        "dataset": data.name,
        "dataset_fingerprint": data.fingerprint,
        "base_model": config.model.base_model,
        "method": config.model.method,
        "objective": config.model.objective,
        "train_examples": len(data.train),
        "validation_examples": len(data.validation),
        "test_examples": len(data.test) if data.test is not None else 0,
        "num_labels": len(data.label_map),
        "train_loss": float(output.training_loss) if output is not None else None,
        "global_steps": int(output.global_step) if output is not None else 0,
        "train_loop_seconds": round(float(metrics.get("train_runtime", 0.0)), 1),
        "input_tokens_seen": int(metrics.get("num_input_tokens_seen", 0)),
        "train_seconds": round(seconds, 1),
        "peak_memory_mb": round(peak_memory_mb(), 1),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch_threads": torch.get_num_threads(),
        "processes": torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1,
        **checkpoint_choice(config, len(data.validation)),
    }


def checkpoint_choice(config: TrainConfig, validation_examples: int) -> dict[str, Any]:
    """Which weights were exported: the best on validation (with early stopping), or the last."""
    select_best, patience = config.optim.selection(validation_examples)
    return {
        "checkpoint": "best_on_validation" if select_best else "last",
        "early_stopping_patience": patience,
        **(
            {
                "why_last": f"validation has {validation_examples} texts, under "
                f"optim.min_validation_for_selection={config.optim.min_validation_for_selection}"
            }
            if not select_best and (config.optim.select_best or config.optim.early_stopping_patience)
            else {}
        ),
    }
