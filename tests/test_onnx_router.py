"""The router on the ONNX Runtime engine (`engine: onnx`), real app, real registry, real engines on
two tiny exported classifiers: hot swaps and a rollback under concurrent traffic fail no request
and free the old engines; a challenger in shadow runs on ONNX Runtime beside the champion and is
adopted, not reloaded, when promoted; the `engine` label says onnx."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from support import build_tiny_onnx_model
from support.fakes import Scrape, make_settings, run, serving
from test_rollout import count, until

from router.runtime import open_configured_engine
from router.store.models import shadow_answers
from serving.registry import Registry
from serving.rollout import finish, start_shadow

TOKEN = "onnx-router-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TEXTS = ["my bill is too high", "no signal at home", "cancel my plan", "roaming abroad fails"]


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    root = tmp_path_factory.mktemp("onnx-registry")
    reg = Registry(root / "registry")
    for seed in (1, 2):
        reg.register(build_tiny_onnx_model(root / f"m{seed}", seed=seed), alias="champion")
    return reg


def _fresh(registry: Registry, tmp_path: Path) -> Registry:
    """A copy of the module's registry for one test (aliases and rollouts change)."""
    import shutil

    shutil.copytree(registry.root, tmp_path / "registry")
    return Registry(tmp_path / "registry")


async def _load(client: httpx.AsyncClient, stop: asyncio.Event, worker: int) -> tuple[int, list[str]]:
    failed, versions = 0, []
    i = 0
    while not stop.is_set():
        r = await client.post("/v1/route", json={"text": f"{TEXTS[(worker + i) % len(TEXTS)]} {i}"})
        if r.status_code == 200:
            versions.append(r.json()["model_version"])
        else:
            failed += 1
        i += 1
        await asyncio.sleep(0)
    return failed, versions


def test_hot_swaps_on_onnx_fail_no_request(registry: Registry, tmp_path: Path) -> None:
    reg = _fresh(registry, tmp_path)
    settings = make_settings(tmp_path, registry_dir=reg.root, admin_token=TOKEN, engine="onnx")

    async def scenario() -> None:
        async with serving(settings, engine_factory=open_configured_engine) as client:
            rt = client.app.state.runtime  # type: ignore[attr-defined]
            assert rt.model is not None and rt.model.engine.kind == "onnx"
            stop = asyncio.Event()
            workers = [asyncio.create_task(_load(client, stop, w)) for w in range(8)]
            engines = [rt.model.engine]
            for call in (
                client.post("/v1/admin/reload", json={"version": "v0001"}, headers=AUTH),
                client.post("/v1/admin/rollback", headers=AUTH),
                client.post("/v1/admin/reload", json={"version": "v0001"}, headers=AUTH),
            ):
                await asyncio.sleep(0.3)
                r = await call
                assert r.status_code == 200, r.text
                engines.append(rt.model.engine)
            await asyncio.sleep(0.3)
            stop.set()
            results = await asyncio.gather(*workers)
            failed = sum(f for f, _ in results)
            versions = [v for _, vs in results for v in vs]
            assert failed == 0, f"{failed} of {failed + len(versions)} requests failed during the swaps"
            assert {"v0001", "v0002"} <= set(versions) and len(versions) > 100
            assert versions[-1] == "v0001"
            await asyncio.sleep(0.1)
            assert [e._batcher.closed for e in engines] == [True, True, True, False]  # old ones freed
            metrics = Scrape((await client.get("/metrics")).text)
            assert metrics("switchboard_model_info", version="v0001", engine="onnx") == 1
            assert metrics("switchboard_engine_batch_size_count") > 0  # the batcher reports batches

    run(scenario())


def test_a_shadow_challenger_on_onnx_is_adopted_when_promoted(registry: Registry, tmp_path: Path) -> None:
    reg = _fresh(registry, tmp_path)
    with reg.locked():
        reg.set_alias_locked("champion", "v0001")
        reg.set_alias_locked("challenger", "v0002")
    settings = make_settings(
        tmp_path, registry_dir=reg.root, registry_poll_s=0.02, admin_token=TOKEN, engine="onnx",
        rollout_auto=False, audit_rate=0.0,
    )  # fmt: skip

    async def scenario() -> None:
        async with serving(settings, engine_factory=open_configured_engine) as client:
            rt = client.app.state.runtime  # type: ignore[attr-defined]
            start_shadow(reg, by="test")
            await until("challenger loaded", lambda: rt.rollout.second is not None)
            challenger = rt.rollout.second
            assert challenger.engine.kind == "onnx" and challenger.info.version == "v0002"
            for i in range(12):
                r = await client.post("/v1/route", json={"text": f"{TEXTS[i % 4]} {i}"})
                assert r.status_code == 200 and r.json()["model_version"] == "v0001"
                await asyncio.sleep(0)
            await until("shadow answers", lambda: count(settings.database_url, shadow_answers) == 12)
            finish(reg, "promoted", by="test")
            await until("adopted", lambda: rt.model.info.version == "v0002")
            assert rt.model.engine is challenger.engine  # adopted: not loaded again
            r = await client.post("/v1/route", json={"text": "my bill"})
            assert r.status_code == 200 and r.json()["model_version"] == "v0002"

    run(scenario())
