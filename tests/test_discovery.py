"""Intent discovery: the clustering (training.discovery), the job's bookkeeping across runs
(router.discovery: identity, dismissal, regrowth, removed members), `/v1/discover` and its actions,
the gauges, and `switchboard intents discover` end to end on a real exported model."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select
from support.fakes import LABELS, FakeEngine, Scrape, make_settings, run, serving
from typer.testing import CliRunner

from router.cli import app as cli
from router.discovery import DiscoverOptions, record
from router.store import create_db_engine, migrate
from router.store.discovery import load_proposals, unrouted_queries
from router.store.models import feedback as feedback_table
from router.store.models import requests as requests_table
from training.discovery import Cluster, find_clusters

runner = CliRunner()
TOKEN = "discovery-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
HOUR = timedelta(hours=1)
SAMPLE_INTENTS = {  # data/sample's, which the router_model fixture learnt
    "bill_explanation", "payment_issue", "refund_request", "no_signal", "broadband_outage",
    "login_problem", "update_details", "upgrade_device", "add_line", "cancel_service",
}  # fmt: skip

GROUPS = {  # three things the sample model's taxonomy lacks, 16 distinct queries each
    "lost_phone": [
        f"{a} {b}"
        for a in (
            "My phone was stolen,",
            "I lost my mobile,",
            "Someone took my handset,",
            "My phone got nicked,",
        )
        for b in (
            "please block the SIM",
            "can you bar it?",
            "how do I stop calls on it?",
            "what do I do now?",
        )
    ],
    "esim": [
        f"{a} {b}?"
        for a in (
            "How do I set up an eSIM on my",
            "Can I switch to eSIM on my",
            "Does eSIM work with my",
            "Help activating the eSIM on my",
        )
        for b in ("iPhone 15", "Pixel 8", "Galaxy watch", "iPad")
    ],
    "store_hours": [
        f"{a} {b}?"
        for a in (
            "What time does your shop in",
            "Is the store in",
            "When does the Kestrel shop in",
            "Hours for the branch in",
        )
        for b in (
            "Leeds open",
            "Bristol open on Sunday",
            "Cardiff close today",
            "Glasgow open on bank holidays",
        )
    ],
}


def purity(members: list[int], truth: list[str]) -> tuple[str, float]:
    counts: dict[str, int] = {}
    for i in members:
        counts[truth[i]] = counts.get(truth[i], 0) + 1
    top = max(counts, key=lambda k: counts[k])
    return top, counts[top] / len(members)


# -- the clustering -------------------------------------------------------------------------------


def blobs(seed: int = 0) -> tuple[list[str], np.ndarray, list[str]]:
    """Three tight groups of 20 unit vectors and 10 scattered ones, with texts to match."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, 64))
    words = (["card", "stolen", "block"], ["exchange", "rate", "euro"], ["fridge", "smart", "reset"])
    texts, rows, truth = [], [], []
    for k, centre in enumerate(centres):
        for i in range(20):
            rows.append(centre + 0.05 * rng.normal(size=64))
            texts.append(f"my {words[k][i % 3]} {words[k][(i + 1) % 3]} question number {i}")
            truth.append(f"g{k}")
    for i in range(10):
        rows.append(rng.normal(size=64) * 3)
        texts.append(f"something else entirely {i}")
        truth.append("noise")
    vectors = np.asarray(rows, dtype=np.float32)
    return texts, vectors / np.linalg.norm(vectors, axis=1, keepdims=True), truth


def test_find_clusters_finds_each_group_and_describes_it() -> None:
    texts, vectors, truth = blobs()
    intents = {"card_lost": vectors[0:20].mean(axis=0), "far_away": -vectors[20:40].mean(axis=0)}
    intents = {k: v / np.linalg.norm(v) for k, v in intents.items()}
    clusters = find_clusters(texts, vectors, min_size=5, intents=intents)
    assert len(clusters) == 3
    for c in clusters:
        group, share = purity(c.members, truth)
        assert share >= 0.9 and sum(truth[i] == group for i in c.members) == 20  # a stray at most
        assert c.similarity == sorted(c.similarity, reverse=True) and c.similarity[0] <= 1.0 + 1e-6
        assert len(c.examples) == 5 and c.examples[0] == texts[c.members[0]]
        assert abs(float(np.linalg.norm(c.centroid)) - 1.0) < 1e-5
        expected = {"g0": {"card", "stolen", "block"}, "g1": {"exchange", "rate", "euro"}}.get(group)
        if expected:
            assert set(c.keywords[:3]) == expected, c.keywords  # distinctive words, not "question"
    card = next(c for c in clusters if purity(c.members, truth)[0] == "g0")
    assert card.nearest_intent == "card_lost" and card.nearest_similarity is not None
    assert card.nearest_similarity > 0.95
    assert find_clusters(texts[:4], vectors[:4], min_size=5) == []  # fewer texts than a cluster


