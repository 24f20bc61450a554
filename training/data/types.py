"""Dataclasses of the dataset layer: splits, label map, validation report, the dataset.

``Record`` and ``SourceData`` are what readers hand to :func:`training.data.load_dataset`;
the rest is the public result.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

__all__ = [
    "OOS_LABEL",
    "DatasetError",
    "IntentDataset",
    "LabelMap",
    "Record",
    "SourceData",
    "Split",
    "ValidationReport",
]

#: The label out-of-scope queries carry (CLINC150 convention).
OOS_LABEL = "oos"


class DatasetError(ValueError):
    """A dataset that cannot be used; the message is one line naming the file/column/label/row."""


def preview(items: Iterable[str], limit: int = 5) -> str:
    """``'a', 'b', 'c' (and 4 more)`` for error messages."""
    items = list(items)
    shown = ", ".join(repr(item) for item in items[:limit])
    return shown + (f" (and {len(items) - limit} more)" if len(items) > limit else "")


@dataclass(frozen=True)
class Record:
    """One labelled example as read from a source; ``where`` locates it for error messages."""

    text: str
    label: str
    where: str
    route: str | None = None


@dataclass
class SourceData:
    """What a reader produces: raw records per split plus whatever metadata the source has."""

    name: str
    train: list[Record]
    validation: list[Record] | None = None
    test: list[Record] | None = None
    routes: dict[str, str] = field(default_factory=dict)
    descriptions: dict[str, str] = field(default_factory=dict)
    #: The declared label list (``categories.json``), if the source has one.
    declared_labels: list[str] | None = None
    #: Human-readable origin of each split ("train.csv", "hub PolyAI/banking77 [train]").
    origins: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Split:
    """Parallel lists of texts and their (string) labels."""

    texts: list[str]
    labels: list[str]

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise DatasetError(f"split has {len(self.texts)} texts but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.texts)


@dataclass(frozen=True)
class LabelMap:
    """Label <-> id mapping; ``labels[i]`` is the label with id ``i``."""

    labels: tuple[str, ...]

    def __post_init__(self) -> None:
        seen: set[str] = set()
        repeated: list[str] = []
        for label in self.labels:
            if label in seen:
                repeated.append(label)
            seen.add(label)
        if repeated:
            raise DatasetError(f"label map has repeated labels: {preview(repeated)}")
        if any(not label for label in self.labels):
            raise DatasetError("label map has an empty label")

    @classmethod
    def from_labels(cls, labels: Iterable[str]) -> LabelMap:
        """Sorted unique labels, so the same label set always gets the same ids."""
        return cls(tuple(sorted(set(labels))))

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.labels))

    @property
    def label2id(self) -> dict[str, int]:
        return {label: i for i, label in enumerate(self.labels)}

    def encode(self, labels: Sequence[str]) -> list[int]:
        """Ids of ``labels``; :class:`DatasetError` naming any label not in the map."""
        label2id = self.label2id
        unknown = sorted({label for label in labels if label not in label2id})
        if unknown:
            raise DatasetError(f"unknown label(s) {preview(unknown)}; the label map has {len(self)} labels")
        return [label2id[label] for label in labels]

    def decode(self, ids: Sequence[int]) -> list[str]:
        """Labels of ``ids`` (inverse of :meth:`encode`)."""
        return [self.labels[i] for i in ids]

    def __len__(self) -> int:
        return len(self.labels)

    def __contains__(self, label: object) -> bool:
        return label in self.labels


@dataclass
class ValidationReport:
    """Non-fatal findings about a dataset (fatal ones raise :class:`DatasetError`)."""

    #: Extra copies of texts that appear more than once with the same label (all splits).
    duplicate_texts: int = 0
    #: Texts that carry more than one label: ``(text, sorted labels)``.
    conflicting_texts: list[tuple[str, list[str]]] = field(default_factory=list)
    #: Label -> number of train examples.
    label_counts: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """A few human-readable lines."""
        lines = []
        if self.label_counts:
            counts = self.label_counts
            smallest = min(counts, key=lambda label: (counts[label], label))
            largest = max(counts, key=lambda label: (counts[label], label))
            lines.append(
                f"train: {sum(counts.values())} examples, {len(counts)} labels, "
                f"smallest {smallest!r} ({counts[smallest]}), "
                f"largest {largest!r} ({counts[largest]})"
            )
        lines.append(
            f"duplicate texts: {self.duplicate_texts} extra copies; "
            f"conflicting texts: {len(self.conflicting_texts)}"
        )
        lines.extend(f"warning: {warning}" for warning in self.warnings)
        return "\n".join(lines)


@dataclass
class IntentDataset:
    """A validated intent dataset, ready for training and evaluation."""

    name: str
    train: Split
    validation: Split
    test: Split | None
    label_map: LabelMap
    #: Intent -> route (department); ``{}`` when the source has none.
    routes: dict[str, str]
    #: Intent -> description; ``{}`` when the source has none.
    descriptions: dict[str, str]
    report: ValidationReport
    #: sha256 over the sorted (split, text, label) content.
    fingerprint: str

    @property
    def has_oos(self) -> bool:
        """Whether out-of-scope is one of the labels."""
        return OOS_LABEL in self.label_map.labels

    def splits(self) -> dict[str, Split]:
        """The present splits by name (``train``, ``validation`` and ``test`` if any)."""
        named = {"train": self.train, "validation": self.validation}
        if self.test is not None:
            named["test"] = self.test
        return named
