"""Routing-quality and drift signals (router/drift.py) and the baseline a model ships with
(serving/model_dir.py `BASELINE_FILE`, written by training/export.py)."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from support.fakes import LABELS, FakeEngine, Scrape, make_settings, run, serving

from router.drift import QualityMonitor, js_divergence, psi
from serving.model_dir import BASELINE_FILE, Baseline, ModelDirError, ModelInfo, read_baseline

# --- the divergences ------------------------------------------------------------------


def test_js_divergence_is_zero_for_equal_one_for_disjoint_and_symmetric() -> None:
    assert js_divergence([0.5, 0.5], [0.5, 0.5]) == 0.0
    assert js_divergence([1.0, 0.0], [0.0, 1.0]) == pytest.approx(1.0)
    p, q = [0.7, 0.2, 0.1], [0.2, 0.3, 0.5]
    assert js_divergence(p, q) == pytest.approx(js_divergence(q, p))
    assert 0 < js_divergence(p, q) < 1


def test_psi_matches_the_textbook_formula_and_floors_empty_bins() -> None:
    actual, expected = [0.6, 0.4], [0.5, 0.5]
    by_hand = (0.6 - 0.5) * math.log(0.6 / 0.5) + (0.4 - 0.5) * math.log(0.4 / 0.5)
    assert psi(actual, expected) == pytest.approx(by_hand)
    assert math.isfinite(psi([1.0, 0.0], [0.5, 0.5]))


# --- the baseline file ----------------------------------------------------------------


def test_baseline_share_below_interpolates_the_validation_percentiles() -> None:
    baseline = Baseline({"a": 1.0}, tuple(np.linspace(0.0, 1.0, 101)))
    assert baseline.share_below(0.5) == pytest.approx(0.5)
    assert baseline.share_below(0.0) == 0.0
    assert baseline.share_below(1.5) == 1.0
    flat = Baseline({"a": 1.0}, (0.9,) * 101)  # every validation query at 0.9
    assert flat.share_below(0.5) == 0.0
    assert flat.share_below(0.95) == 1.0
    assert Baseline({"a": 1.0}).share_below(0.5) is None


def test_read_baseline_normalises_the_prior_and_rejects_bad_files(tmp_path: Path) -> None:
    assert read_baseline(tmp_path) is None
    path = tmp_path / BASELINE_FILE
    path.write_text(
        json.dumps(
            {
                "label_prior": {"a": 3, "b": 1},
                "validation": {"accuracy": 0.8, "confidence_quantiles": [0.9, 0.2]},
            }
        )
    )
    baseline = read_baseline(tmp_path)
    assert baseline is not None
    assert baseline.label_prior == {"a": 0.75, "b": 0.25}
    assert baseline.confidence_quantiles == (0.2, 0.9)
    assert baseline.accuracy == 0.8
    path.write_text(json.dumps({"label_prior": {"a": -1}}))
    with pytest.raises(ModelDirError, match="label_prior"):
        read_baseline(tmp_path)
    path.write_text("{not json")
    with pytest.raises(ModelDirError, match="not a readable"):
        read_baseline(tmp_path)


def test_write_baseline_stores_the_training_prior_and_validation_percentiles(tmp_path: Path) -> None:
    from training.export import write_baseline

    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7]])
    write_baseline(["a", "a", "a", "b"], ["a", "b", "c"], tmp_path, validation_probs=probs, accuracy=2 / 3)
    baseline = read_baseline(tmp_path)
    assert baseline is not None
    assert baseline.label_prior == {"a": 0.75, "b": 0.25, "c": 0.0}
    assert len(baseline.confidence_quantiles) == 101
    assert baseline.confidence_quantiles[0] == pytest.approx(0.6)
    assert baseline.confidence_quantiles[-1] == pytest.approx(0.9)
    assert baseline.accuracy == pytest.approx(2 / 3)


# --- the monitor ----------------------------------------------------------------------


def monitor(
    window: int = 4, quantiles: tuple[float, ...] = (), accuracy: float | None = None
) -> tuple[QualityMonitor, CollectorRegistry]:
    registry = CollectorRegistry()
    m = QualityMonitor(registry, window=window, escalation_budget=2.5)
    m.install(("a", "b"), Baseline({"a": 0.5, "b": 0.5}, quantiles, accuracy), 0.5)
    return m, registry


def scrape(registry: CollectorRegistry) -> Scrape:
    from prometheus_client import generate_latest

    return Scrape(generate_latest(registry).decode())


def test_window_slides_and_the_divergence_follows_the_mix() -> None:
    m, registry = monitor(window=4, quantiles=(0.6,) * 101, accuracy=0.9)
    for intent in ("a", "b", "a", "b"):
        m.observe(intent, 0.9)
    s = scrape(registry)
    assert s("switchboard_drift_window_queries") == 4
    assert s("switchboard_intent_mix_divergence") == pytest.approx(0.0)
    assert s("switchboard_low_confidence_share") == 0.0
    assert s("switchboard_low_confidence_expected") == 0.0  # validation never went under 0.6
    assert s("switchboard_expected_accuracy") == pytest.approx(0.9)
    assert s("switchboard_escalation_budget_dollars_per_hour") == 2.5
    for _ in range(4):  # the window now holds only "a", all unsure
        m.observe("a", 0.2)
    s = scrape(registry)
    assert s("switchboard_drift_window_queries") == 4
    assert s("switchboard_intent_share", intent="a") == 1.0
    assert s("switchboard_intent_share", intent="b") == 0.0
    assert s("switchboard_intent_mix_divergence") == pytest.approx(js_divergence([1, 0], [0.5, 0.5]))
    assert s("switchboard_intent_mix_psi") > 0.25
    assert s("switchboard_low_confidence_share") == 1.0
    assert s("switchboard_intent_queries_total", intent="a") == 6


def test_intent_labels_stay_within_the_model_labels() -> None:
    m, registry = monitor()
    m.observe("not-a-label", 0.9)
    m.observe_feedback("also-not", agree=False)
    m.observe_feedback("a", agree=True)
    s = scrape(registry)
    assert s.label_values("switchboard_intent_queries_total", "intent") == {"a", "b", "other"}
    assert s.label_values("switchboard_intent_feedback_total", "intent") == {"a", "b", "other"}
    assert s("switchboard_intent_feedback_total", intent="other", verdict="agree") == 0  # both verdicts
    # an intent outside the labels is a bin the prior gives nothing: drift, never a crash
    assert s("switchboard_intent_mix_divergence") == pytest.approx(1.0)


def test_empty_window_reports_nan_and_a_new_model_resets_it() -> None:
    m, registry = monitor()
    s = scrape(registry)
    assert math.isnan(s("switchboard_intent_mix_divergence"))
    assert math.isnan(s("switchboard_low_confidence_share"))
    assert math.isnan(s("switchboard_low_confidence_expected"))
    m.observe("a", 0.9)
    m.install(("a", "b", "c"), Baseline({}), 0.5)
    s = scrape(registry)
    assert s("switchboard_drift_window_queries") == 0
    assert s("switchboard_intent_prior", intent="c") == pytest.approx(1 / 3)
    assert s("switchboard_drift_baseline_info", prior="uniform") == 1


def test_a_model_without_baseline_falls_back_to_uniform_with_a_note(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    m = QualityMonitor(CollectorRegistry(), window=10)
    info = ModelInfo(str(tmp_path), "old-v1", ("a", "b", "c", "d"), 64)
    with caplog.at_level(logging.INFO, logger="router.drift"):
        m.set_model(info, 0.5)
    assert "no drift baseline" in caplog.text
    assert m.prior == (0.25,) * 4
    assert m.prior_source == "uniform"
    (tmp_path / BASELINE_FILE).write_text(json.dumps({"label_prior": {"a": 1, "b": 3}}))
    m.set_model(info, 0.5)
    assert m.prior == (0.25, 0.75, 0.0, 0.0)
    assert m.prior_source == "trained"


# --- wired into the app ---------------------------------------------------------------


def test_the_app_exports_drift_signals_and_feedback_by_intent(tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    baseline = Baseline({label: 1.0 for label in LABELS}, tuple(np.linspace(0.3, 0.95, 101)), accuracy=0.85)
    (model_dir / BASELINE_FILE).write_text(json.dumps(baseline.to_json()))
    engine = FakeEngine()
    engine.info = replace(engine.info, model_dir=str(model_dir))

    async def go() -> Scrape:
        async with serving(make_settings(tmp_path, drift_window=10), engine) as client:
            ids = []
            for text in ("my bill", "no signal", "hello", "my bill again"):
                ids.append((await client.post("/v1/route", json={"text": text})).json()["request_id"])
            for rid, correct in zip(ids, ("bill_explanation", "cancel_service"), strict=False):
                r = await client.post("/v1/feedback", json={"request_id": rid, "correct_intent": correct})
                assert r.status_code == 201
            return Scrape((await client.get("/metrics")).text)

    s = run(go())
    assert s("switchboard_intent_queries_total", intent="bill_explanation") == 3
    assert s("switchboard_intent_queries_total", intent="no_signal") == 1
    assert s("switchboard_intent_feedback_total", intent="bill_explanation", verdict="agree") == 1
    assert s("switchboard_intent_feedback_total", intent="no_signal", verdict="disagree") == 1
    assert s("switchboard_drift_window_queries") == 4
    assert s("switchboard_drift_window_size") == 10
    assert s("switchboard_drift_baseline_info", prior="trained") == 1
    assert s("switchboard_low_confidence_share") == 0.25  # "hello": 0.4 under the 0.5 threshold
    assert s("switchboard_low_confidence_expected") == pytest.approx((0.5 - 0.3) / 0.65, abs=0.01)
    assert s("switchboard_expected_accuracy") == pytest.approx(0.85)
    assert 0 < s("switchboard_intent_mix_divergence") < 1