# -- the job's bookkeeping, the API and the gauges ----------------------------------------------------


def log_requests(url: str, rows: list[tuple[str, bool]], at: datetime) -> None:
    """Request rows as the router logs them: (text, fell back)."""
    engine = create_db_engine(url)
    migrate(engine)
    with engine.begin() as conn:
        for i, (text, fallback) in enumerate(rows):
            conn.execute(
                requests_table.insert(),
                {
                    "id": f"req-{at.timestamp():.0f}-{i:04d}",
                    "created_at": at + timedelta(seconds=i),
                    "text": text,
                    "intent": "bill_explanation",
                    "confidence": 0.3 if fallback else 0.95,
                    "route": "human_review" if fallback else "billing",
                    "fallback": fallback,
                    "fallback_reason": "low_confidence" if fallback else None,
                    "model_version": "fake-v1",
                    "latency_ms": 1.0,
                    "top2_confidence": 0.2 if fallback else 0.01,
                },
            )
    engine.dispose()


def grouped(url: str, since: datetime, until: datetime, keys: dict[str, str]) -> tuple[Any, list[Any]]:
    """The window's unrouted queries and one cluster per group of `keys` (a word -> group),
    standing in for the encoder: the bookkeeping is what these tests check."""
    engine = create_db_engine(url)
    total, unrouted, queries = unrouted_queries(engine, since, until)
    clusters = []
    for word in keys:
        members = [i for i, q in enumerate(queries) if word in q.text.lower()]
        centroid = np.zeros(4, dtype=np.float32)
        centroid[list(keys).index(word)] = 1.0
        clusters.append(
            Cluster(members, [0.9] * len(members), centroid, [queries[i].text for i in members[:3]], [word])
        )
    return (engine, (total, unrouted), queries), clusters


def run_job(url: str, since: datetime, until: datetime, keys: dict[str, str], **options: Any) -> Any:
    (engine, counts, queries), clusters = grouped(url, since, until, keys)
    opts = DiscoverOptions(since=since, until=until, min_size=2, **options)
    try:
        return record(engine, queries, clusters, counts, "fake-v1", opts, datetime.now(UTC))
    finally:
        engine.dispose()


