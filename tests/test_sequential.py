"""The live promotion test's error rates, by simulation (router.sequential): the mSPRT may be
looked at after every reviewed label and still promotes an equally good challenger at most
alpha = 5% of the time."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import betaln

from router.sequential import ALPHA_PROMOTE, Evidence, SequentialTest, log_likelihood_ratio


def test_false_promotion_rate_with_a_look_after_every_label() -> None:
    rates = SequentialTest().simulate(0.5, runs=4000, seed=11)
    assert rates["promote"] <= 0.06, rates  # <= 0.05 by design (Ville's inequality)
    assert ALPHA_PROMOTE == 0.05


def test_power_for_a_challenger_two_points_better() -> None:
    """10% of traffic disagrees; a fifth of those both are wrong, so 8% of traffic is discordant,
    and 2 points better means the challenger wins 5 of those 8 points: p = 0.625 per pair. A
    reviewer labels 2 per 100 requests from the shadow-disagreement queue (80% discordant)."""
    test = SequentialTest()
    rates = test.simulate(0.625, runs=2000, seed=12)
    assert rates["promote"] >= 0.95, rates
    pairs = test.pairs_needed(0.625, seed=13)
    requests = pairs / 0.8 / 0.02
    assert pairs < 200 and requests < 10_000, (pairs, requests)
    assert test.simulate(0.35, runs=2000, seed=14)["reject"] >= 0.95  # a worse one is stopped


def test_decide_on_evidence() -> None:
    test = SequentialTest()
    assert test.decide(Evidence())[0] == "continue"
    assert test.decide(Evidence(challenger_wins=9, champion_wins=1))[0] == "continue"  # too few
    verdict, facts = test.decide(Evidence(challenger_wins=70, champion_wins=30, neither_right=12))
    assert verdict == "promote" and facts["likelihood_ratio"] >= 20 and facts["neither_right"] == 12
    assert test.decide(Evidence(challenger_wins=10, champion_wins=40))[0] == "reject"
    assert test.decide(Evidence(challenger_wins=500, champion_wins=500))[0] == "inconclusive"
    # the likelihood ratio is the Beta-binomial mixture against 1/2
    direct = betaln(10 + 7, 10 + 3) - betaln(10, 10) - 10 * np.log(0.5)
    assert float(log_likelihood_ratio(7, 10)) == pytest.approx(direct)
