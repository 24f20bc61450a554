"""What `switchboard retrain` is asked (`RetrainOptions`) and what it answers (`Outcome`,
`RetrainDecision`): one place for the steps that read them (training.retrain, training.challenger)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any, Literal

from serving.taxonomy import PENDING_MIN_EXAMPLES


class Outcome(IntEnum):
    """Process exit codes, for cron: 0 promoted, 10 not promoted, 11 nothing to do, 12 in shadow
    (2: bad input)."""

    PROMOTED = 0
    NOT_PROMOTED = 10
    NOTHING_TO_DO = 11
    SHADOW = 12  # passed the offline gate: in shadow, promotion is decided on live traffic


@dataclass
class RetrainOptions:
    registry: Path
    min_feedback: int = 20
    min_examples: int = PENDING_MIN_EXAMPLES  # feedback examples a pending intent needs to be trained
    holdout_fraction: float = 0.2
    feedback_weight: int = 3  # each feedback example appears this many times in train
    test_margin: float = 0.005  # the challenger may lose at most this much test accuracy
    # auto: from the base when the feedback is a large part of what the line has learnt (at least
    # `base_share` of the original training examples: a cold start, where a full retrain on
    # everything is both cheap and what learns most), else from the champion (its head grown for
    # new intents), which keeps what a large original dataset taught it.
    start_from: Literal["auto", "champion", "base"] = "auto"
    base_share: float = 0.25
    # From the champion, the recipe's learning rates are scaled by this: its weights are tuned
    # already, and another epoch at the recipe's peak rate walks them away from what they knew
    # (Banking77: -0.71 points on unseen queries at 1.0, none at 0.1; docs/BENCHMARKS.md). An
    # explicit optim.learning_rate override wins.
    continue_lr_factor: float = 0.1
    # From the champion, train this many epochs (not the recipe's): the champion has converged on
    # the line's data, the grown head already answers new intents, and every epoch is a pass over
    # all of that data (5 new Banking77 intents: 6 epochs, 14.3 min under load). Chosen on the gate's
    # held-out numbers, never a test split (docs/RETRAINING.md). An optim.epochs override wins.
    continue_epochs: float = 1.0
    # self-training (training.self_training): unlabelled logged traffic the champion answers with
    # at least this probability joins train with its answer as the label; None: off
    self_train: float | None = None
    # 0: the champion labels the traffic (one training). K >= 1: K models are first trained on the
    # challenger's own labelled data (the recipe, training seeds seed..seed+K-1) and their averaged
    # answers label it; then the challenger trains on both (K + 1 trainings). Banking77's cold
    # start, round 3, offline: 90.49% without, 91.49% with K = 3 at 0.9, 92.01% at 0.7; served
    # through the product at 0.7 with K = 3: 92.18% (docs/BENCHMARKS.md, "Retrain recipes").
    self_train_teachers: int = 0
    overrides: list[str] = field(default_factory=list)  # TrainConfig overrides, e.g. optim.epochs=2
    workdir: Path | None = None
    promote: bool = True
    # shadow: a challenger that passes the gate goes to shadow on live traffic (serving.rollout),
    # and the routers promote it on reviewed evidence (router.promotion); direct: the gate promotes
    # it at once (benchmarks that measure something else than the rollout)
    promotion: Literal["shadow", "direct"] = "shadow"
    seed: int = 42


@dataclass
class RetrainDecision:
    outcome: Outcome
    reason: str
    report: dict[str, Any]
    version: str | None = None
