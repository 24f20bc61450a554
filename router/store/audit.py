"""Live accuracy that means what it says: estimated from the audit sample only.

The router marks a random share of requests for audit when it answers them (`audit_rate`, the
`requests.audit` flag), independent of any review queue. Reviewers label them from the `audit`
queue; the share of those labels that agree with the served answer is an unbiased estimate of
the served model's accuracy on today's traffic, per model version. Feedback from the other
queues (uncertainty, fallback, disagreement) picks hard texts on purpose and would read low, so
it is counted apart, under its own name (`reviewed agreement`).

Read from the database, so every replica, the inbox and the canary decision see one number.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, select

from router.store.models import feedback, requests

SCAN_LIMIT = 200_000  # audit labels read at most (the newest): a bound on the work, not a window
CONFIDENCE = 0.9  # the interval's level (two-sided): what the inbox and the metrics show


@dataclass(frozen=True)
class AccuracyEstimate:
    """Accuracy of one model version on its labelled audit items, with a Wilson interval."""

    model_version: str
    n: int
    correct: int
    low: float
    high: float

    @property
    def accuracy(self) -> float:
        return self.correct / self.n

    def to_json(self) -> dict[str, Any]:
        return {
            "model_version": self.model_version,
            "accuracy": round(self.accuracy, 6),
            "n": self.n,
            "correct": self.correct,
            "ci_low": round(self.low, 6),
            "ci_high": round(self.high, 6),
            "confidence_level": CONFIDENCE,
        }


def estimate(model_version: str, correct: int, n: int) -> AccuracyEstimate:
    """`correct` of `n` with its Wilson score interval (scipy), n >= 1."""
    from scipy.stats import binomtest

    ci = binomtest(correct, n).proportion_ci(confidence_level=CONFIDENCE, method="wilson")
    return AccuracyEstimate(model_version, n, correct, float(ci.low), float(ci.high))


def audit_accuracy(engine: Engine, *, window: int = 500) -> dict[str, AccuracyEstimate]:
    """model version -> accuracy on its newest `window` labelled audit items (the latest label of
    each request counts; a request's answer is right when its label equals the served intent)."""
    r, f = requests, feedback
    query = (
        select(r.c.model_version, f.c.request_id, f.c.agree)
        .join(r, r.c.id == f.c.request_id)
        .where(r.c.audit.is_(True))
        .order_by(f.c.created_at.desc(), f.c.id.desc())
        .limit(SCAN_LIMIT)
    )
    latest: dict[str, tuple[str, bool]] = {}
    per_version: dict[str, list[bool]] = {}
    with engine.connect() as conn:
        for version, request_id, agree in conn.execute(query):
            if request_id in latest:  # superseded by a newer label of the same request
                continue
            latest[request_id] = (version, bool(agree))
            items = per_version.setdefault(version, [])
            if len(items) < window:
                items.append(bool(agree))
    return {v: estimate(v, sum(items), len(items)) for v, items in per_version.items() if items}
