"""Test data and models: the sample dataset, a weak champion for the retraining loop, and the
names the tests' `vllm serve` chat model is served under."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np

from training.tiny_models import dataset_texts

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "data" / "sample"
SHARED_DATASETS = REPO.parent / "shared" / "datasets"

WEAK = "upgrade_device"  # the intent the weak champion barely saw

# ------------------------------------------------ an OpenAI-compatible chat server (`vllm serve`)

SERVED = "tiny-chat"
API_KEY = "secret"
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)


def sample_texts() -> list[str]:
    """Every text of the sample dataset (train then test): the tiny tokenizers' training corpus."""
    return dataset_texts(SAMPLE)


def read_rows(path: Path) -> list[dict[str, str]]:
    import csv

    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def build_weak_champion(root: Path) -> tuple[object, list[str]]:
    """A MiniLM champion trained on the sample data with only 2 `upgrade_device` examples,
    registered as champion; returns (registry, the 22 upgrade_device texts it never saw)."""
    import csv

    from serving.registry import Registry
    from training.config import build_config
    from training.train import train

    rows = read_rows(SAMPLE / "train.csv")
    weak = [r for r in rows if r["label"] == WEAK]
    others = [r for r in rows if r["label"] != WEAK]
    data = root / "data"
    data.mkdir()

    def write(name: str, items: list[dict[str, str]]) -> None:
        with (data / name).open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["text", "label"])
            writer.writerows((r["text"], r["label"]) for r in items)

    write("train.csv", [r for i, r in enumerate(others) if i % 8] + weak[:2])
    write("validation.csv", [r for i, r in enumerate(others) if i % 8 == 0] + weak[:1])
    write("test.csv", read_rows(SAMPLE / "test.csv"))
    cfg = build_config(
        {
            "data": {"dataset": str(data)},
            "optim": {"max_steps": 24, "batch_size": 16, "learning_rate": 1e-4, "head_learning_rate": 1e-3},
            "contrastive": {"mode": "never"},  # tests/test_contrastive.py covers the stage
            "output_dir": str(root / "champion"),
        }
    )
    train(cfg, progress=False)
    registry = Registry(root / "registry")
    registry.register(root / "champion", alias="champion")
    return registry, [r["text"] for r in weak[2:]]


def served_requests(base_url: str) -> float:
    """Requests a `vllm serve` finished, from its Prometheus /metrics (all finish reasons)."""
    text = httpx.get(base_url.removesuffix("/v1") + "/metrics", timeout=5).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("vllm:request_success_total")
    )


def build_tiny_onnx_model(path: Path, *, seed: int = 0, version: str | None = None) -> Path:
    """A random tiny BERT classifier over the sample dataset's intents (its route map copied in)
    with its ONNX export checked on the sample data, as `switchboard train` leaves a model
    directory: seconds, no download. `version`: written as the directory's version name."""
    import json
    import shutil

    from training.onnx_checks import check_texts
    from training.onnx_pipeline import export_checked
    from training.tiny_models import build_tiny_bert_classifier

    rows = read_rows(SAMPLE / "train.csv")
    labels = sorted({r["label"] for r in rows})
    build_tiny_bert_classifier(path, sample_texts(), labels, seed=seed)
    shutil.copy(SAMPLE / "routes.yaml", path / "routes.yaml")
    if version is not None:
        (path / "switchboard-version.json").write_text(json.dumps({"version": version}))
    validation, train = rows[::5], [r for i, r in enumerate(rows) if i % 5]
    texts = check_texts(
        labels, [r["text"] for r in validation], [r["label"] for r in validation], [r["text"] for r in train]
    )
    export_checked(path, texts)
    return path


def torch_probabilities(model_dir: Path, texts: list[str]) -> np.ndarray:
    """The exported classifier's probabilities in transformers (fp32), truncated as served."""
    from serving.model_dir import read_model_info
    from training.modeling import load_classifier
    from training.predict import predict_proba

    model, tokenizer = load_classifier(model_dir)
    return predict_proba(
        model, tokenizer, texts, max_length=read_model_info(model_dir).max_length, progress=False
    )
