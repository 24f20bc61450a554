"""The sequential test behind every live promotion decision (shadow -> canary -> champion).

Evidence: reviewed requests that both the champion and the challenger answered (one live, the
other in shadow). A reviewed request where exactly one of the two is right is a *discordant pair*
(McNemar's evidence); where both or neither are right it says nothing about which is better
(counted, not used). Under "equally good" the challenger wins each discordant pair with
probability 1/2, whatever the accuracies are.

The test: Robbins' mixture sequential probability ratio test (mSPRT) for that binomial. After n
discordant pairs with w won by the challenger, the likelihood ratio of a Beta(a, a) mixture over
the win probability against 1/2 is

    LR_n = BetaBinomial(w; n, a, a) / Binomial(w; n, 1/2)     (scipy.stats.betabinom, binom)

Under the null LR_n is a non-negative martingale with mean 1, so by Ville's inequality
P(LR_n >= 1/alpha for some n) <= alpha: the decision may be re-evaluated after every label,
forever, and the chance of ever promoting a challenger that is no better stays under alpha.
No repeated p-values, no peeking penalty to tune (Robbins 1970; Johari et al., "Always valid
inference", 2017, for the same test in A/B testing).

Decisions (`decide`): promote when LR >= 1/alpha_promote and the challenger won more pairs; reject
when LR >= 1/alpha_reject and it lost more (a wrong rejection only costs a retrain, so its bar is
lower); otherwise keep collecting, and stop undecided ("inconclusive": the champion stays) at
`max_pairs`.

The error budget of the whole path, written down (docs/OPERATIONS.md):
- false promotion (a challenger that is not better becomes champion) <= ALPHA_PROMOTE = 0.05: it
  must pass the shadow decision at that level; the canary stage can only stop it further (its
  checks below roll back, they never promote on their own), so the path as a whole keeps 0.05;
- the canary's continuous checks are the same anytime-valid test on the canary's own discordant
  pairs (accuracy) and fallback pairs, at ALPHA_ROLLBACK = 0.05 each, plus a hard error-rate limit:
  they bound the chance of rolling back a challenger that is not worse, not of promoting one;
- the simulation in tests/test_sequential.py checks the false-promotion rate (>= 4,000 runs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

ALPHA_PROMOTE = 0.05
ALPHA_REJECT = 0.10
ALPHA_ROLLBACK = 0.05
PRIOR_A = 10.0  # Beta(10, 10): sd 0.11 around 1/2, where a real gain's win probability lies
MAX_PAIRS = 1000

Verdict = Literal["promote", "reject", "continue", "inconclusive"]


@dataclass(frozen=True)
class Evidence:
    """Reviewed paired answers: pairs won by the challenger / by the champion, and the rest."""

    challenger_wins: int = 0
    champion_wins: int = 0
    both_right: int = 0
    neither_right: int = 0

    @property
    def discordant(self) -> int:
        return self.challenger_wins + self.champion_wins

    @property
    def reviewed(self) -> int:
        return self.discordant + self.both_right + self.neither_right

    def to_json(self) -> dict[str, int]:
        return {
            "challenger_wins": self.challenger_wins,
            "champion_wins": self.champion_wins,
            "both_right": self.both_right,
            "neither_right": self.neither_right,
        }


def log_likelihood_ratio(wins: np.ndarray | int, n: np.ndarray | int, a: float = PRIOR_A) -> np.ndarray:
    """log LR_n of the Beta(a, a) mixture against a win probability of 1/2 (vectorised)."""
    from scipy.stats import betabinom, binom

    wins, n = np.asarray(wins), np.asarray(n)
    return np.asarray(betabinom.logpmf(wins, n, a, a) - binom.logpmf(wins, n, 0.5))


@dataclass(frozen=True)
class SequentialTest:
    alpha_promote: float = ALPHA_PROMOTE
    alpha_reject: float = ALPHA_REJECT
    prior_a: float = PRIOR_A
    max_pairs: int = MAX_PAIRS

    def decide(self, evidence: Evidence) -> tuple[Verdict, dict[str, Any]]:
        """The verdict on this evidence, and what it rests on (for the audit history)."""
        w, n = evidence.challenger_wins, evidence.discordant
        llr = float(log_likelihood_ratio(w, n, self.prior_a)) if n else 0.0
        facts: dict[str, Any] = {
            **evidence.to_json(),
            "likelihood_ratio": round(float(np.exp(min(llr, 700.0))), 4),
            "promote_at": round(1 / self.alpha_promote, 4),
            "reject_at": round(1 / self.alpha_reject, 4),
            "max_pairs": self.max_pairs,
        }
        if w * 2 > n and llr >= np.log(1 / self.alpha_promote):
            return "promote", facts
        if w * 2 < n and llr >= np.log(1 / self.alpha_reject):
            return "reject", facts
        if n >= self.max_pairs:
            return "inconclusive", facts
        return "continue", facts

    def simulate(self, win_probability: float, runs: int, *, seed: int = 0) -> dict[Verdict, float]:
        """Share of each verdict over `runs` simulated sequences of discordant pairs (each evaluated
        after every pair, as the live controller may), up to `max_pairs`."""
        rng = np.random.default_rng(seed)
        wins = np.cumsum(rng.random((runs, self.max_pairs)) < win_probability, axis=1)
        n = np.arange(1, self.max_pairs + 1)
        llr = log_likelihood_ratio(wins, n, self.prior_a)
        promote = (llr >= np.log(1 / self.alpha_promote)) & (2 * wins > n)
        reject = (llr >= np.log(1 / self.alpha_reject)) & (2 * wins < n)
        big = self.max_pairs + 1
        first_promote = np.where(promote.any(axis=1), promote.argmax(axis=1), big)
        first_reject = np.where(reject.any(axis=1), reject.argmax(axis=1), big)
        promoted = first_promote < first_reject
        rejected = first_reject < first_promote
        return {
            "promote": float(promoted.mean()),
            "reject": float(rejected.mean()),
            "inconclusive": float((~promoted & ~rejected).mean()),
            "continue": 0.0,
        }

    def pairs_needed(self, win_probability: float, runs: int = 2000, *, seed: int = 0) -> float:
        """Median discordant pairs until a decision, by simulation (power planning)."""
        rng = np.random.default_rng(seed)
        wins = np.cumsum(rng.random((runs, self.max_pairs)) < win_probability, axis=1)
        n = np.arange(1, self.max_pairs + 1)
        llr = log_likelihood_ratio(wins, n, self.prior_a)
        decided = ((llr >= np.log(1 / self.alpha_promote)) & (2 * wins > n)) | (
            (llr >= np.log(1 / self.alpha_reject)) & (2 * wins < n)
        )
        first = np.where(decided.any(axis=1), decided.argmax(axis=1) + 1, self.max_pairs)
        return float(np.median(first))