def test_proposals_keep_their_identity_and_dismissed_ones_reopen_only_when_grown(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    t0 = datetime(2026, 12, 1, tzinfo=UTC)
    log_requests(url, [(f"stolen phone {i}", True) for i in range(4)] + [("my bill", False)] * 3, t0)
    log_requests(
        url, [(f"esim on watch {i}", True) for i in range(3)] + [("Stolen phone 0!", True)], t0 + HOUR
    )
    first = run_job(url, t0, t0 + 2 * HOUR, {"stolen": "lost", "esim": "esim"})
    assert len(first.created) == 2 and first.grown == []
    # 11 requests, 8 unrouted; "Stolen phone 0!" folds onto "stolen phone 0": 7 distinct texts
    assert (first.run.requests, first.run.unrouted, first.run.candidates) == (11, 8, 7)
    assert first.run.clustered == 7 and first.run.proposals_open == 2
    engine = create_db_engine(url)
    stolen = next(p for p in load_proposals(engine) if p.keywords == ["stolen"])
    assert stolen.size == 4 and stolen.status == "open"

    # the same window again: the same proposals, grown by nothing; the trend is kept
    again = run_job(url, t0, t0 + 2 * HOUR, {"stolen": "lost", "esim": "esim"})
    assert again.created == [] and sorted(again.grown) == sorted(first.created)

    # dismissed: stays dismissed while it grows less than the factor, opens again beyond it
    from router.store.discovery import set_member_state, set_status

    set_status(engine, stolen.id, "dismissed", dismissed_size=4)
    log_requests(url, [(f"stolen phone extra {i}", True) for i in range(3)], t0 + 2 * HOUR)
    grown = run_job(url, t0, t0 + 3 * HOUR, {"stolen": "lost"})
    assert grown.reopened == [] and [p.status for p in load_proposals(engine, ids=[stolen.id])] == [
        "dismissed"
    ]
    log_requests(url, [(f"stolen phone more {i}", True) for i in range(2)], t0 + 3 * HOUR)
    reopened = run_job(url, t0, t0 + 4 * HOUR, {"stolen": "lost"})
    assert reopened.reopened == [stolen.id]
    after = load_proposals(engine, ids=[stolen.id])[0]
    assert (after.status, after.size, after.previous_size) == ("open", 9, 7)

    # a removed member stays removed and no longer counts
    removed = after.members[0].request_id
    set_member_state(engine, stolen.id, [removed], "removed")
    run_job(url, t0, t0 + 4 * HOUR, {"stolen": "lost"})
    final = load_proposals(engine, ids=[stolen.id])[0]
    assert final.size == 8 and final.counts() == {"member": 8, "confirmed": 0, "removed": 1}

    # an empty window: nothing unrouted, no proposal, the run still recorded
    empty = run_job(url, t0 - 2 * HOUR, t0 - HOUR, {})
    assert (empty.run.requests, empty.run.unrouted, empty.created) == (0, 0, [])
    engine.dispose()


def test_discover_api_actions_feedback_and_gauges(tmp_path: Path) -> None:
    from serving.registry import Registry

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"id2label": dict(enumerate(LABELS))}))
    registry = Registry(tmp_path / "registry")
    registry.register(model, alias="champion")
    settings = make_settings(
        tmp_path, registry_dir=registry.root, admin_token=TOKEN, live_accuracy_refresh_s=0.05
    )
    url = settings.database_url

    async def scenario() -> None:
        async with serving(settings, FakeEngine()) as client:
            empty = await client.get("/v1/discover", headers=AUTH)
            assert empty.status_code == 200 and empty.json() == {"proposals": [], "last_run": None}
            assert (await client.get("/v1/discover")).status_code == 401
            # customers ask what the fake model does not know: it falls back (flat answers)
            for text in [f"stolen phone {i}" for i in range(4)] + [f"esim setup {i}" for i in range(3)]:
                assert (await client.post("/v1/route", json={"text": text})).json()["fallback"]
            await client.post("/v1/route", json={"text": "why is my bill high"})  # routed
            await _flushed(client)
            now = datetime.now(UTC)
            summary = run_job(url, now - HOUR, now + HOUR, {"stolen": "lost", "esim": "esim"})
            assert (summary.run.requests, summary.run.unrouted) == (8, 7)

            listed = (await client.get("/v1/discover", headers=AUTH)).json()
            assert [p["size"] for p in listed["proposals"]] == [4, 3]
            assert listed["last_run"]["unrouted_share"] == pytest.approx(7 / 8)
            stolen, esim = (p["id"] for p in listed["proposals"])
            shown = (await client.get(f"/v1/discover/{stolen}", headers=AUTH)).json()
            assert {m["text"] for m in shown["member_list"]} == {f"stolen phone {i}" for i in range(4)}
            assert all(m["predicted_intent"] == "bill_explanation" for m in shown["member_list"])

            missing = await client.get("/v1/discover/nope", headers=AUTH)
            assert missing.status_code == 404 and missing.json()["errors"][0]["field"] == "proposal_id"
            early = await client.post(f"/v1/discover/{stolen}/confirm", headers=AUTH)
            assert early.status_code == 409 and early.json()["errors"][0]["type"] == "no_intent"
            clash = await client.post(
                f"/v1/discover/{stolen}/name", json={"name": "no_signal", "route": "x"}, headers=AUTH
            )
            assert clash.status_code == 409 and "no_signal" in clash.json()["detail"]
            assert clash.json()["errors"][0]["field"] == "name"

            # remove one member, then name it and confirm the rest in one action
            wrong = shown["member_list"][-1]["request_id"]
            out = await client.post(
                f"/v1/discover/{stolen}/remove", json={"request_ids": [wrong]}, headers=AUTH
            )
            assert out.status_code == 200 and out.json()["proposal"]["members"]["removed"] == 1
            bad = await client.post(
                f"/v1/discover/{stolen}/remove", json={"request_ids": ["zz"]}, headers=AUTH
            )
            assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "request_ids"
            named = await client.post(
                f"/v1/discover/{stolen}/name",
                json={"name": "lost_or_stolen", "route": "security", "confirm_members": True},
                headers=AUTH,
            )
            assert named.status_code == 200, named.text
            body = named.json()
            assert (body["changed"], body["feedback_created"]) == (3, 3)
            assert body["proposal"]["status"] == "named" and body["proposal"]["intent"] == "lost_or_stolen"
            assert body["proposal"]["members"] == {"member": 0, "confirmed": 3, "removed": 1}
            again = await client.post(
                f"/v1/discover/{stolen}/confirm",
                json={"request_ids": [m["request_id"] for m in shown["member_list"][:3]]},
                headers=AUTH,
            )
            assert again.status_code == 200 and again.json()["feedback_created"] == 0  # idempotent
            twice = await client.post(
                f"/v1/discover/{stolen}/name", json={"name": "other", "route": "x"}, headers=AUTH
            )
            assert twice.status_code == 409

            # merge the other into an existing intent (unknown intents are named 422), then dismiss
            unknown = await client.post(f"/v1/discover/{esim}/merge", json={"intent": "nope"}, headers=AUTH)
            assert unknown.status_code == 422 and "lost_or_stolen" in unknown.json()["errors"][0]["allowed"]
            merged = await client.post(
                f"/v1/discover/{esim}/merge",
                json={"intent": "no_signal", "confirm_members": True},
                headers=AUTH,
            )
            assert merged.status_code == 200 and merged.json()["feedback_created"] == 3
            dismissed = await client.post(f"/v1/discover/{esim}/dismiss", headers=AUTH)
            assert dismissed.json()["status"] == "dismissed"
            assert (await client.get("/v1/discover", headers=AUTH)).json()["proposals"] == []
            everything = (await client.get("/v1/discover?status=all", headers=AUTH)).json()["proposals"]
            assert {p["status"] for p in everything} == {"named", "dismissed"}
            bad_status = await client.get("/v1/discover?status=maybe", headers=AUTH)
            assert bad_status.status_code == 422 and bad_status.json()["errors"][0]["field"] == "status"

            scrape = Scrape((await _after_refresh(client)).text)
            assert scrape("switchboard_discovery_proposals_open") == 0
            assert scrape("switchboard_unrouted_share") == pytest.approx(7 / 8)
            assert scrape("switchboard_discovery_last_run_timestamp_seconds") > 0

    run(scenario())
    assert registry.taxonomy().changes.pending.keys() == {"lost_or_stolen"}
    engine = create_db_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(select(feedback_table.c.correct_intent, feedback_table.c.source)).all()
    engine.dispose()
    assert sorted(rows) == [("lost_or_stolen", "discovery")] * 3 + [("no_signal", "discovery")] * 3


