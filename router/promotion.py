"""The live decision of a rollout: shadow -> canary -> champion, or rejected / rolled back.

Every replica runs `PromotionController.tick()` after following the registry (its registry watch,
`registry_poll_s`), with `rollout_auto` on. The evidence is in the database and the state in the
registry, so replicas reach the same verdict; the transition is written only from the state it
was decided on (`serving.rollout`'s compare-and-set), so it happens once, whoever writes first.

- Shadow: the reviewed pairs since the challenger entered shadow (`router.store.evidence`) go to
  the sequential test (`router.sequential`): promote -> canary at `canary_share`; reject -> the
  challenger is rejected; `max_pairs` without a verdict -> rejected as inconclusive (the champion
  stays). A challenger that is not better reaches the canary at most ALPHA_PROMOTE of the time.
- Canary, checked continuously, on the pairs since the canary began: rolled back when the
  challenger is significantly worse on reviewed pairs or on fallback pairs (the same anytime-
  valid test at ALPHA_ROLLBACK), or when its engine's error rate on this replica passes
  `canary_max_error_rate` (after 50 answers), or its median engine time per call passes
  `canary_max_latency_ratio` times the champion's (after 100 calls of each; limits, not tests).
  Promoted once it has given `canary_min_answers` answers (all replicas, from the request log)
  and the reviewed pairs since the shadow began still say promote, so the one error budget of
  the shadow decision covers the promotion too.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import Engine, func, select

from router.sequential import ALPHA_ROLLBACK, SequentialTest
from router.store.evidence import paired_evidence
from router.store.models import requests
from serving.registry import Registry
from serving.rollout import Rollout, RolloutConflict, finish, start_canary

if TYPE_CHECKING:
    from router.runtime import Runtime

log = logging.getLogger(__name__)

MIN_ANSWERS_FOR_ERROR_RATE = 50
MIN_CALLS_FOR_LATENCY = 100
MIN_LATENCY_EXCESS_S = 0.005


def _when(stamp: str) -> datetime:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S%z").astimezone(UTC)


def canary_answers(engine: Engine, challenger: str, since: datetime) -> int:
    """Customer answers the challenger gave since `since` (all replicas: the request log)."""
    query = (
        select(func.count())
        .select_from(requests)
        .where(requests.c.model_version == challenger, requests.c.created_at >= since)
    )
    with engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


@dataclass
class Decision:
    action: str  # canary | rejected | promoted | rolled_back | wait
    reason: str
    evidence: dict[str, Any]


def decide(
    state: Rollout,
    db: Engine,
    *,
    test: SequentialTest,
    rollback_test: SequentialTest,
    canary_share: float,
    min_answers: int,
    max_error_rate: float,
    local_errors: float = 0.0,
    local_answers: float = 0.0,
    latency: tuple[list[float], list[float]] = ([], []),
    max_latency_ratio: float = 2.0,
) -> Decision:
    """The verdict on a rollout's evidence now (pure: reads the database, writes nothing)."""
    started = _when(state.started)
    whole = paired_evidence(db, challenger=state.challenger, champion=state.champion, since=started)
    verdict, facts = test.decide(whole.accuracy)
    evidence: dict[str, Any] = {"since_shadow": whole.to_json(), "test": facts}
    if state.stage == "shadow":
        lr = f"LR {facts['likelihood_ratio']:g}"
        if verdict == "promote":
            bar = f"{lr} >= {facts['promote_at']:g}"
            reason = f"better on reviewed disagreements ({bar}): canary at {canary_share:.0%}"
            return Decision("canary", reason, evidence)
        if verdict == "reject":
            return Decision("rejected", f"worse on reviewed disagreements ({lr})", evidence)
        if verdict == "inconclusive":
            reason = f"no verdict after {facts['max_pairs']} discordant pairs: the champion stays"
            return Decision("rejected", reason, evidence)
        return Decision("wait", "collecting reviewed disagreements", evidence)
    # canary
    since = _when(state.since)
    canary = paired_evidence(db, challenger=state.challenger, champion=state.champion, since=since)
    evidence["since_canary"] = canary.to_json()
    acc, acc_facts = rollback_test.decide(canary.accuracy)
    fb, fb_facts = rollback_test.decide(canary.fallback)
    evidence["rollback_tests"] = {"accuracy": acc_facts, "fallback": fb_facts}
    if acc == "reject":
        return Decision("rolled_back", "the canary is worse on reviewed pairs since it began", evidence)
    if fb == "reject":
        reason = "the canary falls back significantly more often than the champion"
        return Decision("rolled_back", reason, evidence)
    if local_answers >= MIN_ANSWERS_FOR_ERROR_RATE and local_errors / local_answers > max_error_rate:
        rate = local_errors / local_answers
        evidence["error_rate"] = {"errors": local_errors, "answers": local_answers, "limit": max_error_rate}
        return Decision("rolled_back", f"the canary's engine failed on {rate:.1%} of its queries", evidence)
    slow = _latency_ratio(*latency)
    if slow is not None:
        evidence["latency"] = {"median_ratio": round(slow, 3), "limit": max_latency_ratio}
        if slow > max_latency_ratio:
            reason = f"the canary's engine takes {slow:.1f}x the champion's median time per call"
            return Decision("rolled_back", reason, evidence)
    answers = canary_answers(db, state.challenger, since)
    evidence["canary_answers"] = answers
    if verdict == "reject":
        return Decision("rolled_back", "worse on reviewed pairs since the shadow began", evidence)
    if answers >= min_answers and verdict == "promote":
        lr = f"LR {facts['likelihood_ratio']:g}"
        reason = f"{answers} canary answers without a rollback signal, still better on reviewed pairs ({lr})"
        return Decision("promoted", reason, evidence)
    return Decision("wait", f"canary: {answers} of {min_answers} answers", evidence)


