"""``load_dataset``: resolve a spec, read it, validate it, split it, return an IntentDataset."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from sklearn.model_selection import train_test_split

from training.config import DataSettings
from training.data import hub, readers, validate
from training.data.types import (
    DatasetError,
    IntentDataset,
    LabelMap,
    Record,
    SourceData,
    Split,
    preview,
)

__all__ = ["DATA_DIR_ENV", "NAMED_DATASETS", "fingerprint", "load_dataset", "resolve_source"]

#: Directory holding local copies of the named datasets (``$DIR/banking77``, ``$DIR/clinc150``).
DATA_DIR_ENV = "SWITCHBOARD_DATA_DIR"
NAMED_DATASETS = tuple(hub.NAMED_HUB_DATASETS)
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


log = logging.getLogger(__name__)


def load_configured(settings: DataSettings) -> IntentDataset:
    """The dataset a training config names, split as it says; its validation warnings logged."""
    data = load_dataset(
        settings.dataset,
        validation_fraction=settings.validation_fraction,
        seed=settings.seed,
        labels=settings.labels,
    )
    for warning in data.report.warnings:
        log.warning("%s", warning)
    return data


def load_dataset(
    spec: str | os.PathLike[str],
    *,
    validation_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 42,
    labels: Sequence[str] | None = None,
) -> IntentDataset:
    """Load, validate and split an intent dataset.

    ``spec``: a file or directory, ``banking77`` / ``clinc150`` (local copy under
    ``$SWITCHBOARD_DATA_DIR`` if set, else the Hugging Face Hub), or a hub id ``owner/name``.
    Missing splits are carved from train, stratified by label with ``seed``: test first
    (``test_fraction``, with a warning in the report), then validation
    (``validation_fraction``). ``labels`` fixes the label map (ids in that order), e.g. when
    retraining an existing model; data labels outside it are an error.
    """
    # 1. Arguments.
    validate.check_fraction("validation_fraction", validation_fraction)
    validate.check_fraction("test_fraction", test_fraction)
    fixed = LabelMap(tuple(labels)) if labels is not None else None

    # 2. Read.
    source = resolve_source(spec)
    origins = source.origins

    # 3. Per-record checks, declared / fixed label sets.
    given = {"train": source.train, "validation": source.validation, "test": source.test}
    for split, records in given.items():
        if records is not None:
            validate.check_records(records, origins.get(split, split))
    data_labels = {r.label for records in given.values() if records for r in records}
    warnings = list(source.warnings)
    if source.declared_labels is not None:
        where = origins.get("categories", "declared labels")
        warnings += validate.check_declared_labels(data_labels, source.declared_labels, where)
    if fixed is not None:
        validate.check_fixed_labels(data_labels, fixed.labels)
    unrouted = sorted(set(source.routes) - data_labels)
    if unrouted:
        warnings.append(f"routes for intents with no examples: {preview(unrouted)}")

    # 4. Carve missing splits from train (test first, then validation).
    train, test = source.train, source.test
    train_origin = origins.get("train", "train")
    if test is None:
        needed = 3 if source.validation is None else 2
        train, test, note = _carve(train, test_fraction, seed, "test", train_origin, needed)
        warnings.append(
            f"no test split in the source: held out {len(test)} train examples "
            f"({test_fraction:.0%}, stratified, seed {seed}) as test{note}"
        )
    validation = source.validation
    if validation is None:
        train, validation, note = _carve(train, validation_fraction, seed, "validation", train_origin, 2)
        if note:
            warnings.append(f"validation split{note}")

    # 5. Evaluation labels must be known from train.
    splits = {"train": train, "validation": validation, "test": test}
    train_labels = {record.label for record in train}
    for split in ("validation", "test"):
        validate.check_eval_labels(train_labels, splits[split], origins.get(split, split))

    # 6. Label map, report, fingerprint.
    label_map = fixed if fixed is not None else LabelMap.from_labels(train_labels)
    report = validate.build_report(splits, warnings)
    return IntentDataset(
        name=source.name,
        train=_to_split(train),
        validation=_to_split(validation),
        test=_to_split(test),
        label_map=label_map,
        routes=dict(sorted(source.routes.items())),
        descriptions=dict(sorted(source.descriptions.items())),
        report=report,
        fingerprint=fingerprint(splits),
    )


def resolve_source(spec: str | os.PathLike[str]) -> SourceData:
    """Read what ``spec`` names: a path, a named dataset or a hub id."""
    path = Path(spec).expanduser()
    if path.exists():
        return readers.read_path(path)
    text = os.fspath(spec)
    if text in hub.NAMED_HUB_DATASETS:
        data_dir = os.environ.get(DATA_DIR_ENV)
        if data_dir:
            local = Path(data_dir).expanduser() / text
            if not local.is_dir():
                raise DatasetError(f"dataset not found: {local} ({DATA_DIR_ENV}={data_dir})")
            source = readers.read_path(local)
        else:
            hub_id, config = hub.NAMED_HUB_DATASETS[text]
            try:
                source = hub.load_hub(hub_id, config)
            except DatasetError as error:  # offline, most often: say where a local copy goes
                raise DatasetError(
                    f"{error}; {DATA_DIR_ENV} is not set: set it to a directory holding {text}/ "
                    f"(a local copy) or let the hub be reached"
                ) from error
        source.name = text
        return source
    if _HUB_ID.fullmatch(text) and not text.endswith(readers.SUFFIXES):
        return hub.load_hub(text)
    raise DatasetError(
        f"dataset not found: {text!r} is not an existing file or directory, a named dataset "
        f"({', '.join(NAMED_DATASETS)}) or a hub id (owner/name)"
    )


def fingerprint(splits: dict[str, list[Record]]) -> str:
    """sha256 over the sorted (split, text, label) triples: same content, same hash."""
    triples = sorted((split, r.text, r.label) for split, records in splits.items() for r in records)
    payload = json.dumps(triples, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _carve(
    records: list[Record], fraction: float, seed: int, purpose: str, origin: str, needed: int
) -> tuple[list[Record], list[Record], str]:
    """Stratified hold-out of ``fraction`` of ``records``: (kept, held out, note).

    Records are grouped by text so that copies of one text never straddle the two parts;
    each group is stratified by its most common label. The hold-out is raised to one
    example per label when the fraction would give fewer (the note says so).
    """
    groups: dict[str, list[Record]] = {}
    for record in records:
        groups.setdefault(record.text, []).append(record)
    texts = list(groups)
    group_labels = [_majority_label(groups[text]) for text in texts]
    validate.check_splittable(group_labels, needed, f"a {purpose} split", origin)

    n_groups, n_labels = len(texts), len(set(group_labels))
    held = max(math.ceil(fraction * n_groups), n_labels)
    if n_groups - held < n_labels:
        raise DatasetError(
            f"{origin}: {n_groups} distinct texts are too few to carve a {purpose} split "
            f"with all {n_labels} labels on both sides"
        )
    note = ""
    if held > math.ceil(fraction * n_groups):
        note = f" (raised to {held} examples so that every label can appear)"
    kept_idx, held_idx = train_test_split(
        list(range(n_groups)), test_size=held, stratify=group_labels, random_state=seed
    )
    kept = [r for i in sorted(kept_idx) for r in groups[texts[i]]]
    held_out = [r for i in sorted(held_idx) for r in groups[texts[i]]]
    return kept, held_out, note


def _majority_label(records: list[Record]) -> str:
    counts = Counter(record.label for record in records)
    return min(counts, key=lambda label: (-counts[label], label))


def _to_split(records: list[Record]) -> Split:
    return Split(texts=[r.text for r in records], labels=[r.label for r in records])
