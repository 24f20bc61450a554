"""Live rollouts through the router (serving.rollout, router.shadow, router.promotion): a better
challenger goes shadow -> canary -> champion on reviewed evidence; a corrupted one is stopped in
shadow before any customer gets its answer; a canary that is worse is rolled back; the admin API
and CLI guard every transition. Real store, real registry, keyword engines per model directory."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select
from support.fakes import LABELS, ROUTES, FakeEngine, make_settings, run, serving
from typer.testing import CliRunner

from router.cli import app as cli
from router.settings import Settings
from router.store import create_db_engine
from router.store.models import requests as requests_table
from router.store.models import shadow_answers
from serving.model_dir import read_model_info
from serving.registry import Registry
from serving.rollout import history, read_rollout, start_canary, start_shadow

TOKEN = "rollout-admin-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CHAMPION = {"bill": 0, "signal": 1, "cancel": 2, "weather": 3}
BETTER = {**CHAMPION, "roaming": 1}  # also knows that roaming trouble is a signal problem
CORRUPTED = {"bill": 2, "signal": 1, "cancel": 0, "weather": 3}  # bills and cancellations swapped


def model_dir(root: Path, name: str, keywords: dict[str, int]) -> Path:
    path = root / name
    path.mkdir(parents=True)
    config = {"id2label": {str(i): label for i, label in enumerate(LABELS)}, "max_position_embeddings": 64}
    (path / "config.json").write_text(json.dumps(config))
    (path / "routes.yaml").write_text(json.dumps({"routes": ROUTES}))
    (path / "keywords.json").write_text(json.dumps(keywords))
    return path


class Engines:
    """Opens a keyword engine for whatever model directory the router asks for; counts opens."""

    def __init__(self) -> None:
        self.opened: list[str] = []

    async def __call__(self, settings: Settings) -> FakeEngine:
        assert settings.model_dir is not None
        engine = FakeEngine()
        engine.info = read_model_info(settings.model_dir)
        engine.keywords = json.loads((Path(settings.model_dir) / "keywords.json").read_text())
        self.opened.append(engine.info.version)
        return engine


def registry_with(tmp_path: Path, challenger: dict[str, int]) -> Registry:
    registry = Registry(tmp_path / "registry")
    registry.register(model_dir(tmp_path / "dirs", "champion", CHAMPION), alias="champion")
    registry.register(model_dir(tmp_path / "dirs", "challenger", challenger), alias="challenger")
    return registry


def settings_for(tmp_path: Path, registry: Registry, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "registry_dir": registry.root,
        "registry_poll_s": 0.02,
        "admin_token": TOKEN,
        "canary_min_answers": 40,
        "canary_share": 0.5,
        "audit_rate": 0.0,
        **extra,
    }
    return make_settings(tmp_path, **values)


async def until(what: str, check: Any, timeout_s: float = 10.0) -> None:
    for _ in range(int(timeout_s / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for: {what}")


TEXTS = ["roaming does not work abroad", "my bill is too high", "no signal at home", "cancel my plan"]
TRUTH = {
    "roaming": "no_signal",
    "bill": "bill_explanation",
    "signal": "no_signal",
    "cancel": "cancel_service",
}


def truth(text: str) -> str:
    return next(label for word, label in TRUTH.items() if word in text)


async def traffic(client: httpx.AsyncClient, n: int, start: int = 0) -> list[dict[str, Any]]:
    out = []
    for i in range(start, start + n):
        text = f"{TEXTS[i % len(TEXTS)]} (case {i})"
        r = await client.post("/v1/route", json={"text": text, "metadata": {"conversation_id": f"c{i}"}})
        assert r.status_code == 200, r.text
        out.append(r.json())
        await asyncio.sleep(0)  # in-process ASGI never suspends: let the shadow task run, as a server would
    return out


async def review_disagreements(client: httpx.AsyncClient, limit: int) -> int:
    """The simulated reviewer: labels the newest shadow disagreements with the truth."""
    queue = await client.get(
        "/v1/review", params={"strategy": "shadow_disagreement", "limit": limit}, headers=AUTH
    )
    assert queue.status_code == 200, queue.text
    for item in queue.json()["items"]:
        fb = {"request_id": item["request_id"], "correct_intent": truth(item["text"]), "source": "reviewer"}
        assert (await client.post("/v1/feedback", json=fb)).status_code == 201
    return len(queue.json()["items"])


def count(url: str, table: Any, **where: str) -> int:
    engine = create_db_engine(url)
    try:
        query = select(func.count()).select_from(table)
        for column, value in where.items():
            query = query.where(table.c[column] == value)
        with engine.connect() as conn:
            return int(conn.execute(query).scalar_one())
    finally:
        engine.dispose()


def test_a_better_challenger_goes_shadow_canary_champion(tmp_path: Path) -> None:
    registry = registry_with(tmp_path, BETTER)
    settings = settings_for(tmp_path, registry)
    engines = Engines()

    async def scenario() -> None:
        async with serving(settings, engine_factory=engines) as client:
            rt = client.app.state.runtime  # type: ignore[attr-defined]
            start_shadow(registry, by="test")
            await until("challenger loaded in shadow", lambda: rt.rollout.second is not None)
            sent = await traffic(client, 40)
            assert {r["model_version"] for r in sent} == {"v0001"}  # in shadow nobody gets its answers
            await until("shadow answers written", lambda: count(settings.database_url, shadow_answers) >= 40)
            for i in range(40):
                state = read_rollout(registry)
                if state is None or state.stage != "shadow":
                    break
                assert await review_disagreements(client, 5) > 0, "no disagreement left to review"
                await traffic(client, 20, start=1000 + 20 * i)
                await asyncio.sleep(0.1)
            state = read_rollout(registry)
            assert state is not None and state.stage == "canary" and state.share == 0.5
            await until(
                "canary followed", lambda: rt.rollout.state is not None and rt.rollout.state.stage == "canary"
            )
            # canary: about half the conversations answered by the challenger, sticky by conversation
            sent = await traffic(client, 60, start=2000)
            versions = [r["model_version"] for r in sent]
            assert 10 < versions.count("v0002") < 50, versions
            again = [r["model_version"] for r in await traffic(client, 60, start=2000)]
            if registry.aliases().get("champion") == "v0002":  # the evidence so far promoted it meanwhile
                assert all(b in (a, "v0002") for a, b in zip(versions, again, strict=True)), again
            else:
                assert again == versions  # sticky: a conversation keeps its model
            for i in range(30):  # keep the evidence coming until it is promoted
                if registry.aliases().get("champion") == "v0002":
                    break
                await review_disagreements(client, 5)
                await traffic(client, 20, start=3000 + 20 * i)
                await asyncio.sleep(0.05)
            assert registry.aliases()["champion"] == "v0002"
            await until("promoted challenger serves", lambda: rt.model.info.version == "v0002")
            assert rt.rollout.second is None and read_rollout(registry) is None
            assert engines.opened == ["v0001", "v0002"]  # adopted: never loaded twice
            after = await traffic(client, 8, start=9000)
            assert {r["model_version"] for r in after} == {"v0002"}
            m = (await client.get("/metrics")).text
            assert 'switchboard_shadow_answers_total{model_version="v0002",verdict="disagree"}' in m

    run(scenario())
    events = [e["event"] for e in history(registry)]
    assert events == ["shadow", "canary", "promoted"]
    canary, promoted = history(registry)[1:]
    assert canary["by"] == "controller" and canary["evidence"]["test"]["challenger_wins"] > 0
    assert promoted["evidence"]["canary_answers"] >= 40


def test_a_corrupted_challenger_is_stopped_in_shadow(tmp_path: Path) -> None:
    registry = registry_with(tmp_path, CORRUPTED)
    settings = settings_for(tmp_path, registry)

    async def scenario() -> None:
        async with serving(settings, engine_factory=Engines()) as client:
            rt = client.app.state.runtime  # type: ignore[attr-defined]
            start_shadow(registry, by="test")
            await until("loaded", lambda: rt.rollout.second is not None)
            for i in range(40):
                if read_rollout(registry) is None:
                    break
                await traffic(client, 20, start=20 * i)
                await asyncio.sleep(0.05)
                await review_disagreements(client, 5)
            assert read_rollout(registry) is None
            await until("dropped", lambda: rt.rollout.second is None)

    run(scenario())
    assert history(registry)[-1]["event"] == "rejected"
    assert registry.aliases()["champion"] == "v0001"
    assert count(settings.database_url, requests_table, model_version="v0002") == 0  # no customer


def test_a_worse_canary_is_rolled_back(tmp_path: Path) -> None:
    registry = registry_with(tmp_path, CORRUPTED)
    settings = settings_for(tmp_path, registry, canary_min_answers=10_000)

    async def scenario() -> None:
        async with serving(settings, engine_factory=Engines()) as client:
            rt = client.app.state.runtime  # type: ignore[attr-defined]
            start_shadow(registry, by="test")
            start_canary(registry, 0.5, by="test")  # forced past the shadow decision
            await until("canary", lambda: rt.rollout.state is not None and rt.rollout.state.stage == "canary")
            for i in range(60):
                if read_rollout(registry) is None:
                    break
                await traffic(client, 10, start=10 * i)
                await asyncio.sleep(0.05)
                await review_disagreements(client, 10)
            assert read_rollout(registry) is None

    run(scenario())
    last = history(registry)[-1]
    assert last["event"] == "rolled_back" and last["by"] == "controller", last
    answered = count(settings.database_url, requests_table, model_version="v0002")
    assert 0 < answered < 500, answered
    assert registry.aliases()["champion"] == "v0001"


def test_admin_api_and_cli_guard_the_transitions(tmp_path: Path) -> None:
    registry = registry_with(tmp_path, BETTER)
    settings = settings_for(tmp_path, registry, rollout_auto=False)

    async def scenario() -> None:
        async with serving(settings, engine_factory=Engines()) as client:
            assert (await client.post("/v1/admin/rollout/canary", json={"share": 0.1})).status_code == 401
            r = await client.post("/v1/admin/rollout/canary", json={"share": 0.1}, headers=AUTH)
            assert r.status_code == 409 and "no challenger in shadow" in r.json()["detail"]
            for bad in (0, 1, 1.5, -0.1):
                r = await client.post("/v1/admin/rollout/canary", json={"share": bad}, headers=AUTH)
                assert r.status_code == 422 and r.json()["errors"][0]["field"] == "share", r.text
            r = await client.post("/v1/admin/rollout/shadow", json={}, headers=AUTH)
            assert r.status_code == 200 and r.json()["rollout"]["challenger"] == "v0002"
            r = await client.post("/v1/admin/rollout/shadow", json={}, headers=AUTH)
            assert r.status_code == 409 and "v0002 in shadow" in r.json()["detail"]
            r = await client.post("/v1/admin/rollout/canary", json={"share": 0.2}, headers=AUTH)
            assert r.status_code == 200 and r.json()["rollout"]["share"] == 0.2
            r = await client.post("/v1/admin/rollout/canary", json={"share": 0.3}, headers=AUTH)
            assert r.status_code == 409 and "a canary is running already: v0002 at 20%" in r.json()["detail"]
            r = await client.post("/v1/admin/rollout/stop", json={"outcome": "rolled_back"}, headers=AUTH)
            assert r.status_code == 200 and r.json()["rollout"] is None
            assert [e["event"] for e in r.json()["history"]] == ["shadow", "canary", "rolled_back"]

    run(scenario())
    runner = CliRunner()
    started = runner.invoke(cli, ["models", "shadow", "start", "-r", str(registry.root)])
    assert started.exit_code == 0, started.output
    bad = runner.invoke(cli, ["models", "canary", "start", "--share", "1", "-r", str(registry.root)])
    assert bad.exit_code == 2 and "share must be between 0 and 1" in bad.output
    assert runner.invoke(cli, ["models", "canary", "stop", "-r", str(registry.root)]).exit_code == 0
    shown = runner.invoke(cli, ["models", "history", "--json", "-r", str(registry.root)])
    assert [json.loads(line)["event"] for line in shown.output.splitlines()][-2:] == ["shadow", "rolled_back"]


def test_shadow_work_is_batched_and_shed_when_busy(tmp_path: Path) -> None:
    registry = registry_with(tmp_path, BETTER)
    settings = settings_for(tmp_path, registry, rollout_auto=False, shadow_max_pending=1, shadow_batch_max=4)
    engines = Engines()

    async def scenario() -> None:
        async with serving(settings, engine_factory=engines) as client:
            rt = client.app.state.runtime  # type: ignore[attr-defined]
            start_shadow(registry, by="test")
            await until("loaded", lambda: rt.rollout.second is not None)
            challenger = rt.rollout.second.engine
            # quiet: 3 concurrent requests share one shadow call
            calls = challenger.calls
            results = await asyncio.gather(
                *(client.post("/v1/route", json={"text": f"bill {i}"}) for i in range(3))
            )
            assert all(r.status_code == 200 for r in results)
            await until("shadow answers", lambda: count(settings.database_url, shadow_answers) == 3)
            assert challenger.calls == calls + 1
            # busy: a slow challenger, one shadow call at a time: the rest of the shadow work is shed
            challenger.delay_s = 0.2
            results = await asyncio.gather(
                *(client.post("/v1/route", json={"text": f"bill {i}"}) for i in range(20))
            )
            assert all(r.status_code == 200 for r in results)
            m = (await client.get("/metrics")).text
            shed = [line for line in m.splitlines() if line.startswith("switchboard_shadow_shed_total")]
            assert shed and float(shed[0].split()[-1]) >= 12, shed

    run(scenario())


def test_a_slow_canary_is_rolled_back(tmp_path: Path) -> None:
    registry = registry_with(tmp_path, BETTER)
    settings = settings_for(tmp_path, registry, canary_min_answers=10_000, canary_max_latency_ratio=3.0)

    async def scenario() -> None:
        async with serving(settings, engine_factory=Engines()) as client:
            rt = client.app.state.runtime  # type: ignore[attr-defined]
            start_shadow(registry, by="test")
            start_canary(registry, 0.5, by="test")
            await until("canary", lambda: rt.rollout.state is not None and rt.rollout.state.stage == "canary")
            rt.rollout.second.engine.delay_s = 0.02  # the champion answers at once
            for i in range(40):
                if read_rollout(registry) is None:
                    break
                await traffic(client, 20, start=20 * i)
            assert read_rollout(registry) is None

    run(scenario())
    last = history(registry)[-1]
    assert last["event"] == "rolled_back" and "median time per call" in last["reason"], last
    assert last["evidence"]["latency"]["median_ratio"] > 3.0


def _churn_rollouts(root: str, cycles: Any, stop: Any) -> None:
    from serving.rollout import finish

    registry = Registry(Path(root))
    while not stop.is_set():
        start_shadow(registry, by="test")
        finish(registry, "stopped", by="test")
        with cycles.get_lock():
            cycles.value += 1


def test_readers_never_see_a_rollout_half_gone(tmp_path: Path) -> None:
    """Replicas read the rollout without the registry's lock while another process's transition
    removes it: a reader that finds the file and then cannot open it reads "no rollout", not a
    corrupt one (a shadow test once failed on exactly that)."""
    import multiprocessing
    import time

    registry = registry_with(tmp_path, CHAMPION)
    context = multiprocessing.get_context("spawn")
    cycles, stop = context.Value("i", 0), context.Event()
    writer = context.Process(target=_churn_rollouts, args=(str(registry.root), cycles, stop))
    writer.start()
    seen: set[bool] = set()
    deadline = time.monotonic() + 60
    try:
        while cycles.value < 200 and time.monotonic() < deadline:
            seen.add(read_rollout(registry) is None)
    finally:
        stop.set()
        writer.join(timeout=10)
    assert cycles.value >= 200 and seen == {True, False}, (cycles.value, seen)