def _latency_ratio(challenger: list[float], champion: list[float]) -> float | None:
    """Median engine time per call, challenger over champion, on this replica since the canary
    began; None under MIN_CALLS_FOR_LATENCY calls each, or when the medians differ by less than
    MIN_LATENCY_EXCESS_S (a ratio of two tiny times is noise, not a slow canary)."""
    if min(len(challenger), len(champion)) < MIN_CALLS_FOR_LATENCY:
        return None
    slow, base = float(np.median(challenger)), float(np.median(champion))
    if base <= 0 or slow - base < MIN_LATENCY_EXCESS_S:
        return None
    return slow / base


class PromotionController:
    def __init__(self, rt: Runtime, registry: Registry) -> None:
        self.rt = rt
        self.registry = registry
        self.test = SequentialTest()
        self.rollback_test = SequentialTest(alpha_reject=ALPHA_ROLLBACK)

    def _local(self, version: str) -> tuple[float, float]:
        """(engine failures, queries) of `version` on this replica, live and in shadow."""
        rollout = self.rt.rollout
        return rollout.failures[version], rollout.calls[version]

    async def tick(self) -> Decision | None:
        state = self.rt.rollout.state
        db = self.rt.db
        if state is None or db is None:
            return None
        errors, answers = self._local(state.challenger)
        times = self.rt.rollout.latencies
        latency = (list(times.get(state.challenger, ())), list(times.get(state.champion, ())))
        s = self.rt.settings
        decision = await asyncio.to_thread(
            decide, state, db, test=self.test, rollback_test=self.rollback_test, canary_share=s.canary_share,
            min_answers=s.canary_min_answers, max_error_rate=s.canary_max_error_rate,
            local_errors=errors, local_answers=answers, latency=latency,
            max_latency_ratio=s.canary_max_latency_ratio,
        )  # fmt: skip
        if decision.action == "wait":
            return decision
        try:
            if decision.action == "canary":
                await asyncio.to_thread(
                    start_canary, self.registry, s.canary_share, by="controller", reason=decision.reason,
                    evidence=decision.evidence, expect=state,
                )  # fmt: skip
            else:
                await asyncio.to_thread(
                    finish, self.registry, decision.action,  # type: ignore[arg-type]
                    by="controller", reason=decision.reason, evidence=decision.evidence, expect=state,
                )  # fmt: skip
        except RolloutConflict:  # another replica (or a person) moved it first
            return None
        log.warning("rollout of %s: %s (%s)", state.challenger, decision.action, decision.reason)
        return decision
