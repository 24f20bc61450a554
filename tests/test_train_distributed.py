"""`switchboard train` under `torchrun --nproc_per_node 2` on CPU (DDP over gloo): the same command,
the same config, half the per-process batch, so the global batch and the number of steps are a
single process's. The two-process model must be as good as the single-process one on the sample
data, with the same labels, and only the first process may write the export."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

STEPS = 24
BATCH = 16  # global: one process of 16, or two of 8
COMMON = [
    f"optim.max_steps={STEPS}", "optim.head_init=linear_probe", "optim.seed=7", "data.seed=7",
    "contrastive.mode=never",  # the contrastive stage runs in one process only (training.train)
]  # fmt: skip
TORCHRUN = Path(sys.executable).with_name("torchrun")


def run_train(args: list[str], out: Path, overrides: list[str]) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    command = [*args, "-m", "router.cli", "train", "-o", str(out), "--no-progress", *COMMON, *overrides]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900, cwd=out.parent)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def facts(out: Path) -> dict[str, Any]:
    metrics = json.loads((out / "metrics.json").read_text())
    labels = json.loads((out / "config.json").read_text())["id2label"]
    return {**metrics, "labels": sorted(labels.values())}


@pytest.mark.slow
@pytest.mark.skipif(not TORCHRUN.exists(), reason=f"no torchrun beside {sys.executable}")
def test_two_processes_train_as_well_as_one(tmp_path: Path, sample_dir: Path) -> None:
    data = [f"data.dataset={sample_dir}"]
    single, double = tmp_path / "single", tmp_path / "ddp"
    run_train([sys.executable], single, [*data, f"optim.batch_size={BATCH}"])
    stdout = run_train(
        [str(TORCHRUN), "--standalone", "--nproc_per_node", "2"],
        double,
        [*data, f"optim.batch_size={BATCH // 2}"],
    )

    one, two = facts(single), facts(double)
    assert one["training"]["processes"] == 1
    assert two["training"]["processes"] == 2  # it really ran distributed
    assert two["training"]["global_steps"] == one["training"]["global_steps"] == STEPS
    assert two["labels"] == one["labels"]
    assert two["training"]["train_examples"] == one["training"]["train_examples"]
    # the same quality within what 60 test queries can tell apart (a few queries either way)
    for split in ("validation", "test"):
        assert one[split]["accuracy"] >= 0.75, (split, one[split])
        assert two[split]["accuracy"] >= 0.75, (split, two[split])
        assert abs(two[split]["accuracy"] - one[split]["accuracy"]) <= 0.1, split
    assert two["training"]["train_loss"] < 1.0 and one["training"]["train_loss"] < 1.0

    # only the first process exported: one "model written" line, one complete model directory
    assert stdout.count("model written to") == 1, stdout[-2000:]
    exported = {p.name for p in double.iterdir()}
    assert {"config.json", "metrics.json", "README.md", "routes.yaml", "baseline.json"} <= exported
    assert not any(name.startswith(".tmp") for name in exported)


@pytest.mark.slow
@pytest.mark.skipif(not TORCHRUN.exists(), reason=f"no torchrun beside {sys.executable}")
def test_the_generative_objective_trains_under_torchrun(
    tmp_path: Path, sample_dir: Path, tiny_llama: Path
) -> None:
    """`objective: generate` (TRL's SFTTrainer, QLoRA) under the same launcher: both processes
    train, the first alone exports the merged causal LM and scores it."""
    out = tmp_path / "generate-ddp"
    stdout = run_train(
        [str(TORCHRUN), "--standalone", "--nproc_per_node", "2"],
        out,
        [
            f"data.dataset={sample_dir}", f"model.base_model={tiny_llama}", "model.objective=generate",
            "model.method=qlora", "model.max_length=32", "optim.head_init=random", "optim.batch_size=4",
            "optim.max_steps=4", "optim.learning_rate=3e-3",
        ],
    )  # fmt: skip
    trained = facts(out)
    assert trained["training"]["processes"] == 2 and trained["training"]["objective"] == "generate"
    assert trained["training"]["global_steps"] == 4 and trained["test"]["n"] == 60
    assert stdout.count("model written to") == 1, stdout[-2000:]
    assert (out / "generative.json").is_file() and not (out / "adapter_config.json").exists()