async def _flushed(client: Any) -> None:
    import asyncio

    await asyncio.sleep(0.1)  # the writer flushes every 5 ms in these settings


async def _after_refresh(client: Any) -> Any:
    import asyncio

    await asyncio.sleep(0.2)  # live_accuracy_refresh_s = 0.05
    return await client.get("/metrics")


# -- the job end to end -------------------------------------------------------------------------------


@pytest.mark.slow
def test_switchboard_intents_discover_on_a_real_model(router_model: Path, tmp_path: Path) -> None:
    """The sample model's own encoder groups three kinds of query it was never taught; a second run
    keeps the proposals' ids; bad input is one line."""
    from serving.registry import Registry

    registry = Registry(tmp_path / "registry")
    registry.register(router_model, alias="champion")
    url = f"sqlite:///{tmp_path / 'log.db'}"
    now = datetime.now(UTC)
    texts = [t for group in GROUPS.values() for t in group]
    truth = {t: g for g, group in GROUPS.items() for t in group}
    log_requests(url, [(t, True) for t in texts] + [("Why is my bill so high?", False)] * 5, now - HOUR)
    args = ["intents", "discover", "--since", "1d", "--min-size", "5", "--registry", str(registry.root),
            "--database-url", url, "--no-progress"]  # fmt: skip
    first = runner.invoke(cli, args)
    assert first.exit_code == 0, first.output
    summary = json.loads(first.stdout.strip().splitlines()[-1])
    assert (summary["requests"], summary["unrouted"], summary["candidates"]) == (53, 48, 48)
    engine = create_db_engine(url)
    found = load_proposals(engine, with_texts=True)
    pure = {}
    for p in found:
        labels = [truth[m.text] for m in p.members if m.text in truth]
        top = max(set(labels), key=labels.count)
        if labels.count(top) / len(labels) >= 0.8 and len(labels) >= 8:
            pure[top] = p
    assert set(pure) == set(GROUPS), [(p.keywords, p.size) for p in found]
    assert "esim" in pure["esim"].keywords and pure["esim"].nearest_intent in SAMPLE_INTENTS
    second = runner.invoke(cli, args)
    assert second.exit_code == 0, second.output
    again = json.loads(second.stdout.strip().splitlines()[-1])
    assert again["created"] == [] and set(again["grown"]) == {p.id for p in found}
    engine.dispose()

    for bad, needle in [
        (["--since", "yesterday"], "--since"),
        (["--since", "1h", "--until", "2h"], "must be before"),
        (["--registry", str(tmp_path / "none")], "no model registry"),
    ]:
        out = runner.invoke(cli, [*args, *bad])
        assert out.exit_code == 2 and "Traceback" not in out.output
        assert needle in out.output, out.output
