"""`switchboard`: one command line for training, evaluation and serving.

Every command turns a known failure (bad config, bad dataset, missing model) into one line on
stderr and exit code 2; heavy libraries are imported inside the commands so `--help` is instant.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console

app = typer.Typer(
    name="switchboard",
    help="Route customer queries with a small fine-tuned intent classifier served on vLLM.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 2) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@contextmanager
def user_errors() -> Iterator[None]:
    """Known, user-caused errors -> one line and exit 2; anything else is a bug and propagates."""
    from serving.registry import RegistryError
    from training.config import ConfigError
    from training.data import DatasetError
    from training.modeling import ModelLoadError

    try:
        yield
    except (ConfigError, DatasetError, ModelLoadError, RegistryError) as err:
        fail(str(err))


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for name in ("httpx", "datasets", "urllib3", "filelock", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # On CPUs with AVX-512 bf16, bitsandbytes looks for an optional Hub kernel at import and warns
    # when it is absent (always, offline); it falls back to its own implementation.
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)


ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML preset (configs/*.yaml).")]
DatasetOpt = Annotated[
    str | None,
    typer.Option("--dataset", "-d", help="Dataset dir/file, `banking77`, `clinc150` or a hub id."),
]


@app.command()
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
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Fine-tune an intent classifier (qlora | lora | full) and export a merged, vLLM-ready model."""
    _quiet_libraries()
    with user_errors():
        from training.config import load_config
        from training.train import train as run_training

        extra = list(overrides or [])
        if dataset is not None:
            extra.append(f"data.dataset={dataset}")
        if output is not None:
            extra.append(f"output_dir={output}")
        cfg = load_config(config, extra)
        resume_from: str | bool | None = True if resume == "latest" else resume
        if isinstance(resume_from, str) and not Path(resume_from).is_dir():
            fail(f"--resume: checkpoint directory not found: {resume_from}")
        result = run_training(cfg, resume=resume_from, progress=progress)
    _print_metrics(result.metrics.get("test", result.metrics["validation"]), f"{result.output_dir}")
    console.print(f"model written to [bold]{result.output_dir}[/]")


@app.command()
def evaluate(
    model_dir: Annotated[Path, typer.Argument(help="An exported model directory.")],
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Dataset to evaluate on.")],
    split: Annotated[str, typer.Option(help="train | validation | test")] = "test",
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write metrics.json + confusion_matrix.png here."),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON only.")] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Accuracy, macro-F1, per-intent scores, calibration (and out-of-scope) for a model dir."""
    _quiet_libraries()
    if not model_dir.is_dir():
        fail(f"model directory not found: {model_dir}")
    with user_errors():
        from training.evaluate import evaluate_model_dir

        metrics = evaluate_model_dir(model_dir, dataset, split=split, output_dir=output, progress=progress)
    if json_out:
        import json

        print(json.dumps({k: v for k, v in metrics.items() if k != "confusion"}, indent=2))
        return
    _print_metrics(metrics, f"{model_dir} on {dataset} ({split})")


@app.command("check-vllm")
def check_vllm(
    model_dir: Annotated[Path, typer.Argument(help="An exported model directory.")],
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="Dataset whose texts to compare on.")],
    split: Annotated[str, typer.Option(help="train | validation | test")] = "test",
    dtype: Annotated[str, typer.Option(help="vLLM dtype: auto | float32 | bfloat16")] = "auto",
    max_length: Annotated[int, typer.Option(help="Truncate texts to this many tokens.")] = 64,
) -> None:
    """Load MODEL_DIR in vLLM (pooling runner, classify) and compare with transformers (>= 99.5%)."""
    _quiet_libraries()
    if not model_dir.is_dir():
        fail(f"model directory not found: {model_dir}")
    with user_errors():
        import json

        from training.agreement import vllm_agreement
        from training.data import DatasetError, load_dataset

        splits = load_dataset(dataset).splits()
        if split not in splits:
            raise DatasetError(f"dataset {dataset!r} has no {split!r} split")
        report = vllm_agreement(model_dir, splits[split].texts, max_length=max_length, dtype=dtype)
    print(json.dumps(report))
    if not report["passed"]:
        fail(f"vLLM agrees with transformers on {report['agreement']:.2%} only", code=1)


def _print_metrics(metrics: dict[str, object], title: str) -> None:
    from training.report import metrics_table, per_intent_table

    console.print(metrics_table(metrics, title=title))  # type: ignore[arg-type]
    console.print(per_intent_table(metrics, worst=5))  # type: ignore[arg-type]


@app.command()
def serve(
    model: Annotated[
        Path | None,
        typer.Option("--model", "-m", help="Exported model directory (or SWITCHBOARD_MODEL_DIR)."),
    ] = None,
    engine: Annotated[
        str | None, typer.Option(help="local (in-process vLLM, default) | remote (a vllm server).")
    ] = None,
    url: Annotated[str | None, typer.Option(help="vLLM server URL for --engine remote.")] = None,
    host: Annotated[str | None, typer.Option(help="Interface to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on (default 8000).")] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="Settings YAML; SWITCHBOARD_* env vars override it."),
    ] = None,
) -> None:
    """Serve the routing API: FastAPI on uvicorn, the model on vLLM, request log, /metrics."""
    _quiet_libraries()
    from router.settings import SettingsError, load_settings

    try:
        settings = load_settings(
            config, model_dir=model, engine=engine, engine_url=url, host=host, port=port
        ).with_champion()
    except SettingsError as err:
        fail(str(err))
    _check_serving(settings)

    import signal

    import uvicorn

    from router.app import build_app

    application = build_app(settings)
    failures: list[str] = []

    def stop_on_failure(message: str) -> None:  # a model that cannot load: exit, do not idle
        failures.append(message)
        os.kill(os.getpid(), signal.SIGTERM)

    application.state.runtime.on_load_failure = stop_on_failure
    # uvicorn re-raises the signal that stopped it once it has shut down, which would kill the
    # process with -SIGTERM after a clean drain (and skip the exit code below); these no-op
    # handlers receive that re-raise, so a graceful stop exits 0.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    uvicorn.run(
        application,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        access_log=settings.access_log,
        log_level=settings.log_level,
        timeout_graceful_shutdown=max(1, round(settings.shutdown_timeout_s)),
    )
    if failures:
        fail(f"model failed to load: {failures[0]}", code=1)


def _check_serving(settings: object) -> None:
    """Model dir, route map and database checked before vLLM spends a minute loading."""
    from router.policy import PolicyError, policy_for
    from router.settings import Settings
    from router.store import StoreError, create_db_engine, migrate
    from serving.model_dir import ModelDirError, read_model_info

    assert isinstance(settings, Settings)
    if settings.model_dir is None:
        fail("no model: pass --model DIR or set SWITCHBOARD_MODEL_DIR")
    if not settings.model_dir.is_dir():
        fail(f"model directory not found: {settings.model_dir}")
    try:
        info = read_model_info(settings.model_dir)
        policy_for(info, settings)
        db = create_db_engine(settings.database_url)
        try:
            migrate(db)
        finally:
            db.dispose()
    except (ModelDirError, PolicyError, StoreError) as err:
        fail(str(err))


# Baselines and the benchmark report live in their own module (router/cli_bench.py).
from router.cli_bench import baseline_app, bench  # noqa: E402

app.add_typer(baseline_app)
app.command("bench")(bench)


from router.models_cli import models_app  # noqa: E402  (sub-app, after the helpers it uses)
from router.retrain_cli import retrain_command  # noqa: E402

app.add_typer(models_app, name="models")
app.command("retrain")(retrain_command)

if __name__ == "__main__":
    app()
