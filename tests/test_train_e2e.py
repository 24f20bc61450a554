"""The real entry points end to end on CPU: train -> export -> evaluate -> load in vLLM.

QLoRA runs on a tiny random Llama (bitsandbytes 4-bit NF4 on CPU); LoRA and full on MiniLM.
vLLM runs in a subprocess (`switchboard check-vllm`), as it spawns workers of its own.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from training.config import build_config
from training.train import train

pytestmark = pytest.mark.slow

EXPORTED = [
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "metrics.json",
    "config.yaml",
    "README.md",
    "confusion_matrix.png",
    "routes.yaml",
    "baseline.json",  # the drift baseline: training prior, validation's confidences
]


def _cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "router.cli", *args], capture_output=True, text=True, timeout=timeout
    )


def _check_vllm(model_dir: Path, dataset: Path) -> dict:
    done = _cli("check-vllm", str(model_dir), "--dataset", str(dataset))
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["labels_match"] and report["agreement"] >= 0.995, report
    return report


def _assert_exported(out: Path, n_labels: int) -> dict:
    for name in EXPORTED:
        assert (out / name).is_file(), name
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"][0].endswith("ForSequenceClassification")
    assert len(config["id2label"]) == n_labels and config["pad_token_id"] is not None
    assert not (out / "adapter_config.json").exists(), "export must be merged, not an adapter"
    assert (out / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = json.loads((out / "metrics.json").read_text())
    for split in ("validation", "test"):
        for key in ("accuracy", "macro_f1", "ece", "per_intent"):
            assert key in metrics[split]
    return metrics


def test_qlora_tiny_llama_train_export_serve_in_vllm(
    tiny_llama: Path, sample_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "llama-qlora"
    cfg = build_config(
        {
            "model": {"base_model": str(tiny_llama), "method": "qlora", "max_length": 48},
            "lora": {"r": 8, "alpha": 16},
            "data": {"dataset": str(sample_dir)},
            "optim": {"epochs": 4, "batch_size": 16, "learning_rate": 3e-3, "logging_steps": 5},
            "output_dir": str(out),
        }
    )
    result = train(cfg, progress=False)
    metrics = _assert_exported(out, 10)
    assert metrics["training"]["method"] == "qlora"
    assert result.metrics["test"]["n"] == 60
    _check_vllm(out, sample_dir)


@pytest.mark.parametrize("method", ["full", "lora"])
def test_minilm_train_evaluate_and_serve(method: str, sample_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / f"minilm-{method}"
    lr = "1e-4" if method == "full" else "1e-3"
    done = _cli(
        "train",
        "--config",
        "configs/minilm-cpu.yaml",
        "--dataset",
        str(sample_dir),
        "--output",
        str(out),
        "--no-progress",
        f"model.method={method}",
        "optim.epochs=3",
        f"optim.learning_rate={lr}",
        # full: the shipped default, whose few-label rule runs the contrastive stage here (21 per
        # intent); lora: the stage is the same, not paid for twice
        *(["contrastive.mode=never"] if method == "lora" else []),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = _assert_exported(out, 10)
    # a pretrained sentence encoder separates ten support intents well above chance (10%)
    assert metrics["test"]["accuracy"] >= 0.6, metrics["test"]["accuracy"]

    # `evaluate` on the exported dir reproduces the test metrics written at training time
    done = _cli("evaluate", str(out), "--dataset", str(sample_dir), "--json", "--no-progress")
    assert done.returncode == 0, done.stderr[-3000:]
    evaluated = json.loads(done.stdout)
    assert evaluated["accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    assert evaluated["macro_f1"] == pytest.approx(metrics["test"]["macro_f1"])
    if method == "full":
        stage = metrics["training"]["contrastive"]  # ran, one epoch over every pair of its rounds
        batch = yaml.safe_load((out / "config.yaml").read_text())["contrastive"]["batch_size"]
        assert stage["pairs"] > 0 and stage["steps"] == -(-stage["pairs"] // batch), stage
        assert (out / "modules.json").is_file()  # mean pooling, as vLLM reads it
        _check_vllm(out, sample_dir)


def test_resume_from_latest_checkpoint(sample_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "resume"
    base = {
        "data": {"dataset": str(sample_dir)},
        "optim": {"max_steps": 4, "batch_size": 16, "head_init": "random"},
        # the Trainer's checkpoints are what resumes; the few-label rule would otherwise run the
        # contrastive stage and keep its probe as the head, with no Trainer and no checkpoint
        "contrastive": {"mode": "never"},
        "output_dir": str(out),
    }
    first = train(build_config(base), progress=False)
    assert first.metrics["training"]["global_steps"] == 4
    assert (out / "checkpoints" / "checkpoint-4").is_dir()
    second = train(build_config(base, ["optim.max_steps=8"]), resume=True, progress=False)
    assert second.metrics["training"]["global_steps"] == 8
    assert (out / "checkpoints" / "checkpoint-8").is_dir()
