"""Bad input at the command line: one clear line on stderr, a non-zero exit, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from router.cli import app

runner = CliRunner()


def _fails(args: list[str], needle: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert needle in result.output, result.output
    assert "Traceback" not in result.output


def test_unknown_config_key(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("optim:\n  lerning_rate: 1e-4\n")
    _fails(["train", "--config", str(cfg)], "unknown config key 'optim.lerning_rate'")


def test_missing_config_file(tmp_path: Path) -> None:
    _fails(["train", "--config", str(tmp_path / "none.yaml")], "config file not found")


def test_bad_override() -> None:
    _fails(["train", "model.method=sft"], "'model.method'")


def test_missing_dataset(tmp_path: Path) -> None:
    _fails(["train", "--dataset", str(tmp_path / "nowhere")], "not found")


def test_dataset_missing_column(tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_text("query,label\nhello,a\n")
    _fails(["train", "--dataset", str(tmp_path)], "text")


def test_evaluate_missing_model_dir(tmp_path: Path) -> None:
    _fails(
        ["evaluate", str(tmp_path / "missing"), "--dataset", "data/sample"],
        "model directory not found",
    )


def test_evaluate_dir_that_is_not_a_model(tmp_path: Path) -> None:
    _fails(["evaluate", str(tmp_path), "--dataset", "data/sample"], "no config.json")


def test_resume_missing_checkpoint(tmp_path: Path) -> None:
    _fails(["train", "--resume", str(tmp_path / "ckpt")], "checkpoint directory not found")


@pytest.mark.slow
def test_real_process_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "router.cli", "train", "--config", str(tmp_path / "x.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0 and "config file not found" in done.stderr
