"""The challenger's recipe, one unit: (champion, taxonomy, feedback, unlabelled traffic, options)
-> what the challenger trains on and how (`plan_challenger`), for `switchboard retrain` to train.

- Intents (`plan_intents`): the champion's kept intents (renamed, retired left out) + the pending
  ones with enough feedback; the line's original data under those names (`relabelled`).
- Data: the line's original train split + the feedback (oversampled `feedback_weight` times) +,
  with self-training, the confident answers on unlabelled traffic (training.self_training), by
  the champion or by teachers trained on these labels first; validation and test stay the
  line's, so the numbers compare. One dataset writer (`training.line_snapshot.write_split`).
- Recipe: the champion's config; from the base (a cold start, where the feedback is a large part
  of what the line learnt) or continued from the champion (head grown, learning rates scaled by
  `continue_lr_factor`, `continue_epochs` epochs). With few labels per intent, `switchboard train`
  itself adds the contrastive stage (training.contrastive).
"""

from __future__ import annotations

import copy
import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from serving.taxonomy import Taxonomy
from training.config import TrainConfig, parse_overrides
from training.data import IntentDataset, Split
from training.feedback_data import FeedbackExample
from training.line_snapshot import write_split
from training.retrain_options import RetrainOptions
from training.self_training import pseudo_labels
from training.train import train

log = logging.getLogger(__name__)


@dataclass
class ChallengerPlan:
    config: TrainConfig  # the challenger's training: its dataset is the plan's scratch directory
    report: dict[str, Any]  # for the decision report: "training", and "self_training" when on


def plan_challenger(
    config: TrainConfig,
    opts: RetrainOptions,
    *,
    champion: Path,
    line_base: str,
    base: IntentDataset,
    taxonomy: Taxonomy,
    targets: list[str],
    relabel: dict[str, str],
    renamed: dict[str, str],
    feedback: Sequence[FeedbackExample],
    feedback_total: int,
    never_pseudo: Sequence[str],
    traffic: Sequence[str],
    scratch: Path,
    progress: bool = True,
) -> ChallengerPlan:
    """The challenger's dataset (written under `scratch`) and config. `feedback`: the examples it
    trains on; `feedback_total`: all usable feedback (decides a cold start); `never_pseudo`: texts
    self-training must not label (the line's data and every feedback text)."""
    assert base.test is not None, "the gate needs the line's test split"
    report: dict[str, Any] = {}
    pseudo: list[tuple[str, str]] = []
    if opts.self_train is not None and not opts.self_train_teachers:  # the champion labels traffic
        found = pseudo_labels(
            champion, traffic, min_confidence=opts.self_train, exclude=never_pseudo, targets=targets,
            relabel=relabel, progress=progress,
        )  # fmt: skip
        pseudo = found.examples
        report["self_training"] = {"teachers": [champion.name], **found.to_json()}
    data_dir = scratch / "data"
    feedback_rows = [(ex.text, ex.label) for ex in feedback] * opts.feedback_weight
    write_split(data_dir / "train.csv", base.train, feedback_rows + pseudo)
    write_split(data_dir / "validation.csv", base.validation, [])
    write_split(data_dir / "test.csv", base.test, [])
    write_intents(data_dir, taxonomy, targets, base.routes)

    config = copy.deepcopy(config)
    config.data.soft_targets = None  # a retrain's training data is its own
    config.data.dataset = str(data_dir)
    config.output_dir = str(scratch / "challenger")
    config.model.base_model = line_base
    config.data.labels = targets  # kept labels in the champion's order, then the new ones
    config.model.label_renames = {}
    if config.optim.head_init == "grow":  # a retrained champion's recipe; from the base: fresh
        config.optim.head_init = "random"
    start_from = opts.start_from
    if start_from == "auto":
        start_from = "base" if feedback_total >= opts.base_share * len(base.train) else "champion"
    if start_from == "champion":
        config.model.base_model = str(champion)
        # the champion's head rows by name, rows fitted for new intents (training.head_growth)
        config.optim.head_init = "grow"
        config.model.label_renames = dict(renamed)
        explicit = parse_overrides(opts.overrides).get("optim", {})
        if "learning_rate" not in explicit:
            config.optim.learning_rate *= opts.continue_lr_factor
            if config.optim.head_learning_rate is not None:
                config.optim.head_learning_rate *= opts.continue_lr_factor
        if "epochs" not in explicit:
            config.optim.epochs = opts.continue_epochs
    report["training"] = {
        "start_from": start_from,
        "start_from_option": opts.start_from,
        "learning_rate": config.optim.learning_rate,
        "head_learning_rate": config.optim.head_learning_rate,
        "epochs": config.optim.epochs,
    }
    if opts.self_train is not None and opts.self_train_teachers:
        # two stages: teachers trained on these labels, then the challenger on their answers too
        found = pseudo_labels(
            _teachers(config, opts.self_train_teachers, scratch, progress), traffic,
            min_confidence=opts.self_train, exclude=never_pseudo, targets=targets, progress=progress,
        )  # fmt: skip
        seeds = range(config.optim.seed, config.optim.seed + opts.self_train_teachers)
        report["self_training"] = {
            "teachers": [f"trained on these labels, seed {seed}" for seed in seeds],
            **found.to_json(),
        }
        write_split(data_dir / "train.csv", base.train, feedback_rows + found.examples)
    return ChallengerPlan(config, report)


def _teachers(config: TrainConfig, count: int, scratch: Path, progress: bool) -> list[Path]:
    """`count` models trained with the challenger's own recipe and data, seeds seed..seed+count-1."""
    teachers = []
    for i in range(count):
        log.info("self-training: training teacher %d of %d", i + 1, count)
        teacher = copy.deepcopy(config)
        teacher.output_dir = str(scratch / f"teacher-{i}")
        teacher.optim.seed = config.optim.seed + i
        teachers.append(train(teacher, progress=progress).output_dir)
    return teachers


def plan_intents(
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


def relabelled(data: IntentDataset, relabel: dict[str, str], targets: list[str]) -> IntentDataset:
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


def new_intents_in_train(
    train: list[FeedbackExample], holdout: list[FeedbackExample], new: set[str]
) -> tuple[list[FeedbackExample], list[FeedbackExample]]:
    """A new intent needs training examples: if the split held out all of its texts (only
    possible with very few), they go to train (a text still never lands on both sides)."""
    missing = new - {ex.label for ex in train}
    if not missing:
        return train, holdout
    moved = [ex for ex in holdout if ex.label in missing]
    return train + moved, [ex for ex in holdout if ex.label not in missing]


def write_intents(data_dir: Path, taxonomy: Taxonomy, targets: list[str], routes: dict[str, str]) -> None:
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
