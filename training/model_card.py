"""The model card (`README.md`) written next to every exported model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from training.config import TrainConfig
from training.data import IntentDataset
from training.report import metrics_markdown


def write_model_card(
    out_dir: Path, config: TrainConfig, data: IntentDataset, metrics: dict[str, Any]
) -> Path:
    facts = metrics["training"]
    sections = [
        f"# Switchboard intent classifier: {data.name}",
        "",
        f"Fine-tuned from `{config.model.base_model}` with **{config.model.method}** "
        f"({facts['global_steps']} steps, {facts['train_seconds']} s on {facts['device']}, "
        f"peak memory {facts['peak_memory_mb']:.0f} MiB).",
        "",
        f"- Dataset: `{data.name}` (fingerprint `{data.fingerprint[:16]}`), "
        f"{facts['train_examples']} train / {facts['validation_examples']} validation / "
        f"{facts['test_examples']} test examples, {facts['num_labels']} intents.",
        f"- Pooling: `{facts.get('pooling', config.model.pooling)}`; max length "
        f"{config.model.max_length} tokens. Full configuration: `config.yaml`.",
        "",
    ]
    for split in ("test", "validation"):
        if split in metrics:
            sections += [
                f"## {split.capitalize()} metrics",
                "",
                metrics_markdown(metrics[split]),
                "",
            ]
    sections += [
        "Per-intent precision/recall/F1 and calibration are in `metrics.json`; the confusion matrix",
        "is `confusion_matrix.png`.",
        "",
        "## Serve it",
        "",
        "```bash",
        f"switchboard evaluate {out_dir} --dataset {data.name}",
        f"vllm serve {out_dir} --runner pooling   # POST /classify",
        "```",
        "",
        "## Intents",
        "",
        "| id | intent | route |",
        "| --- | --- | --- |",
    ]
    sections += [
        f"| {i} | {label} | {data.routes.get(label, '')} |" for i, label in enumerate(data.label_map.labels)
    ]
    path = out_dir / "README.md"
    path.write_text("\n".join(sections) + "\n")
    return path
