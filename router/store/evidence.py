"""A rollout's paired evidence, read from the request log (`shadow_answers` beside `requests`).

Every request that both the champion and the challenger answered (one live, one in shadow) is a
pair. Reviewed pairs decide accuracy (`router.sequential`: the discordant ones, where exactly one
model's intent equals the reviewer's label); all pairs, reviewed or not, compare fallback (where
exactly one of the two would have sent the query to the fallback route).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Engine, and_, case, func, or_, select

from router.sequential import Evidence
from router.store.models import feedback, requests, shadow_answers


@dataclass(frozen=True)
class PairedEvidence:
    accuracy: Evidence  # reviewed pairs
    fallback: Evidence  # all pairs: "wins" = the other model fell back and this one did not
    pairs: int  # requests both answered
    disagreements: int  # of those, with different intents

    def to_json(self) -> dict[str, object]:
        return {
            "accuracy": self.accuracy.to_json(),
            "fallback": self.fallback.to_json(),
            "pairs": self.pairs,
            "disagreements": self.disagreements,
        }


def paired_evidence(engine: Engine, *, challenger: str, champion: str, since: datetime) -> PairedEvidence:
    r, s, f = requests, shadow_answers, feedback
    pair = or_(
        and_(r.c.model_version == champion, s.c.model_version == challenger),
        and_(r.c.model_version == challenger, s.c.model_version == champion),
    )
    reviewed = (
        select(r.c.id, r.c.model_version, r.c.intent, s.c.intent, f.c.correct_intent)
        .join(s, s.c.request_id == r.c.id)
        .join(f, f.c.request_id == r.c.id)
        .where(pair, r.c.created_at >= since)
        .order_by(f.c.created_at, f.c.id)
    )
    counts = (
        select(
            func.count(),
            func.sum(case_(r.c.intent != s.c.intent)),
            func.sum(case_(and_(r.c.fallback.is_(True), s.c.fallback.is_(False)))),
            func.sum(case_(and_(r.c.fallback.is_(False), s.c.fallback.is_(True)))),
            r.c.model_version,
        )
        .join(s, s.c.request_id == r.c.id)
        .where(pair, r.c.created_at >= since)
        .group_by(r.c.model_version)
    )
    with engine.connect() as conn:
        latest: dict[str, tuple[str, str, str, str]] = {}
        for request_id, served_version, served, shadow, label in conn.execute(reviewed):
            latest[request_id] = (served_version, served, shadow, label)  # the newest label wins
        grouped = conn.execute(counts).all()
    wins = losses = both = neither = 0
    for served_version, served, shadow, label in latest.values():
        challenger_says, champion_says = (
            (served, shadow) if served_version == challenger else (shadow, served)
        )
        right_c, right_h = challenger_says == label, champion_says == label
        wins += right_c and not right_h
        losses += right_h and not right_c
        both += right_c and right_h
        neither += not right_c and not right_h
    pairs = disagreements = fb_wins = fb_losses = 0
    for n, differ, served_fell, shadow_fell, served_version in grouped:
        pairs += int(n)
        disagreements += int(differ or 0)
        # the model that fell back where the other did not loses that pair
        if served_version == challenger:
            fb_losses += int(served_fell or 0)
            fb_wins += int(shadow_fell or 0)
        else:
            fb_wins += int(served_fell or 0)
            fb_losses += int(shadow_fell or 0)
    return PairedEvidence(
        Evidence(wins, losses, both, neither),
        Evidence(fb_wins, fb_losses),
        pairs,
        disagreements,
    )


def case_(condition: ColumnElement[bool]) -> ColumnElement[int]:
    """1 where `condition` holds, else 0 (for a SUM)."""
    return case((condition, 1), else_=0)
