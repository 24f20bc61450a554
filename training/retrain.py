"""`switchboard retrain`: logged feedback -> challenger -> evaluation gate -> (promotion).

1. the champion and its recipe (config.yaml) from the registry;
2. feedback, read from the store by the caller (the CLI) and resolved (latest label per
   request; conflicts reported and left out); a slice held out for the gate;
3. training data = the line's original labelled data (its snapshot in the registry that
   `lineage.json` names: `serving.lineage`) + the rest of the feedback to date, oversampled;
   validation and test stay the original's, so the numbers compare;
4. the challenger is trained in a scratch directory (from the champion's weights by default);
5. gate: both models on the fixed test set and on the held-out feedback: promote only if the
   challenger is not worse on test by more than `test_margin` and better on the feedback slice;
6. register the challenger (alias `challenger`); promote it if it passed;
7. a decision report (JSON + markdown) next to the new version.

Crash safety: nothing touches the registry before step 6, and registering and promoting are
atomic renames; a retrain that fails or is killed before then leaves champion and registry as
they were.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import IntEnum
from pathlib import Path
from typing import Any, Literal

from serving.lineage import write_lineage
from serving.registry import Registry
from serving.rollout import RolloutConflict, start_shadow
from serving.taxonomy import PENDING_MIN_EXAMPLES, Taxonomy
from training.config import load_config, parse_overrides
from training.data import DatasetError, IntentDataset, Split, load_dataset
from training.feedback_data import FeedbackExample, FeedbackSet
from training.formatting import pct
from training.gate import (
    ALPHA,
    ALPHA_FEEDBACK,
    ALPHA_TEST,
    PairedComparison,
    compare,
    examples_needed,
    significantly_better,
    significantly_worse_than,
)
from training.line_snapshot import ensure_lineage, resolved_line, write_split
from training.modeling import load_classifier, model_labels
from training.predict import predict_proba
from training.self_training import pseudo_labels
from training.train import train

log = logging.getLogger(__name__)

TRAINED_FEEDBACK_FILE = "trained_feedback.json"  # keys of every feedback text the line trained on


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
    # self-training (training.self_training): unlabelled logged traffic the champion answers with
    # at least this probability joins train with its answer as the label; None: off
    self_train: float | None = None
    # 0: the champion labels the traffic (one training). K >= 1: K models are first trained on the
    # challenger's own labelled data (the recipe, training seeds seed..seed+K-1) and their averaged
    # answers label it; then the challenger trains on both (K + 1 trainings). Banking77's cold
    # start, round 3, offline: 90.49% without, 91.49% with K = 3 at 0.9, 92.01% at 0.7; served
    # through the product at 0.7 with K = 3: 92.18% (docs/RETRAINING.md).
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

    # 1. Champion and its recipe.
    champion = registry.get("champion")
    config = load_config(champion.path / "config.yaml", opts.overrides)
    # the line's original data and base, from the registry alone (serving.lineage): an older
    # registry is migrated here, or the retrain stops before training naming what is missing
    lineage = ensure_lineage(registry.root, champion.path)
    line_data, line_base = resolved_line(registry.root, lineage)
    base = load_dataset(line_data)
    # the champion's intents and the changes since (serving.taxonomy): the challenger's labels are
    # the kept ones (renamed, retired left out) + the pending ones with enough feedback
    taxonomy = registry.taxonomy()
    feedback_texts = [ex.text for ex in feedback.examples]
    targets, relabel, examples, report_intents = _plan_intents(taxonomy, feedback.examples, opts.min_examples)
    base = _relabelled(base, relabel, targets)

    # 2. Feedback, resolved; a slice held out for the gate.
    usable = examples
    report: dict[str, Any] = {
        "champion": champion.version,
        "feedback": {
            "rows_read": feedback.rows_read,
            "usable": len(usable),
            "superseded": feedback.superseded,
            "without_text": feedback.without_text,
            "conflicting_texts": len(feedback.conflicts),
            "conflicts": dict(list(feedback.conflicts.items())[:20]),
        },
        "intents": report_intents,
    }
    # Feedback the champion (or an ancestor) trained on cannot judge it: it would flatter the
    # champion. Only new feedback is counted, and only new feedback is held out for the gate.
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
    fb_train, fb_holdout = _new_intents_in_train(fb_train, fb_holdout, set(report_intents["trained"]))
    report["feedback"].update(train=len(fb_train), holdout=len(fb_holdout))

    scratch = Path(opts.workdir or tempfile.mkdtemp(prefix="switchboard-retrain-"))
    try:
        # 3. Training data: champion's train + feedback (oversampled) + with self-training the
        #    champion's confident answers on unlabelled traffic; same validation and test.
        if base.test is None:
            raise DatasetError(f"the champion's dataset {base.name!r} has no test split for the gate")
        never_pseudo = [*base.train.texts, *base.validation.texts, *base.test.texts, *feedback_texts]
        pseudo: list[tuple[str, str]] = []
        if opts.self_train is not None and not opts.self_train_teachers:
            found = pseudo_labels(
                champion.path,
                traffic,
                min_confidence=opts.self_train,
                exclude=never_pseudo,
                targets=targets,
                relabel=relabel,
                progress=progress,
            )
            pseudo = found.examples
            report["self_training"] = {"teachers": [champion.version], **found.to_json()}
        data_dir = scratch / "data"
        feedback_rows = [(ex.text, ex.label) for ex in fb_train] * opts.feedback_weight
        write_split(data_dir / "train.csv", base.train, feedback_rows + pseudo)
        config.data.soft_targets = None  # a retrain's training data is its own
        write_split(data_dir / "validation.csv", base.validation, [])
        write_split(data_dir / "test.csv", base.test, [])
        _write_intents(data_dir, taxonomy, targets, base.routes)

        # 4. Challenger.
        config.data.dataset = str(data_dir)
        config.output_dir = str(scratch / "challenger")
        config.model.base_model = line_base
        config.data.labels = targets  # kept labels in the champion's order, then the new ones
        config.model.label_renames = {}
        if config.optim.head_init == "grow":  # a retrained champion's recipe; from the base: fresh
            config.optim.head_init = "random"
        start_from = opts.start_from
        if start_from == "auto":
            start_from = "base" if len(usable) >= opts.base_share * len(base.train) else "champion"
        if start_from == "champion":
            config.model.base_model = str(champion.path)
            # the champion's head rows by name, rows fitted for new intents (training.head_growth)
            config.optim.head_init = "grow"
            config.model.label_renames = dict(report_intents["renamed"])
            if "learning_rate" not in parse_overrides(opts.overrides).get("optim", {}):
                config.optim.learning_rate *= opts.continue_lr_factor
                if config.optim.head_learning_rate is not None:
                    config.optim.head_learning_rate *= opts.continue_lr_factor
        report["training"] = {
            "start_from": start_from,
            "start_from_option": opts.start_from,
            "learning_rate": config.optim.learning_rate,
            "head_learning_rate": config.optim.head_learning_rate,
            "epochs": config.optim.epochs,
        }
        if opts.self_train is not None and opts.self_train_teachers:
            # two stages: teachers trained on these labels, then the challenger on their answers too
            teachers = []
            for i in range(opts.self_train_teachers):
                log.info("self-training: training teacher %d of %d", i + 1, opts.self_train_teachers)
                teacher = copy.deepcopy(config)
                teacher.output_dir = str(scratch / f"teacher-{i}")
                teacher.optim.seed = config.optim.seed + i
                teachers.append(train(teacher, progress=progress).output_dir)
            found = pseudo_labels(
                teachers, traffic, min_confidence=opts.self_train, exclude=never_pseudo, targets=targets,
                progress=progress,
            )  # fmt: skip
            report["self_training"] = {
                "teachers": [
                    f"trained on these labels, seed {config.optim.seed + i}" for i in range(len(teachers))
                ],
                **found.to_json(),
            }
            write_split(data_dir / "train.csv", base.train, feedback_rows + found.examples)
        result = train(config, progress=progress)
        write_lineage(result.output_dir, lineage)
        trained = sorted(trained_before | {_text_key(ex.text) for ex in fb_train})
        (result.output_dir / TRAINED_FEEDBACK_FILE).write_text(json.dumps(trained) + "\n")

        # 5. Gate. Test texts that also came in as feedback are left out of the test set here:
        #    the challenger trained on them, so they would flatter it.
        holdout = Split([ex.text for ex in fb_holdout], [ex.label for ex in fb_holdout])
        seen = {ex.text for ex in feedback.examples}
        kept = [(t, y) for t, y in zip(base.test.texts, base.test.labels, strict=True) if t not in seen]
        gate_test = Split([t for t, _ in kept], [y for _, y in kept])
        report["gate_test"] = {"n": len(gate_test), "left_out_as_feedback": len(base.test) - len(gate_test)}
        splits = {"test": gate_test, "feedback_holdout": holdout}
        correct = {
            "champion": _correct(champion.path, splits, progress, relabel),
            "challenger": _correct(result.output_dir, splits, progress),
        }
        comparisons = {
            name: compare(correct["champion"][name], correct["challenger"][name]) for name in splits
        }
        passed, reason, evidence = _gate(comparisons, opts.test_margin, opts.holdout_fraction)
        scores = {
            model: {
                name: {
                    "accuracy": (sum(c) / len(c)) if c else None,
                    "n": len(c),
                    "correct": sum(c),
                }
                for name, c in correct[model].items()
            }
            for model in correct
        }
        report.update(
            scores=scores, gate=evidence, test_margin=opts.test_margin, passed=passed, reason=reason
        )

        # 6. Register (and promote, if the champion is still the one the gate compared against).
        version = registry.register(
            result.output_dir, parent=champion.version, alias="challenger", note=f"retrain: {reason}"
        )
        promoted = shadowed = False
        if passed and opts.promote and opts.promotion == "direct":
            promoted = registry.promote_if_champion(version.version, champion.version)
            if not promoted:
                reason = f"the champion changed during the retrain (was {champion.version}): not promoted"
        elif passed and opts.promote:
            shadowed, why = _start_shadow(registry, version.version, reason)
            reason = f"{reason}; {why}"
        report.update(
            challenger=version.version,
            promoted=promoted,
            shadow=shadowed,
            retrain_seconds=round(time.perf_counter() - started, 1),
        )

        # 7. Decision report.
        _write_report(version.path, report)
        outcome = Outcome.PROMOTED if promoted else Outcome.SHADOW if shadowed else Outcome.NOT_PROMOTED
        return RetrainDecision(outcome, reason, report, version.version)
    finally:
        if opts.workdir is None:
            shutil.rmtree(scratch, ignore_errors=True)


def _start_shadow(registry: Registry, version: str, reason: str) -> tuple[bool, str]:
    """Put a challenger that passed the gate in shadow (serving.rollout); (done, what happened)."""
    try:
        start_shadow(registry, version, by="retrain", reason=f"passed the offline gate: {reason}")
    except RolloutConflict as err:
        return False, f"not put in shadow: {err}"
    return True, "in shadow: the routers promote it on reviewed live evidence"


def _plan_intents(
    taxonomy: Taxonomy, examples: list[FeedbackExample], min_examples: int
) -> tuple[list[str], dict[str, str], list[FeedbackExample], dict[str, Any]]:
    """(the challenger's labels, old name -> new name, the feedback examples relabelled and
    limited to those labels, `report["intents"]`). A pending intent is trained once it has
    `min_examples` feedback examples; retired intents' examples are left out."""
    relabel = taxonomy.relabel()
    examples = [replace(ex, label=relabel.get(ex.label, ex.label)) for ex in examples]
    counts = Counter(ex.label for ex in examples)
    pending = [i.name for i in taxonomy.pending]
    trainable = {name for name in pending if counts[name] >= min_examples}
    targets = taxonomy.target_labels(trainable)
    report = {
        "trained": [name for name in pending if name in trainable],
        "still_pending": {
            name: {"examples": counts[name], "needed": min_examples - counts[name]}
            for name in pending
            if name not in trainable
        },
        "retired": [label for label in taxonomy.served_labels if label in taxonomy.changes.retired],
        "renamed": {old: new for old, new in relabel.items() if old in taxonomy.served_labels},
    }
    wanted = set(targets)
    return targets, relabel, [ex for ex in examples if ex.label in wanted], report


