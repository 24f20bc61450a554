"""`switchboard retrain`: train a challenger from logged feedback and promote it through the gate.

Exit codes (for cron / Kubernetes CronJobs): 0 promoted, 10 not promoted (the gate said no),
11 nothing to do (too little feedback), 12 in shadow (passed the gate; the routers decide on live
traffic), 2 bad input or a failed step (the champion is untouched).
"""

from __future__ import annotations

import json
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal, cast

import typer

from router.cli._common import DEFAULT_REGISTRY, ProgressOpt, RegistryOpt, fail, quiet_libraries, user_errors
from serving.taxonomy import PENDING_MIN_EXAMPLES


class Promotion(StrEnum):
    shadow = "shadow"
    direct = "direct"


class StartFrom(StrEnum):
    auto = "auto"
    champion = "champion"
    base = "base"


def retrain(
    registry: RegistryOpt = DEFAULT_REGISTRY,
    database_url: Annotated[
        str, typer.Option(envvar="SWITCHBOARD_DATABASE_URL", help="The router's store (SQLAlchemy URL).")
    ] = "sqlite:///switchboard.db",
    since: Annotated[
        datetime | None, typer.Option(help="Only feedback from this time on (ISO 8601).")
    ] = None,
    min_feedback: Annotated[int, typer.Option(help="Fewer usable feedback rows: nothing to do.")] = 20,
    min_examples: Annotated[
        int,
        typer.Option(help="Feedback examples a pending intent needs before it is trained.", min=1),
    ] = PENDING_MIN_EXAMPLES,
    holdout: Annotated[float, typer.Option(help="Share of feedback held out for the gate.")] = 0.2,
    feedback_weight: Annotated[int, typer.Option(help="Oversampling factor of feedback in train.")] = 3,
    test_margin: Annotated[float, typer.Option(help="Allowed test-accuracy loss (0.005 = 0.5 pt).")] = 0.005,
    start_from: Annotated[
        StartFrom,
        typer.Option(
            case_sensitive=False,
            help="auto: base when the feedback is >= 25% of the original training data (a cold start), "
            "else champion; champion: fine-tune its weights (head grown for new intents); base: retrain "
            "the recipe's model on everything.",
        ),
    ] = StartFrom.auto,
    lr_factor: Annotated[
        float,
        typer.Option(help="From the champion: scale the recipe's learning rates by this.", min=0.0),
    ] = 0.1,
    continue_epochs: Annotated[
        float,
        typer.Option(
            help="From the champion: train this many epochs (an optim.epochs override wins).", min=0.1
        ),
    ] = 1.0,
    self_train: Annotated[
        float | None,
        typer.Option(
            min=0.5,
            max=1.0,
            help="Self-training: also train on logged queries nobody labelled that the champion answers "
            "with at least this probability, its answer as the label (e.g. 0.9; default off).",
            show_default=False,
        ),
    ] = None,
    self_train_teachers: Annotated[
        int,
        typer.Option(
            min=0,
            max=8,
            help="With --self-train: 0 lets the champion label the traffic; K >= 1 first trains K models "
            "on the new labels (other training seeds) and labels it with their averaged answers "
            "(K + 1 trainings).",
        ),
    ] = 0,
    dry_run: Annotated[bool, typer.Option(help="Register the challenger but never promote.")] = False,
    promotion: Annotated[
        Promotion,
        typer.Option(
            case_sensitive=False,
            help="shadow: a challenger that passes the gate goes to shadow on live traffic and the "
            "routers promote it on reviewed evidence (exit 12); direct: the gate promotes it (exit 0).",
        ),
    ] = Promotion.shadow,
    progress: ProgressOpt = True,
    overrides: Annotated[
        list[str] | None, typer.Argument(help="Training overrides, e.g. optim.epochs=2")
    ] = None,
) -> None:
    """Retrain from logged feedback; the challenger replaces the champion only if the gate says so."""
    if not 0.0 < holdout < 1.0:
        fail(f"--holdout must be between 0 and 1, not {holdout}")
    if self_train_teachers and self_train is None:
        fail("--self-train-teachers needs --self-train (the confidence its answers must reach)")
    quiet_libraries()
    with user_errors():
        from router.store.queries import feedback_rows, unlabelled_texts
        from training.feedback_data import resolve
        from training.retrain import RetrainOptions
        from training.retrain import retrain as run_retrain

        feedback = resolve(feedback_rows(database_url, since=since))
        traffic = unlabelled_texts(database_url, since=since) if self_train is not None else []
        decision = run_retrain(
            RetrainOptions(
                registry=registry,
                min_feedback=min_feedback,
                min_examples=min_examples,
                holdout_fraction=holdout,
                feedback_weight=feedback_weight,
                test_margin=test_margin,
                start_from=cast(Literal["auto", "champion", "base"], start_from.value),
                continue_lr_factor=lr_factor,
                continue_epochs=continue_epochs,
                self_train=self_train,
                self_train_teachers=self_train_teachers,
                overrides=list(overrides or []),
                promote=not dry_run,
                promotion=cast(Literal["shadow", "direct"], promotion.value),
            ),
            feedback,
            traffic=traffic,
            progress=progress,
        )
    print(
        json.dumps(
            {
                "outcome": decision.outcome.name.lower(),
                "reason": decision.reason,
                "challenger": decision.version,
                "intents": decision.report.get("intents"),
            },
            default=str,
        )
    )
    raise typer.Exit(int(decision.outcome))
