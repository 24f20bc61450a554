"""Bad input at the command line: one clear line on stderr, a non-zero exit, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from router.cli import app
from router.cli._common import _USER_ERRORS

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


def test_self_train_teachers_need_a_confidence(tmp_path: Path) -> None:
    _fails(
        ["retrain", "--registry", str(tmp_path), "--self-train-teachers", "2"],
        "--self-train-teachers needs --self-train",
    )


def test_evaluate_missing_model_dir(tmp_path: Path) -> None:
    _fails(
        ["evaluate", str(tmp_path / "missing"), "--dataset", "data/sample"],
        "model directory not found",
    )


def test_evaluate_dir_that_is_not_a_model(tmp_path: Path) -> None:
    _fails(["evaluate", str(tmp_path), "--dataset", "data/sample"], "no config.json")


def _model_dir(path: Path, **config: object) -> Path:
    import json

    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"id2label": {"0": "a", "1": "b"}, **config}))
    return path


def test_export_onnx_bad_input(tmp_path: Path) -> None:
    _fails(["models", "export-onnx", str(tmp_path / "missing")], "model directory not found")
    _fails(["models", "export-onnx", "v0007", "-r", str(tmp_path / "none")], "registry not found")
    (tmp_path / "registry").mkdir()
    _fails(["models", "export-onnx", "v0007", "-r", str(tmp_path / "registry")], "no model version 'v0007'")
    generative = _model_dir(tmp_path / "gen")
    (generative / "generative.json").write_text("{}")
    _fails(["models", "export-onnx", str(generative)], "the generative objective is served by vLLM")
    decoder = _model_dir(
        tmp_path / "llama", model_type="llama", architectures=["LlamaForSequenceClassification"]
    )
    _fails(["models", "export-onnx", str(decoder)], "a decoder classifier (llama) stays on vLLM")
    encoder = _model_dir(tmp_path / "bert", model_type="bert")
    _fails(["models", "export-onnx", str(encoder)], "has no tokenizer.json")
    (encoder / "tokenizer.json").write_text("{}")
    _fails(["models", "export-onnx", str(encoder)], "names no training data (config.yaml): pass --dataset")
    _fails(["models", "export-onnx", str(encoder), "-d", str(tmp_path / "nowhere")], "not found")


def test_serve_engine_onnx_without_an_export(tmp_path: Path) -> None:
    model = _model_dir(tmp_path / "m")
    _fails(["serve", "--model", str(model), "--engine", "onnx"], "has no ONNX export (onnx.json)")
    (model / "generative.json").write_text("{}")
    _fails(["serve", "--model", str(model), "--engine", "ONNX"], "the generative objective is served by vLLM")


def test_resume_missing_checkpoint(tmp_path: Path) -> None:
    _fails(["train", "--resume", str(tmp_path / "ckpt")], "checkpoint directory not found")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["evaluate", "m", "--dataset", "data/sample", "--split", "dev"], "Invalid value for '--split'"),
        (["check-vllm", "m", "-d", "data/sample", "--dtype", "int4"], "'int4' is not one of"),
        (["serve", "--engine", "cloud"], "'cloud' is not one of 'local', 'remote', 'onnx', 'auto'"),
        (["retrain", "--start-from", "scratch"], "Invalid value for '--start-from'"),
        (["models", "register", "m", "--alias", "staging"], "'staging' is not one of"),
        (["baseline", "classical", "-d", "data/sample", "--kind", "bert"], "Invalid value for '--kind'"),
        (["baseline", "fewshot", "-d", "d", "--model", "m", "--selection", "random"], "'--selection'"),
        (["baseline", "fewshot", "-d", "d", "--model", "m", "--structured", "yes"], "'--structured'"),
        (["bench", "-d", "d", "-o", "o", "--engine", "onnx"], "'onnx' is not one of 'vllm', 'transformers'"),
        (["bench", "-d", "d", "-o", "o", "--classical", "svm"], "Invalid value for '--classical'"),
        (["serve", "--no-such-flag"], "No such option: --no-such-flag"),
        (["no-such-command"], "No such command 'no-such-command'"),
    ],
)
def test_usage_errors_are_one_line_on_stderr(args: list[str], needle: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert result.stderr.startswith("error: ") and needle in result.stderr, result.stderr
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert "--help" in result.stderr  # where to look next


def test_choices_are_case_insensitive(tmp_path: Path) -> None:
    # past option parsing: the command itself rejects the missing model directory
    _fails(["evaluate", str(tmp_path / "missing"), "-d", "data/sample", "--split", "TEST"], "not found")
    _fails(["serve", "--engine", "Remote"], "needs engine_url")


@pytest.mark.parametrize(("module", "name"), _USER_ERRORS)
def test_user_error_table_names_real_exceptions(module: str, name: str) -> None:
    """`user_errors` finds these classes by name: a renamed or moved one would turn its one-line
    message into a traceback, so the table is checked against the code."""
    import importlib

    cls = getattr(importlib.import_module(module), name)
    assert isinstance(cls, type) and issubclass(cls, Exception)


def test_import_and_help_stay_light() -> None:
    code = (
        "import sys; from typer.testing import CliRunner; from router.cli import app; "
        "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output; "
        "heavy = sorted({'torch', 'sklearn', 'vllm', 'transformers', 'sqlalchemy'} & set(sys.modules)); "
        "assert not heavy, heavy"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]


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
