"""`switchboard retrain`: logged feedback -> challenger -> evaluation gate -> (promotion).

1. the champion and its recipe (config.yaml) from the registry;
2. feedback, read from the store by the caller (the CLI) and resolved (latest label per
   request; conflicts reported and left out); a slice held out for the gate;
3. the challenger's plan (training.challenger): the line's original labelled data (its snapshot
   in the registry that `lineage.json` names: `serving.lineage`) + the rest of the feedback to
   date, oversampled, and the recipe; validation and test stay the original's;
4. the challenger is trained in a scratch directory;
5. gate (training.gate.decide): both models on the fixed test set and on the held-out feedback,
   paired: the challenger must be significantly better on one and not worse on either;
6. register the challenger (alias `challenger`); promote it if it passed;
7. a decision report (JSON + markdown) next to the new version.

Crash safety: nothing touches the registry before step 6, and registering and promoting are
atomic renames; a retrain that fails or is killed before then leaves champion and registry as
they were.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from serving.lineage import write_lineage
from serving.registry import ModelVersion, Registry
from serving.rollout import RolloutConflict, start_shadow
from training.challenger import new_intents_in_train, plan_challenger, plan_intents, relabelled
from training.config import load_config
from training.data import DatasetError, Split, load_dataset
from training.decision_report import write_report
from training.feedback_data import FeedbackExample, FeedbackSet
from training.gate import compare, decide
from training.line_snapshot import ensure_lineage, resolved_line
from training.modeling import load_classifier, model_labels
from training.predict import predict_proba
from training.retrain_options import Outcome, RetrainDecision, RetrainOptions
from training.train import train

__all__ = ["Outcome", "RetrainDecision", "RetrainOptions", "retrain", "split_feedback"]

log = logging.getLogger(__name__)

TRAINED_FEEDBACK_FILE = "trained_feedback.json"  # keys of every feedback text the line trained on


def retrain(
    opts: RetrainOptions, feedback: FeedbackSet, *, traffic: Sequence[str] = (), progress: bool = True
) -> RetrainDecision:
    """Train a challenger on the champion's data plus `feedback` (resolved rows from the store),
    and with `opts.self_train` the confident part of `traffic` (logged texts without feedback),
    gate it, register it and promote it if it passed."""
    registry = Registry(opts.registry)
    with registry.retrain_lock():
        return _retrain(registry, opts, feedback, traffic, progress)


def _retrain(
    registry: Registry, opts: RetrainOptions, feedback: FeedbackSet, traffic: Sequence[str], progress: bool
) -> RetrainDecision:
    started = time.perf_counter()
    steps, lap = _stopwatch()  # where the time went, step by step (decision.json: step_seconds)

    # 1. Champion, its recipe, and the line's original data and base from the registry alone
    #    (an older registry is migrated here, or the retrain stops naming what is missing); the
    #    challenger's intents: the champion's kept ones + the pending ones with enough feedback.
    champion = registry.get("champion")
    config = load_config(champion.path / "config.yaml", opts.overrides)
    lineage = ensure_lineage(registry.root, champion.path)
    line_data, line_base = resolved_line(registry.root, lineage)
    taxonomy = registry.taxonomy()
    every_feedback_text = [ex.text for ex in feedback.examples]
    targets, relabel, usable, intents = plan_intents(taxonomy, feedback.examples, opts.min_examples)
    base = relabelled(load_dataset(line_data), relabel, targets)

    # 2. Feedback: only what the champion's line never trained on counts, and only that is held out
    #    for the gate (feedback it trained on would flatter it).
    report: dict[str, Any] = {"champion": champion.version, "feedback": _feedback_facts(feedback, usable)}
    report["intents"] = intents
    trained_before = _trained_feedback(champion.path)
    fresh = [ex for ex in usable if _text_key(ex.text) not in trained_before]
    report["feedback"]["new"] = len(fresh)
    if len(fresh) < opts.min_feedback:
        reason = (
            f"nothing to do: {len(fresh)} usable feedback rows the champion has not trained on "
            f"({len(usable) - len(fresh)} it has), at least {opts.min_feedback} needed"
        )
        return RetrainDecision(Outcome.NOTHING_TO_DO, reason, report)
    feedback.examples = usable
    fb_train, fb_holdout = split_feedback(usable, trained_before, opts.holdout_fraction, opts.seed)
    fb_train, fb_holdout = new_intents_in_train(fb_train, fb_holdout, set(intents["trained"]))
    report["feedback"].update(train=len(fb_train), holdout=len(fb_holdout))

    scratch = Path(opts.workdir or tempfile.mkdtemp(prefix="switchboard-retrain-"))
    try:
        # 3. The challenger's plan: its data and recipe (training.challenger).
        if base.test is None:
            raise DatasetError(f"the champion's dataset {base.name!r} has no test split for the gate")
        never_pseudo = [*base.train.texts, *base.validation.texts, *base.test.texts, *every_feedback_text]
        lap("read")
        plan = plan_challenger(
            config, opts, champion=champion.path, line_base=line_base, base=base, taxonomy=taxonomy,
            targets=targets, relabel=relabel, renamed=intents["renamed"], feedback=fb_train,
            feedback_total=len(usable), never_pseudo=never_pseudo,
            traffic=traffic, scratch=scratch, progress=progress,
        )  # fmt: skip
        report.update(plan.report)
        lap("plan")  # with self-training teachers: their trainings too

        # 4. Train it, with its lineage and the feedback its line has now trained on.
        result = train(plan.config, progress=progress)
        write_lineage(result.output_dir, lineage)
        trained = sorted(trained_before | {_text_key(ex.text) for ex in fb_train})
        (result.output_dir / TRAINED_FEEDBACK_FILE).write_text(json.dumps(trained) + "\n")
        lap("train")  # the contrastive stage, training, export, evaluation

        # 5. Gate, paired on the line's test split and the held-out feedback (training.gate).
        passed, reason = _gate(
            champion.path, result.output_dir, base.test, usable, fb_holdout, relabel, opts, report, progress
        )
        lap("gate")

        # 6. Register; promote, or put in shadow, if it passed.
        version = registry.register(
            result.output_dir, parent=champion.version, alias="challenger", note=f"retrain: {reason}"
        )
        outcome, reason = _after_gate(registry, version, champion.version, passed, reason, opts, report)
        lap("register")  # and promote, or start the shadow
        report["retrain_seconds"] = round(time.perf_counter() - started, 1)
        report["step_seconds"] = steps

        # 7. Decision report, next to the new version.
        write_report(version.path, report)
        return RetrainDecision(outcome, reason, report, version.version)
    finally:
        if opts.workdir is None:
            shutil.rmtree(scratch, ignore_errors=True)


def _stopwatch() -> tuple[dict[str, float], Callable[[str], None]]:
    """(steps, lap): `lap(name)` records in `steps` the seconds since the previous lap (or since
    the stopwatch was made) under `name`."""
    steps: dict[str, float] = {}
    last = [time.perf_counter()]

    def lap(name: str) -> None:
        now = time.perf_counter()
        steps[name] = round(now - last[0], 1)
        last[0] = now

    return steps, lap


def _feedback_facts(feedback: FeedbackSet, usable: list[FeedbackExample]) -> dict[str, Any]:
    return {
        "rows_read": feedback.rows_read,
        "usable": len(usable),
        "superseded": feedback.superseded,
        "without_text": feedback.without_text,
        "conflicting_texts": len(feedback.conflicts),
        "conflicts": dict(list(feedback.conflicts.items())[:20]),
    }


def _gate(
    champion: Path,
    challenger: Path,
    test: Split,
    usable: list[FeedbackExample],
    fb_holdout: list[FeedbackExample],
    relabel: dict[str, str],
    opts: RetrainOptions,
    report: dict[str, Any],
    progress: bool,
) -> tuple[bool, str]:
    """Both models on the same examples; the decision (training.gate.decide) and the scores go
    into `report`. Test texts that also came in as feedback are left out: the challenger trained
    on them, so they would flatter it."""
    holdout = Split([ex.text for ex in fb_holdout], [ex.label for ex in fb_holdout])
    seen = {ex.text for ex in usable}
    kept = [(t, y) for t, y in zip(test.texts, test.labels, strict=True) if t not in seen]
    gate_test = Split([t for t, _ in kept], [y for _, y in kept])
    report["gate_test"] = {"n": len(gate_test), "left_out_as_feedback": len(test) - len(gate_test)}
    splits = {"test": gate_test, "feedback_holdout": holdout}
    correct = {
        "champion": _correct(champion, splits, progress, relabel),
        "challenger": _correct(challenger, splits, progress),
    }
    comparisons = {name: compare(correct["champion"][name], correct["challenger"][name]) for name in splits}
    passed, reason, evidence = decide(comparisons, opts.test_margin, opts.holdout_fraction)
    scores = {
        model: {
            name: {"accuracy": (sum(c) / len(c)) if c else None, "n": len(c), "correct": sum(c)}
            for name, c in correct[model].items()
        }
        for model in correct
    }
    report.update(scores=scores, gate=evidence, test_margin=opts.test_margin, passed=passed, reason=reason)
    return passed, reason


def _after_gate(
    registry: Registry,
    version: ModelVersion,
    champion: str,
    passed: bool,
    reason: str,
    opts: RetrainOptions,
    report: dict[str, Any],
) -> tuple[Outcome, str]:
    """Promote a registered challenger that passed (direct, if the champion is still the one it
    was compared with), or put it in shadow; (outcome, reason)."""
    promoted = shadowed = False
    if passed and opts.promote and opts.promotion == "direct":
        promoted = registry.promote_if_champion(version.version, champion)
        if not promoted:
            reason = f"the champion changed during the retrain (was {champion}): not promoted"
    elif passed and opts.promote:
        shadowed, why = _start_shadow(registry, version.version, reason)
        reason = f"{reason}; {why}"
    report.update(challenger=version.version, promoted=promoted, shadow=shadowed)
    outcome = Outcome.PROMOTED if promoted else Outcome.SHADOW if shadowed else Outcome.NOT_PROMOTED
    return outcome, reason


def _start_shadow(registry: Registry, version: str, reason: str) -> tuple[bool, str]:
    """Put a challenger that passed the gate in shadow (serving.rollout); (done, what happened)."""
    try:
        start_shadow(registry, version, by="retrain", reason=f"passed the offline gate: {reason}")
    except RolloutConflict as err:
        return False, f"not put in shadow: {err}"
    return True, "in shadow: the routers promote it on reviewed live evidence"


def split_feedback(
    usable: list[FeedbackExample], trained_before: set[str], holdout_fraction: float, seed: int
) -> tuple[list[FeedbackExample], list[FeedbackExample]]:
    """(train, held out): the held-out part is drawn only from feedback the champion's line never
    trained on (`trained_before`: `_text_key`s), so it cannot flatter the champion; feedback trained
    on before stays in train (the challenger keeps learning it)."""
    fresh = [ex for ex in usable if _text_key(ex.text) not in trained_before]
    train, holdout = FeedbackSet(fresh).split(holdout_fraction, seed)
    return [ex for ex in usable if _text_key(ex.text) in trained_before] + train, holdout


def _text_key(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _trained_feedback(model_dir: Path) -> set[str]:
    """Keys of the feedback texts this model and its ancestors were trained on (`_text_key`)."""
    path = model_dir / TRAINED_FEEDBACK_FILE
    return set(json.loads(path.read_text())) if path.is_file() else set()


def _correct(
    model_dir: Path, splits: dict[str, Split], progress: bool, relabel: dict[str, str] | None = None
) -> dict[str, list[bool]]:
    """Per example of each split: does the model's top intent equal the gold label? (Gold labels
    the model does not know, such as a new intent for the champion, simply count as wrong; a
    renamed intent's old name, `relabel`, counts as its new one.)"""
    model, tokenizer = load_classifier(model_dir)
    labels = model_labels(model)
    out: dict[str, list[bool]] = {}
    for name, split in splits.items():
        if len(split) == 0:
            out[name] = []
            continue
        probs = predict_proba(model, tokenizer, split.texts, progress=progress)
        predicted = [(relabel or {}).get(labels[i], labels[i]) for i in probs.argmax(axis=1)]
        out[name] = [p == y for p, y in zip(predicted, split.labels, strict=True)]
    return out
