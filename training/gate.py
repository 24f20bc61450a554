"""The promotion gate's statistics: champion and challenger compared *paired*, on the same examples.

Two models scored on the same n examples differ only where one is right and the other wrong: `b`
examples only the champion gets right, `c` only the challenger. Everything else is shared and says
nothing about which model is better. So:

- **Is the challenger better?** The exact McNemar test: under "no difference" each discordant
  example is a fair coin, so `c ~ Binomial(b + c, 1/2)`; the one-sided p-value is
  `P(X >= c)` (`scipy.stats.binomtest`). A challenger that wins 9 of 16 held-out examples by
  chance has p = 0.40 and is not promoted.
- **How big is the difference, and how sure are we?** The accuracy difference is
  `(c - b) / n = (b + c) / n * (2 theta - 1)` with `theta = c / (b + c)`; its interval is the exact
  (Clopper-Pearson) interval of theta mapped through that line: conditional on the discordant count,
  the interval that matches the exact test.
- **Is it worse than allowed?** On the fixed test set the challenger must not be *significantly*
  worse than `-margin`: refused when the upper end of the one-sided interval is below `-margin`.
- **How much more evidence would settle it?** For a challenger ahead but not yet significant, the
  number of paired examples at which the same discordance rates would reach significance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from scipy.stats import binomtest

ALPHA = 0.05  # one-sided significance level of both checks
# "Better" may be shown on either of two example sets; weighted Bonferroni splits ALPHA between
# them so a challenger that is no better passes with probability < ALPHA in all. Held-out feedback
# is small (a fifth of one round's labels), the test set large (a real gain there has p ~ 1e-4 or
# less), so the small set gets most of the level.
ALPHA_FEEDBACK = 0.04
ALPHA_TEST = ALPHA - ALPHA_FEEDBACK
MAX_SCALE = 1000  # "needs more evidence" is searched up to this many times the current n


@dataclass(frozen=True)
class PairedComparison:
    """Champion vs. challenger on the same `n` examples."""

    n: int
    champion_accuracy: float
    challenger_accuracy: float
    only_champion: int  # b: the champion right, the challenger wrong
    only_challenger: int  # c: the challenger right, the champion wrong
    difference: float  # challenger minus champion accuracy
    ci_low: float  # one-sided (1 - ALPHA) bounds of the difference, i.e. a 90% two-sided interval
    ci_high: float
    p_better: float  # exact McNemar, H1: the challenger is better
    p_worse: float  # exact McNemar, H1: the challenger is worse

    def to_json(self) -> dict[str, Any]:
        return {k: round(v, 6) if isinstance(v, float) else v for k, v in asdict(self).items()}


def compare(champion_correct: Sequence[bool], challenger_correct: Sequence[bool]) -> PairedComparison:
    """Paired comparison of two models' per-example correctness (same examples, same order)."""
    if len(champion_correct) != len(challenger_correct):
        raise ValueError("both models must be scored on the same examples")
    n = len(champion_correct)
    b = sum(1 for a, z in zip(champion_correct, challenger_correct, strict=True) if a and not z)
    c = sum(1 for a, z in zip(champion_correct, challenger_correct, strict=True) if z and not a)
    champ = sum(map(bool, champion_correct)) / n if n else 0.0
    chall = sum(map(bool, challenger_correct)) / n if n else 0.0
    discordant = b + c
    if discordant == 0:
        return PairedComparison(n, champ, chall, b, c, chall - champ, 0.0, 0.0, 1.0, 1.0)
    better = binomtest(c, discordant, 0.5, alternative="greater")
    worse = binomtest(c, discordant, 0.5, alternative="less")
    theta = binomtest(c, discordant, 0.5).proportion_ci(confidence_level=1 - 2 * ALPHA, method="exact")
    scale = discordant / n
    return PairedComparison(
        n=n,
        champion_accuracy=champ,
        challenger_accuracy=chall,
        only_champion=b,
        only_challenger=c,
        difference=chall - champ,
        ci_low=scale * (2 * theta.low - 1),
        ci_high=scale * (2 * theta.high - 1),
        p_better=float(better.pvalue),
        p_worse=float(worse.pvalue),
    )


