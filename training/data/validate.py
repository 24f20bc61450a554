"""Dataset validation: fatal problems raise a one-line :class:`DatasetError`, the rest goes
into the :class:`ValidationReport`."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence

from training.data.types import DatasetError, Record, ValidationReport, preview

__all__ = [
    "build_report",
    "check_declared_labels",
    "check_eval_labels",
    "check_fixed_labels",
    "check_fraction",
    "check_records",
    "check_splittable",
]


def check_fraction(name: str, value: float) -> None:
    """A split fraction must lie strictly between 0 and 1."""
    if not 0.0 < value < 1.0:
        raise DatasetError(f"{name} must be between 0 and 1 (exclusive), got {value}")


def check_records(records: Sequence[Record], origin: str) -> None:
    """Non-empty split, and no empty text or label in any record."""
    if not records:
        raise DatasetError(f"dataset is empty: {origin} has no examples")
    for record in records:
        if not record.text:
            raise DatasetError(f"{record.where}: empty text")
        if not record.label:
            raise DatasetError(f"{record.where}: empty label")


def check_declared_labels(data_labels: Iterable[str], declared: Sequence[str], origin: str) -> list[str]:
    """Every data label must be declared; returns warnings for declared labels without data."""
    declared_set = set(declared)
    data_set = set(data_labels)
    undeclared = sorted(data_set - declared_set)
    if undeclared:
        raise DatasetError(f"{origin}: labels in the data but not declared: {preview(undeclared)}")
    unused = sorted(declared_set - data_set)
    return [f"{origin}: declared labels with no examples: {preview(unused)}"] if unused else []


def check_fixed_labels(data_labels: Iterable[str], fixed: Sequence[str]) -> None:
    """With a fixed label set (retraining), no data label may fall outside it."""
    outside = sorted(set(data_labels) - set(fixed))
    if outside:
        raise DatasetError(f"labels not in the fixed label set of {len(fixed)} labels: {preview(outside)}")


def check_splittable(group_labels: Sequence[str], needed: int, purpose: str, origin: str) -> None:
    """Each label needs ``needed`` distinct texts before a stratified split can be carved."""
    counts = Counter(group_labels)
    short = sorted((count, label) for label, count in counts.items() if count < needed)
    if short:
        count, label = short[0]
        more = len(short) - 1
        others = f" (and {more} more label{'s' if more > 1 else ''})" if more else ""
        raise DatasetError(
            f"label {label!r} has only {count} distinct example(s) in {origin}; at least "
            f"{needed} are needed to carve {purpose}{others}; add examples or provide the split"
        )


def check_eval_labels(train_labels: set[str], records: Sequence[Record], origin: str) -> None:
    """Labels of a validation/test split must all occur in train."""
    unseen = sorted({record.label for record in records} - train_labels)
    if unseen:
        raise DatasetError(f"{origin}: labels not present in train: {preview(unseen)}")


def build_report(splits: Mapping[str, Sequence[Record]], warnings: Sequence[str] = ()) -> ValidationReport:
    """Duplicates and conflicts (over all splits together), train label counts, leakage."""
    labels_by_text: dict[str, Counter[str]] = defaultdict(Counter)
    for records in splits.values():
        for record in records:
            labels_by_text[record.text][record.label] += 1
    duplicates = sum(n - 1 for labels in labels_by_text.values() for n in labels.values() if n > 1)
    conflicts = [(text, sorted(labels)) for text, labels in labels_by_text.items() if len(labels) > 1]
    report = ValidationReport(
        duplicate_texts=duplicates,
        conflicting_texts=conflicts,
        label_counts=dict(sorted(Counter(r.label for r in splits["train"]).items())),
        warnings=list(warnings),
    )
    if duplicates:
        report.warnings.append(
            f"{duplicates} duplicate example(s): same text and label more than once (kept)"
        )
    if conflicts:
        text, labels = conflicts[0]
        report.warnings.append(
            f"{len(conflicts)} text(s) with conflicting labels, e.g. {text!r} -> {', '.join(labels)}"
        )
    train_texts = {record.text for record in splits["train"]}
    for name, records in splits.items():
        if name == "train":
            continue
        leaked = {record.text for record in records} & train_texts
        if leaked:
            report.warnings.append(f"{len(leaked)} {name} text(s) also appear in train")
    return report
