"""Which few-shot examples go into a prompt: a fixed seeded sample per intent, or the nearest
training queries. Drawn from the train split only; the prompt itself is `serving.llm.prompts`."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from serving.llm.prompts import Example, Selection, fixed_examples
from training.data import IntentDataset, Split

__all__ = ["nearest_examples", "per_class_examples", "select_examples", "texts_by_intent"]


def per_class_examples(train: Split, shots: int, *, seed: int = 0) -> list[Example]:
    """`shots` training examples of every intent, seeded and shuffled (`fixed_examples`)."""
    return fixed_examples(texts_by_intent(train), shots, seed=seed)


def texts_by_intent(split: Split) -> dict[str, list[str]]:
    """Each intent's distinct texts, in split order."""
    by_label: dict[str, list[str]] = defaultdict(list)
    for text, label in zip(split.texts, split.labels, strict=True):
        if text not in by_label[label]:
            by_label[label].append(text)
    return dict(by_label)


def nearest_examples(
    train: Split, queries: Sequence[str], shots: int, *, progress: bool = False
) -> list[list[Example]]:
    """For each query, the `shots` most similar training examples (cosine of MiniLM sentence
    embeddings), least similar first so the closest sits right before the query."""
    from training.baselines.classical import embed, load_encoder

    encoder = load_encoder()
    train_vecs = embed(train.texts, progress=progress, encoder=encoder)
    query_vecs = embed(list(queries), progress=progress, encoder=encoder)
    k = min(shots, len(train))
    out: list[list[Example]] = []
    for start in range(0, len(queries), 1024):  # bounded (1024 x N_train) similarity blocks
        sims = query_vecs[start : start + 1024] @ train_vecs.T
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        for row, idx in zip(sims, top, strict=True):
            ordered = idx[np.argsort(row[idx])]  # ascending similarity
            out.append([(train.texts[i], train.labels[i]) for i in ordered])
    return out


def select_examples(
    data: IntentDataset,
    queries: Sequence[str],
    selection: Selection,
    shots: int,
    *,
    seed: int = 0,
    progress: bool = False,
) -> list[list[Example]]:
    """The examples of each query's prompt, drawn from the train split only."""
    if shots < 0:
        raise ValueError(f"shots must be >= 0, got {shots}")
    if shots == 0:
        return [[] for _ in queries]
    if selection == "per-class":
        fixed = per_class_examples(data.train, shots, seed=seed)
        return [fixed for _ in queries]
    if selection == "nearest":
        return nearest_examples(data.train, queries, shots, progress=progress)
    raise ValueError(f"unknown selection {selection!r} (per-class | nearest)")