def significantly_better(cmp: PairedComparison, alpha: float = ALPHA) -> bool:
    return cmp.only_challenger > cmp.only_champion and cmp.p_better < alpha


def significantly_worse_than(cmp: PairedComparison, margin: float) -> bool:
    """The challenger is worse than `-margin` with (1 - ALPHA) confidence."""
    return cmp.n > 0 and cmp.ci_high < -margin


def examples_needed(cmp: PairedComparison, alpha: float = ALPHA) -> int | None:
    """Paired examples at which the observed rates would make the challenger significantly better
    (None: it is not ahead, so more of the same evidence would not help, or needs > MAX_SCALE x n)."""
    b, c, n = cmp.only_champion, cmp.only_challenger, cmp.n
    if n == 0 or c <= b:
        return None
    if significantly_better(cmp, alpha):
        return n
    lo, hi = 1.0, float(MAX_SCALE)
    if binomtest(round(c * hi), round((b + c) * hi), 0.5, alternative="greater").pvalue >= alpha:
        return None
    while hi - lo > 0.01:  # the p-value falls as the sample grows at fixed rates: bisect the scale
        mid = (lo + hi) / 2
        if binomtest(round(c * mid), round((b + c) * mid), 0.5, alternative="greater").pvalue < alpha:
            hi = mid
        else:
            lo = mid
    return int(-(-n * hi // 1))


def decide(
    comparisons: dict[str, PairedComparison], margin: float, holdout_fraction: float
) -> tuple[bool, str, dict[str, Any]]:
    """Promote only when the challenger is significantly better on held-out feedback *or* on the
    test set (exact McNemar, one-sided; weighted Bonferroni: p < 0.04 on held-out feedback or
    p < 0.01 on the test set, so the pair keeps alpha 0.05),
    not significantly worse on held-out feedback, and not significantly worse than `-margin` on the
    test set. Returns (passed, reason, evidence for the report)."""
    test, held = comparisons["test"], comparisons["feedback_holdout"]
    evidence: dict[str, Any] = {name: cmp.to_json() for name, cmp in comparisons.items()}
    if test.n == 0:
        return False, "no test texts left for the gate once feedback texts are left out", evidence
    if significantly_worse_than(test, margin):
        return (
            False,
            f"significantly worse on the test set: {test.difference:+.2%} "
            f"(90% CI {test.ci_low:+.2%} to {test.ci_high:+.2%}, allowed: -{margin:.2%})",
            evidence,
        )
    if held.n and held.p_worse < ALPHA:
        return (
            False,
            f"significantly worse on held-out feedback: {held.difference:+.2%} "
            f"(n={held.n}, p={held.p_worse:.3g})",
            evidence,
        )
    on_test = (
        f"test accuracy {test.difference:+.2%} "
        f"(90% CI {test.ci_low:+.2%} to {test.ci_high:+.2%}, p={test.p_better:.2g})"
    )
    on_held = f"held-out feedback accuracy {held.difference:+.2%} (n={held.n}, p={held.p_better:.2g})"
    if held.n and significantly_better(held, ALPHA_FEEDBACK):
        return True, f"{on_held}, {on_test}", evidence
    if significantly_better(test, ALPHA_TEST):
        return True, f"{on_test}; {on_held}", evidence
    needed = examples_needed(held, ALPHA_FEEDBACK) if held.n else None
    if needed is None:
        more = "more feedback of the same kind would not show it"
    else:
        extra_rows = max(1, round((needed - held.n) / holdout_fraction))
        evidence["feedback_holdout"]["held_out_needed"] = needed
        evidence["feedback_holdout"]["more_feedback_needed"] = extra_rows
        more = f"about {extra_rows} more feedback rows at these rates would ({needed} held out)"
    return (
        False,
        f"not significantly better on held-out feedback ({held.difference:+.2%}, n={held.n}, "
        f"p={held.p_better:.3f}) or on the test set ({test.difference:+.2%}, p={test.p_better:.3f}); {more}",
        evidence,
    )