def _relabelled(data: IntentDataset, relabel: dict[str, str], targets: list[str]) -> IntentDataset:
    """The original data under the challenger's label names, without labels it drops (retired)."""
    wanted = set(targets)

    def split(part: Split) -> Split:
        pairs = [(t, relabel.get(y, y)) for t, y in zip(part.texts, part.labels, strict=True)]
        kept = [(t, y) for t, y in pairs if y in wanted]
        return Split([t for t, _ in kept], [y for _, y in kept])

    routes = {relabel.get(k, k): v for k, v in data.routes.items()}
    return replace(
        data,
        train=split(data.train),
        validation=split(data.validation),
        test=None if data.test is None else split(data.test),
        routes=routes,
    )


def _new_intents_in_train(
    train: list[FeedbackExample], holdout: list[FeedbackExample], new: set[str]
) -> tuple[list[FeedbackExample], list[FeedbackExample]]:
    """A new intent needs training examples: if the split held out all of its texts (only
    possible with very few), they go to train (a text still never lands on both sides)."""
    missing = new - {ex.label for ex in train}
    if not missing:
        return train, holdout
    moved = [ex for ex in holdout if ex.label in missing]
    return train + moved, [ex for ex in holdout if ex.label not in missing]


def _write_intents(data_dir: Path, taxonomy: Taxonomy, targets: list[str], routes: dict[str, str]) -> None:
    """The scratch dataset's `routes.yaml` (each label's route: the taxonomy's, else the data's) and
    `categories.json` (labels and descriptions): the challenger ships them (routes, few-shot)."""
    import yaml

    route_map = {label: taxonomy.route_of(label) or routes.get(label) for label in targets}
    (data_dir / "routes.yaml").write_text(
        yaml.safe_dump({"routes": {k: v for k, v in route_map.items() if v}}, sort_keys=False)
    )
    descriptions = {label: taxonomy.description_of(label) for label in targets}
    if any(descriptions.values()):
        (data_dir / "categories.json").write_text(json.dumps(descriptions, indent=2) + "\n")


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


