"""Cascade mode: the router escalates unsure queries to a few-shot LLM.

The LLM is a REAL OpenAI-compatible server (`vllm serve` on a tiny random causal Llama, the
session's `chat_server`). It knows nothing, so these tests check the protocol, not accuracy:
which queries are escalated, that an escalated answer replaces the model's and is routed,
logged and counted (requests the server saw, tokens, dollars), and that an LLM that is down
leaves the tuned model's answer standing. The fast tests classify with `FakeEngine` (exact,
chosen confidences); the last one runs `switchboard serve` on a real vLLM classifier.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sqlalchemy import select
from support import API_KEY, SAMPLE, SERVED, Server, free_port, served_requests
from support.fakes import LABELS, ROUTES, FakeEngine, Scrape, make_settings, run, serving

from router.policy import Policy, RouteMap, escalation_cutoff
from router.settings import Settings
from router.store import create_db_engine
from router.store.models import requests as requests_table
from training.data import load_dataset
from training.export import write_fewshot

CONFIDENT = "my bill is too high"  # FakeEngine: 0.9 on bill_explanation
UNSURE = ("hello there", "what now?")  # FakeEngine: flat, top-1 0.4 (bill_explanation)
PRICE_IN, PRICE_OUT = 2.0, 8.0  # $ per 1M tokens, the test's price table


def _cascade(tmp_path: Path, base_url: str, **overrides: Any) -> Settings:
    prices = tmp_path / "prices.yaml"
    prices.write_text(f"llm:\n  models:\n    {SERVED}: {{input: {PRICE_IN}, output: {PRICE_OUT}}}\n")
    values: dict[str, Any] = {
        "escalation_model": SERVED,
        "escalation_base_url": base_url,
        "escalation_api_key": API_KEY,
        "escalation_examples": write_fewshot(load_dataset(SAMPLE), tmp_path, seed=42),
        "escalation_shots": 1,
        "escalation_timeout_s": 60.0,  # a 2-core CI machine runs the LLM too
        "prices_file": prices,
        **overrides,
    }
    return make_settings(tmp_path, **values)


def _log_rows(settings: Settings) -> dict[str, dict[str, Any]]:
    engine = create_db_engine(settings.database_url)
    try:
        with engine.connect() as conn:
            return {row.id: row._asdict() for row in conn.execute(select(requests_table))}
    finally:
        engine.dispose()


# -- policy and settings ------------------------------------------------------------------------


def test_an_escalated_answer_takes_its_own_route() -> None:
    policy = Policy(LABELS, RouteMap(dict(ROUTES)), threshold=0.5, margin=0.1)
    unsure = policy.decide(np.array([0.4, 0.35, 0.15, 0.1]))
    assert unsure.fallback and unsure.route == policy.fallback_route

    answered = policy.answered(unsure, "no_signal")
    assert (answered.intent, answered.route, answered.fallback, answered.reason) == (
        "no_signal", "technical_support", False, None,
    )  # fmt: skip
    assert answered.confidence == unsure.confidence and answered.alternatives == unsure.alternatives
    oos = policy.answered(unsure, "oos")
    assert oos.fallback and oos.reason == "out_of_scope" and oos.route == policy.fallback_route
    with pytest.raises(KeyError):
        policy.answered(unsure, "not_a_label")


def test_cutoff_defaults_to_the_confidence_threshold(tmp_path: Path) -> None:
    policy = Policy(LABELS, RouteMap(dict(ROUTES)), threshold=0.7)
    assert escalation_cutoff(make_settings(tmp_path), policy) == 0.7
    assert escalation_cutoff(make_settings(tmp_path, escalation_threshold=0.95), policy) == 0.95


def test_cascade_without_a_key_fails_the_load_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    settings = _cascade(tmp_path, "http://127.0.0.1:9/v1", escalation_api_key=None)
    engine = FakeEngine()

    async def scenario() -> httpx.Response:
        async with serving(settings, engine, wait=False) as client:
            for _ in range(500):
                r = await client.get("/readyz")
                if r.json().get("status") == "failed":
                    return r
                await asyncio.sleep(0.01)
            raise AssertionError("the load never failed")

    r = run(scenario())
    assert r.status_code == 503 and "no API key" in r.json()["reason"]
    assert engine.closed  # the classifier opened for the failed load was freed


def test_an_unreachable_llm_leaves_the_model_answer_and_counts_it_failed(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    settings = _cascade(tmp_path, url, escalation_max_retries=0)

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], str]:
        async with serving(settings) as client:
            unsure = (await client.post("/v1/route", json={"text": UNSURE[0]})).json()
            sure = (await client.post("/v1/route", json={"text": CONFIDENT})).json()
            return unsure, sure, (await client.get("/metrics")).text

    unsure, sure, metrics = run(scenario())
    assert unsure["escalation"]["outcome"] == "failed" and unsure["escalation"]["model"] == SERVED
    assert (unsure["intent"], unsure["fallback"]) == ("bill_explanation", True)  # the model's answer
    assert sure["escalation"] is None and sure["route"] == "billing"
    m = Scrape(metrics)
    assert m("switchboard_escalations_total", outcome="failed") == 1
    assert m("switchboard_escalations_total", outcome="agreed") == 0
    assert m("switchboard_escalation_duration_seconds_count") == 1
    rows = _log_rows(settings)  # the app has shut down: the log is flushed
    assert (rows[unsure["request_id"]]["escalation"], rows[unsure["request_id"]]["escalation_model"]) == (
        "failed", SERVED,
    )  # fmt: skip
    assert rows[sure["request_id"]]["escalation"] is None


# -- against a real OpenAI-compatible server --------------------------------------------------------


@pytest.mark.slow
def test_unsure_queries_are_answered_by_the_llm(tmp_path: Path, chat_server: str) -> None:
    settings = _cascade(tmp_path, chat_server)

    async def scenario() -> tuple[list[dict[str, Any]], list[float], dict[str, Any], str]:
        served = [served_requests(chat_server)]
        async with serving(settings) as client:
            sure = (await client.post("/v1/route", json={"text": CONFIDENT})).json()
            served.append(served_requests(chat_server))
            one = (await client.post("/v1/route", json={"text": UNSURE[0]})).json()
            served.append(served_requests(chat_server))
            batch = await client.post("/v1/route/batch", json={"texts": [UNSURE[1], CONFIDENT, UNSURE[0]]})
            served.append(served_requests(chat_server))
            intents = (await client.get("/v1/intents")).json()
            metrics = (await client.get("/metrics")).text
        return [sure, one, *batch.json()["results"]], served, intents, metrics

    results, served, intents, metrics = run(scenario())
    sure, one, b_unsure, b_sure, b_unsure2 = results
    assert np.diff(served).tolist() == [0, 1, 2]  # only the unsure queries reached the LLM
    assert sure["escalation"] is None and b_sure["escalation"] is None
    policy = Policy(LABELS, RouteMap(dict(ROUTES)))
    for r in (one, b_unsure, b_unsure2):
        # the enum leaves the random model no invalid answer; its answer is the decision
        assert r["escalation"]["outcome"] in ("agreed", "overruled") and r["intent"] in LABELS
        assert r["escalation"]["outcome"] == ("agreed" if r["intent"] == "bill_explanation" else "overruled")
        assert r["route"] == policy.routes[r["intent"]]
        assert r["fallback"] == (r["intent"] == "oos")
        assert r["confidence"] == pytest.approx(0.4)  # still the tuned model's
    assert (intents["escalation_model"], intents["escalation_threshold"]) == (SERVED, 0.5)

    m = Scrape(metrics)
    counted = sum(m("switchboard_escalations_total", outcome=o) for o in ("agreed", "overruled"))
    assert counted == 3 and m("switchboard_escalations_total", outcome="failed") == 0
    prompt = m("switchboard_escalation_tokens_total", kind="prompt")
    completion = m("switchboard_escalation_tokens_total", kind="completion")
    assert prompt > 3 * 100 and completion > 0  # system prompt + examples + query, per escalation
    cost = m("switchboard_escalation_cost_dollars_total")
    assert cost == pytest.approx((prompt * PRICE_IN + completion * PRICE_OUT) / 1e6)
    assert m("switchboard_routed_queries_total", route="billing") >= 2  # the confident ones

    rows = _log_rows(settings)
    assert {rows[r["request_id"]]["escalation"] for r in (one, b_unsure, b_unsure2)} <= {
        "agreed",
        "overruled",
    }
    assert all(rows[r["request_id"]]["intent"] == r["intent"] for r in results)


@pytest.mark.slow
def test_switchboard_serve_in_cascade_mode(router_model: Path, chat_server: str, tmp_path: Path) -> None:
    """The real router process on a real vLLM classifier, configured from the environment, with
    the prompt's examples from the model's own training data (its config.yaml)."""
    server = Server(
        router_model,
        f"sqlite:///{tmp_path / 'log.db'}",
        tmp_path / "server",
        extra_env={
            "SWITCHBOARD_ESCALATION_MODEL": SERVED,
            "SWITCHBOARD_ESCALATION_BASE_URL": chat_server,
            "SWITCHBOARD_ESCALATION_API_KEY": API_KEY,
            "SWITCHBOARD_ESCALATION_THRESHOLD": "1.0",  # escalate everything
            "SWITCHBOARD_ESCALATION_SHOTS": "1",
            "SWITCHBOARD_ESCALATION_TIMEOUT_S": "60",
            "SWITCHBOARD_REQUEST_TIMEOUT_S": "60",
        },
    )
    texts = ["why is my bill higher this month", "I want to cancel my contract", "my phone has no signal"]
    try:
        server.ensure_running()
        before = served_requests(chat_server)
        with server.client() as client:
            results = (
                client.post("/v1/route/batch", json={"texts": texts}).raise_for_status().json()["results"]
            )
            metrics = Scrape(client.get("/metrics").text)
        assert served_requests(chat_server) - before == len(texts)
        assert all(r["escalation"]["outcome"] in ("agreed", "overruled") for r in results)
        assert sum(metrics("switchboard_escalations_total", outcome=o) for o in ("agreed", "overruled")) == 3
        assert metrics("switchboard_escalation_tokens_total", kind="prompt") > 0
    finally:
        server.stop()
    rows = _log_rows(Settings(database_url=f"sqlite:///{tmp_path / 'log.db'}"))
    assert sorted(row["escalation_model"] for row in rows.values()) == [SERVED] * 3
