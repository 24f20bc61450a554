"""Feedback rows (read from the router's store by `switchboard retrain`), resolved into labelled
examples for retraining.

Rules: the latest feedback per request wins; the same text labelled differently across requests is
a conflict, reported and (by default) left out; requests logged without text (`store_text` off)
cannot be trained on and are counted.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol


class FeedbackRecord(Protocol):
    """One feedback row joined with its request (`router.store.queries.feedback_rows`)."""

    request_id: str
    correct_intent: str
    predicted_intent: str
    created_at: datetime
    text: str | None
    model_version: str


@dataclass
class FeedbackExample:
    request_id: str
    text: str
    label: str  # the corrected intent
    predicted: str  # what the serving model said
    model_version: str
    created_at: datetime


@dataclass
class FeedbackSet:
    examples: list[FeedbackExample]
    rows_read: int = 0
    superseded: int = 0  # older feedback on a request that got newer feedback
    without_text: int = 0
    conflicts: dict[str, list[str]] = field(default_factory=dict)  # text -> its labels

    def split(
        self, holdout_fraction: float, seed: int
    ) -> tuple[list[FeedbackExample], list[FeedbackExample]]:
        """(train part, held-out part); a text never lands on both sides."""
        by_text: dict[str, list[FeedbackExample]] = defaultdict(list)
        for ex in self.examples:
            by_text[ex.text].append(ex)
        texts = sorted(by_text)
        random.Random(seed).shuffle(texts)
        n_hold = max(1, round(len(texts) * holdout_fraction)) if len(texts) > 1 else 0
        held = {t for t in texts[:n_hold]}
        train = [ex for t in texts if t not in held for ex in by_text[t]]
        holdout = [ex for t in texts if t in held for ex in by_text[t]]
        return train, holdout


def resolve(rows: Sequence[FeedbackRecord]) -> FeedbackSet:
    """Rows oldest first -> examples: the latest label per request; conflicting texts left out."""
    latest: dict[str, FeedbackExample] = {}
    out = FeedbackSet(examples=[], rows_read=len(rows))
    for row in rows:  # oldest first: later feedback on the same request replaces earlier
        if row.text is None:
            out.without_text += 1
            continue
        if row.request_id in latest:
            out.superseded += 1
        latest[row.request_id] = FeedbackExample(
            row.request_id,
            row.text,
            row.correct_intent,
            row.predicted_intent,
            row.model_version,
            row.created_at,
        )
    labels_by_text: dict[str, set[str]] = defaultdict(set)
    for ex in latest.values():
        labels_by_text[ex.text].add(ex.label)
    out.conflicts = {t: sorted(ls) for t, ls in labels_by_text.items() if len(ls) > 1}
    out.examples = [ex for ex in latest.values() if ex.text not in out.conflicts]
    return out