def _gate(
    comparisons: dict[str, PairedComparison], margin: float, holdout_fraction: float
) -> tuple[bool, str, dict[str, Any]]:
    """Promote only when the challenger is significantly better on held-out feedback *or* on the
    test set (exact McNemar, one-sided; weighted Bonferroni: p < 0.04 on held-out feedback or
    p < 0.01 on the test set, so the pair keeps alpha 0.05),
    not significantly worse on held-out feedback, and not significantly worse than `-margin` on the
    test set. Returns (passed, reason, evidence for the report)."""
    test, held = comparisons["test"], comparisons["feedback_holdout"]
    evidence: dict[str, Any] = {name: cmp.to_json() for name, cmp in comparisons.items()}
    if test.n == 0:
        return False, "no test texts left for the gate once feedback texts are left out", evidence
    if significantly_worse_than(test, margin):
        return (
            False,
            f"significantly worse on the test set: {test.difference:+.2%} "
            f"(90% CI {test.ci_low:+.2%} to {test.ci_high:+.2%}, allowed: -{margin:.2%})",
            evidence,
        )
    if held.n and held.p_worse < ALPHA:
        return (
            False,
            f"significantly worse on held-out feedback: {held.difference:+.2%} "
            f"(n={held.n}, p={held.p_worse:.3g})",
            evidence,
        )
    on_test = (
        f"test accuracy {test.difference:+.2%} "
        f"(90% CI {test.ci_low:+.2%} to {test.ci_high:+.2%}, p={test.p_better:.2g})"
    )
    on_held = f"held-out feedback accuracy {held.difference:+.2%} (n={held.n}, p={held.p_better:.2g})"
    if held.n and significantly_better(held, ALPHA_FEEDBACK):
        return True, f"{on_held}, {on_test}", evidence
    if significantly_better(test, ALPHA_TEST):
        return True, f"{on_test}; {on_held}", evidence
    needed = examples_needed(held, ALPHA_FEEDBACK) if held.n else None
    if needed is None:
        more = "more feedback of the same kind would not show it"
    else:
        extra_rows = max(1, round((needed - held.n) / holdout_fraction))
        evidence["feedback_holdout"]["held_out_needed"] = needed
        evidence["feedback_holdout"]["more_feedback_needed"] = extra_rows
        more = f"about {extra_rows} more feedback rows at these rates would ({needed} held out)"
    return (
        False,
        f"not significantly better on held-out feedback ({held.difference:+.2%}, n={held.n}, "
        f"p={held.p_better:.3f}) or on the test set ({test.difference:+.2%}, p={test.p_better:.3f}); {more}",
        evidence,
    )


