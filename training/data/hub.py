"""Hugging Face Hub datasets -> :class:`SourceData`, through the ``datasets`` library.

``datasets`` is imported lazily, so the rest of the dataset layer works without it.
"""

from __future__ import annotations

from typing import Any

from training.data.types import OOS_LABEL, DatasetError, Record, SourceData

__all__ = ["NAMED_HUB_DATASETS", "load_hub"]

#: Short name -> (hub id, config). ``clinc/clinc_oos`` is the current id of ``clinc_oos``.
NAMED_HUB_DATASETS: dict[str, tuple[str, str | None]] = {
    "banking77": ("PolyAI/banking77", None),
    "clinc150": ("clinc/clinc_oos", "plus"),
}
_SPLIT_NAMES: dict[str, tuple[str, ...]] = {
    "train": ("train",),
    "validation": ("validation", "valid", "val", "dev"),
    "test": ("test",),
}
_LABEL_COLUMNS = ("label", "intent", "category")
_OOS_NAMES = {"oos", "out_of_scope", "out-of-scope"}


def load_hub(hub_id: str, config: str | None = None, *, name: str | None = None) -> SourceData:
    """Download (or reuse the cached) ``hub_id``; labels become names, out-of-scope ``oos``."""
    try:
        import datasets
    except ImportError as error:
        raise DatasetError(
            f"loading hub dataset {hub_id!r} needs the 'datasets' package (pip install datasets)"
        ) from error
    try:
        dataset_dict = datasets.load_dataset(hub_id, config)
    except Exception as error:  # network, missing repo, bad config: all one message
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise DatasetError(f"could not load hub dataset {hub_id!r}: {reason}") from error

    origin = hub_id + (f" ({config})" if config else "")
    splits: dict[str, list[Record] | None] = {}
    origins: dict[str, str] = {}
    for split, candidates in _SPLIT_NAMES.items():
        found = next((c for c in candidates if c in dataset_dict), None)
        splits[split] = None
        if found is not None:
            where = f"hub {origin} [{found}]"
            splits[split] = _records(dataset_dict[found], where, datasets.ClassLabel)
            origins[split] = where
    if splits["train"] is None:
        raise DatasetError(f"hub dataset {origin} has no train split (has: {list(dataset_dict)})")
    return SourceData(
        name=name or hub_id,
        train=splits["train"],
        validation=splits["validation"],
        test=splits["test"],
        origins=origins,
    )


def _records(split: Any, where: str, class_label: Any) -> list[Record]:
    """Records of one ``datasets.Dataset`` with a ``text`` and a label column."""
    columns = list(split.column_names)
    label_column = next((c for c in _LABEL_COLUMNS if c in columns), None)
    if "text" not in columns or label_column is None:
        missing = "text" if "text" not in columns else "' or '".join(_LABEL_COLUMNS)
        raise DatasetError(f"{where}: missing column '{missing}' (found columns: {columns})")
    feature: Any = split.features[label_column]
    values = list(split[label_column])
    if isinstance(feature, class_label):
        # -1 marks an unlabelled row (e.g. hidden test labels); it fails as an empty label.
        values = [feature.int2str(int(v)) if int(v) >= 0 else "" for v in values]
    labels = [OOS_LABEL if str(v).strip() in _OOS_NAMES else str(v).strip() for v in values]
    texts = [str(text or "").strip() for text in split["text"]]
    return [
        Record(text=text, label=label, where=f"{where} row {i}")
        for i, (text, label) in enumerate(zip(texts, labels, strict=True))
    ]
