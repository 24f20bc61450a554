"""The dataset layer: read, validate and split labelled intent data.

>>> from training.data import load_dataset
>>> ds = load_dataset("data/sample")  # or "banking77", "clinc150", "owner/name", a file
>>> ds.label_map.encode(ds.train.labels)  # ids for training
"""

from training.data.load import load_configured, load_dataset
from training.data.types import (
    DatasetError,
    IntentDataset,
    LabelMap,
    Split,
    ValidationReport,
)

__all__ = [
    "DatasetError",
    "IntentDataset",
    "LabelMap",
    "Split",
    "ValidationReport",
    "load_configured",
    "load_dataset",
]