def _write_report(directory: Path, report: dict[str, Any]) -> None:
    (directory / "decision.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    rows = []
    for name, title in (("feedback_holdout", "held-out feedback"), ("test", "test set")):
        e = report["gate"][name]
        rows.append(
            f"| {title} | {e['n']} | {pct(e['champion_accuracy'])} | {pct(e['challenger_accuracy'])} "
            f"| {100 * e['difference']:+.2f} pts ({100 * e['ci_low']:+.2f} to {100 * e['ci_high']:+.2f}) "
            f"| {e['only_champion']} / {e['only_challenger']} | {e['p_better']:.3g} | {e['p_worse']:.3g} |"
        )
    needed = report["gate"]["feedback_holdout"].get("more_feedback_needed")
    fb_counts = report["feedback"]
    md = [
        f"# Retrain decision: {'promoted' if report['promoted'] else 'not promoted'}",
        "",
        f"**Why:** {report['reason']}.",
        "",
        f"Champion {report['champion']}, challenger {report['challenger']}. Paired on the same examples: "
        "difference with its 90% interval; b / c = examples only the champion / only the challenger "
        "gets right; exact McNemar p-values (one-sided).",
        "",
        "| examples | n | champion | challenger | difference (90% CI) | b / c | p better | p worse |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
        *(
            [f"More evidence: about {needed} more feedback rows at these rates would decide it.", ""]
            if needed
            else []
        ),
        f"Feedback: {fb_counts['rows_read']} rows read, {fb_counts['usable']} usable "
        f"({fb_counts['train']} trained on, {fb_counts['holdout']} held out), "
        f"{fb_counts['superseded']} superseded, {fb_counts['conflicting_texts']} conflicting texts left out, "
        f"{fb_counts['without_text']} without text. Test margin: {report['test_margin']:.2%}. "
        f"Retrain took {report['retrain_seconds']} s.",
    ]
    (directory / "decision.md").write_text("\n".join(md) + "\n")
