"""`switchboard models examples`: (re)write a model directory's few-shot examples file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from router.cli import app
from serving.model_dir import FEWSHOT_FILE, read_fewshot
from training.data import load_dataset

runner = CliRunner()


def _model_dir(path: Path, labels: list[str], config_yaml: str | None = None) -> Path:
    """Enough of an exported model for `read_model_info`: config.json with its label map."""
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"id2label": dict(enumerate(labels))}))
    if config_yaml is not None:
        (path / "config.yaml").write_text(config_yaml)
    return path


@pytest.fixture(scope="module")
def sample_labels(sample_dir: Path) -> list[str]:
    return list(load_dataset(sample_dir).label_map.labels)


def test_examples_writes_the_fewshot_file(sample_dir: Path, sample_labels: list[str], tmp_path: Path) -> None:
    model = _model_dir(tmp_path / "model", sample_labels)
    result = runner.invoke(app, ["models", "examples", str(model), "--dataset", str(sample_dir)])
    assert result.exit_code == 0, result.output
    path = model / FEWSHOT_FILE
    assert f"wrote {path}: 10 intents, 216 examples" in result.stdout  # 24 per intent, 10% for validation
    assert result.stderr == ""
    written = read_fewshot(path)
    assert sorted(written.per_intent) == sorted(sample_labels)
    assert written.seed == 42 and written.source == "sample"
    test = load_dataset(sample_dir).test
    assert test is not None
    assert not {t for texts in written.per_intent.values() for t in texts} & set(test.texts)

    again = runner.invoke(app, ["models", "examples", str(model), "-d", str(sample_dir), "--seed", "7"])
    assert again.exit_code == 0, again.output
    assert read_fewshot(path).seed == 7  # rewritten in place


def test_examples_default_seed_is_the_training_seed(
    sample_dir: Path, sample_labels: list[str], tmp_path: Path
) -> None:
    model = _model_dir(tmp_path / "model", sample_labels, "data:\n  seed: 3\n  validation_fraction: 0.2\n")
    result = runner.invoke(app, ["models", "examples", str(model), "--dataset", str(sample_dir)])
    assert result.exit_code == 0, result.output
    assert read_fewshot(model / FEWSHOT_FILE).seed == 3
    assert "192 examples" in result.stdout  # 0.2 of train held out for validation, as in training


def test_examples_warns_about_intents_without_examples(sample_dir: Path, tmp_path: Path) -> None:
    model = _model_dir(tmp_path / "model", ["no_signal", "not_in_the_data"])
    result = runner.invoke(app, ["models", "examples", str(model), "--dataset", str(sample_dir)])
    assert result.exit_code == 0, result.output
    assert "warning: no examples for 1 of the model's 2 intents: not_in_the_data" in result.stderr


@pytest.mark.parametrize(
    ("make", "args", "needle"),
    [
        (None, [], "model directory not found"),
        ("empty", [], "not a model directory (no config.json)"),
        ("other", [], "shares no intent with the model"),
        ("model", ["--dataset", "/nonexistent/data"], "not found"),
        ("model", ["--seed", "x"], "Invalid value for '--seed'"),
    ],
)
def test_examples_bad_input_is_one_line_exit_2(
    make: str | None,
    args: list[str],
    needle: str,
    sample_dir: Path,
    sample_labels: list[str],
    tmp_path: Path,
) -> None:
    model = tmp_path / "model"
    if make == "empty":
        model.mkdir()
    elif make == "other":
        _model_dir(model, ["x", "y"])
    elif make == "model":
        _model_dir(model, sample_labels)
    result = runner.invoke(app, ["models", "examples", str(model), "--dataset", str(sample_dir), *args])
    assert result.exit_code == 2, result.output
    assert needle in result.stderr and "Traceback" not in result.output
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert not (model / FEWSHOT_FILE).exists()


def test_examples_needs_a_dataset(tmp_path: Path) -> None:
    result = runner.invoke(app, ["models", "examples", str(tmp_path)])
    assert result.exit_code == 2
    assert "Missing option '--dataset'" in result.stderr and result.stderr.strip().count("\n") == 0
