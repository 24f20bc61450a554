"""`switchboard`: one command line for training, evaluation, baselines, serving and the registry.

This module only assembles `app` from the command modules; each of them imports what it shares
from `router.cli._common`, never this package root. Every command turns a known failure (bad
config, dataset, model directory, usage) into one line on stderr and exit code 2, and imports
heavy libraries (torch, sklearn, vLLM) inside the command, so `--help` is instant.

    train.py    train, evaluate, check-vllm
    serve.py    serve
    bench.py    baseline fewshot|classical, bench
    models.py   models list|show|register|promote|rollback|examples
    retrain.py  retrain
    intents.py  intents list|add|rename|retire|discover
    review.py   review export
    feedback.py feedback import
"""

from __future__ import annotations

import typer

from router.cli import bench, feedback, intents, models, retrain, review, serve, train
from router.cli._common import OneLineErrors

__all__ = ["app"]

app = typer.Typer(
    name="switchboard",
    help="Route customer queries with a small fine-tuned intent classifier served on vLLM.",
    cls=OneLineErrors,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

app.command("train")(train.train)
app.command("evaluate")(train.evaluate)
app.command("check-vllm")(train.check_vllm)
app.add_typer(bench.baseline_app, name="baseline")
app.command("bench")(bench.bench)
app.command("serve")(serve.serve)
app.add_typer(models.app, name="models")
app.add_typer(intents.app, name="intents")
app.command("retrain")(retrain.retrain)
app.add_typer(review.app, name="review")
app.add_typer(feedback.app, name="feedback")
