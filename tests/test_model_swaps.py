"""Changing the served model under injected faults: an admin rollback to a version that cannot
load, paths and corrupt registry files through the admin API, concurrent reloads, a reload during
the startup load, and a promotion by another process reaching a router that watches the registry
(`registry_poll_s`).

The registry, the model directories (`read_model_info` on each version's files) and the CLI are
the real ones; the engine is the keyword fake of `support.fakes` built from the model directory's
real `ModelInfo`, so a version whose `config.json` is broken fails to load as it would with vLLM
(`tests/test_loop_e2e.py` swaps real vLLM engines)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from support import REPO
from support.fakes import LABELS, ROUTES, FakeEngine, Scrape, make_settings, run

from router.app import build_app
from router.settings import Settings
from serving.model_dir import read_model_info
from serving.registry import Registry

TOKEN = "model-swaps-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _version_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"id2label": {str(i): lab for i, lab in enumerate(LABELS)}}))
    (path / "routes.yaml").write_text("routes:\n" + "".join(f"  {k}: {v}\n" for k, v in ROUTES.items()))
    return path


def _registry(root: Path, n: int = 2) -> Registry:
    reg = Registry(root / "registry")
    for i in range(n):
        reg.register(_version_dir(root / f"m{i}"), alias="champion")
    return reg


class Engines:
    """The engine factory: a fake engine per load, with the model dir's real info; records every
    engine, how many loads overlap, and can hold loads at a gate."""

    def __init__(self, load_s: float = 0.0) -> None:
        self.opened: list[FakeEngine] = []
        self.loading = 0
        self.most_loading = 0
        self.load_s = load_s
        self.gates: dict[int, asyncio.Event] = {}  # load number -> wait for it

    async def __call__(self, settings: Settings) -> FakeEngine:
        n = len(self.opened) + self.loading
        self.loading += 1
        self.most_loading = max(self.most_loading, self.loading)
        try:
            if n in self.gates:
                await self.gates[n].wait()
            await asyncio.sleep(self.load_s)
            assert settings.model_dir is not None
            info = await asyncio.to_thread(read_model_info, settings.model_dir)  # fails on a broken dir
            engine = FakeEngine()
            engine.info = replace(info, labels=LABELS)
            self.opened.append(engine)
            return engine
        finally:
            self.loading -= 1

    def open_now(self) -> list[FakeEngine]:
        return [e for e in self.opened if not e.closed]


async def _with_app(
    settings: Settings, engines: Engines, scenario: Callable[[httpx.AsyncClient, object], Awaitable[None]]
) -> None:
    app = build_app(settings, engine_factory=engines)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://router", timeout=30) as client:
            await scenario(client, app.state.runtime)


async def _ready(client: httpx.AsyncClient) -> None:
    for _ in range(500):
        if (await client.get("/readyz")).status_code == 200:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("never ready")


async def _served(client: httpx.AsyncClient) -> str:
    r = await client.post("/v1/route", json={"text": "my bill is too high"})
    assert r.status_code == 200, r.text
    return str(r.json()["model_version"])


# -- defect 8: registry and router never disagree; no paths; corrupt files named -------------------


def test_admin_rollback_to_a_version_that_cannot_load_changes_nothing(tmp_path: Path) -> None:
    reg = _registry(tmp_path)
    (reg.versions_dir / "v0001" / "config.json").write_text("{not json")  # the fault
    aliases_before = reg.aliases_file.read_bytes()
    settings = make_settings(tmp_path, registry_dir=reg.root, admin_token=TOKEN)
    engines = Engines()

    async def scenario(client: httpx.AsyncClient, rt: object) -> None:
        await _ready(client)
        assert await _served(client) == "v0002"
        r = await client.post("/v1/admin/rollback", headers=AUTH)
        assert r.status_code == 503, r.text
        assert r.json()["detail"].startswith("reload failed, still serving v0002: ")
        assert reg.aliases_file.read_bytes() == aliases_before, "the registry must not move"
        assert reg.get("champion").version == "v0002"
        assert await _served(client) == "v0002"
        assert [e.info.version for e in engines.open_now()] == ["v0002"]

    run(_with_app(settings, engines, scenario))


def test_admin_rollback_serves_first_then_records(tmp_path: Path) -> None:
    reg = _registry(tmp_path)
    settings = make_settings(tmp_path, registry_dir=reg.root, admin_token=TOKEN)
    engines = Engines()

    async def scenario(client: httpx.AsyncClient, rt: object) -> None:
        await _ready(client)
        r = await client.post("/v1/admin/rollback", headers=AUTH)
        assert r.status_code == 200, r.text
        assert (r.json()["model_version"], r.json()["previous_version"]) == ("v0001", "v0002")
        assert reg.get("champion").version == "v0001" and await _served(client) == "v0001"
        again = await client.post("/v1/admin/rollback", headers=AUTH)
        assert again.status_code == 409 and "nothing to roll back to" in again.json()["detail"]
        assert [e.info.version for e in engines.open_now()] == ["v0001"]

    run(_with_app(settings, engines, scenario))


def test_admin_rollback_to_a_deleted_version_is_409_and_changes_nothing(tmp_path: Path) -> None:
    import shutil

    reg = _registry(tmp_path)
    settings = make_settings(tmp_path, registry_dir=reg.root, admin_token=TOKEN)

    async def scenario(client: httpx.AsyncClient, rt: object) -> None:
        await _ready(client)
        shutil.rmtree(reg.versions_dir / "v0001")
        before = reg.aliases_file.read_bytes()
        r = await client.post("/v1/admin/rollback", headers=AUTH)
        assert r.status_code == 409 and "previous champion v0001 is missing" in r.json()["detail"]
        assert reg.aliases_file.read_bytes() == before and await _served(client) == "v0002"

    run(_with_app(settings, Engines(), scenario))


@pytest.mark.parametrize("version", ["../../etc", "/etc", "/tmp", "../registry/versions/v0001", "..", "v1"])
def test_admin_reload_refuses_paths(tmp_path: Path, version: str) -> None:
    reg = _registry(tmp_path)
    settings = make_settings(tmp_path, registry_dir=reg.root, admin_token=TOKEN)
    engines = Engines()

    async def scenario(client: httpx.AsyncClient, rt: object) -> None:
        await _ready(client)
        r = await client.post("/v1/admin/reload", json={"version": version}, headers=AUTH)
        assert r.status_code == 422, r.text
        error = r.json()["errors"][0]
        # refused by the published pattern (vNNNN, a number, champion, challenger) before the
        # registry is asked; the registry refuses paths too (test_registry_integrity)
        assert error["field"] == "version" and error["type"] == "string_pattern_mismatch"
        assert len(engines.opened) == 1, "nothing was loaded"

    run(_with_app(settings, engines, scenario))


def test_a_corrupt_aliases_file_is_a_409_naming_it(tmp_path: Path) -> None:
    reg = _registry(tmp_path)
    settings = make_settings(tmp_path, registry_dir=reg.root, admin_token=TOKEN)

    async def scenario(client: httpx.AsyncClient, rt: object) -> None:
        await _ready(client)
        reg.aliases_file.write_text('{"champion": "v00')  # the fault: a torn hand edit
        for method, path in [("POST", "reload"), ("POST", "rollback"), ("GET", "intents")]:
            r = await client.request(method, f"/v1/admin/{path}", headers=AUTH)
            assert r.status_code == 409, (path, r.status_code, r.text)
            body = r.json()
            assert (
                body["errors"][0]["type"] == "registry_corrupt" and body["errors"][0]["field"] == "registry"
            )
            assert "aliases.json is corrupt (not valid JSON" in body["detail"]
        assert await _served(client) == "v0002"

    run(_with_app(settings, Engines(), scenario))


# -- defect 9: races ---------------------------------------------------------------------------------


def test_concurrent_reloads_are_serialised_and_leak_no_engine(tmp_path: Path) -> None:
    reg = _registry(tmp_path)
    settings = make_settings(tmp_path, registry_dir=reg.root, admin_token=TOKEN)
    engines = Engines(load_s=0.05)

    async def scenario(client: httpx.AsyncClient, rt: object) -> None:
        await _ready(client)
        calls = [
            client.post("/v1/admin/reload", json={"version": v}, headers=AUTH)
            for v in ("v0001", "v0002", "v0001", "v0002", "v0001")
        ]
        answers = await asyncio.gather(*calls, client.post("/v1/admin/rollback", headers=AUTH))
        assert [a.status_code for a in answers] == [200] * 6, [a.text for a in answers]
        assert engines.most_loading == 1, "two loads overlapped"
        assert len(engines.open_now()) == 1 and rt.model.engine is engines.open_now()[0]  # type: ignore[attr-defined]
        # the rollback ran after the reloads, alone: it served v0001 and recorded it
        assert reg.get("champion").version == "v0001" and await _served(client) == "v0001"

    run(_with_app(settings, engines, scenario))


def test_a_reload_during_the_startup_load_wins_and_leaks_nothing(tmp_path: Path) -> None:
    reg = _registry(tmp_path)
    settings = make_settings(tmp_path, registry_dir=reg.root, admin_token=TOKEN)
    engines = Engines()
    engines.gates[0] = asyncio.Event()  # the startup load hangs until released

    async def scenario(client: httpx.AsyncClient, rt: object) -> None:
        assert (await client.get("/readyz")).status_code == 503
        reload = asyncio.create_task(client.post("/v1/admin/reload", json={"version": "v0001"}, headers=AUTH))
        await asyncio.sleep(0.2)
        assert not reload.done(), "the reload waits for the startup load"
        engines.gates[0].set()
        r = await reload
        assert r.status_code == 200, r.text
        assert (r.json()["model_version"], r.json()["previous_version"]) == ("v0001", "v0002")
        await asyncio.sleep(0.05)
        assert [(e.info.version, e.closed) for e in engines.opened] == [("v0002", True), ("v0001", False)]
        assert await _served(client) == "v0001"

    run(_with_app(settings, engines, scenario))


def _cli(*args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "router.cli", "models", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_a_promotion_by_another_process_reaches_a_watching_router(tmp_path: Path) -> None:
    reg = _registry(tmp_path, n=1)
    reg.register(_version_dir(tmp_path / "m-new"), alias="challenger")
    broken = reg.register(_version_dir(tmp_path / "m-broken"))
    (broken.path / "config.json").write_text("{")
    settings = make_settings(tmp_path, registry_dir=reg.root, registry_poll_s=0.05)
    engines = Engines()

    async def until_served(client: httpx.AsyncClient, version: str) -> None:
        for _ in range(200):
            if await _served(client) == version:
                return
            await asyncio.sleep(0.025)
        raise AssertionError(f"never served {version}")

    async def scenario(client: httpx.AsyncClient, rt: object) -> None:
        await _ready(client)
        assert await _served(client) == "v0001"
        await asyncio.to_thread(_cli, "promote", "--registry", str(reg.root))  # another process
        await until_served(client, "v0002")
        await asyncio.to_thread(_cli, "rollback", "--registry", str(reg.root))
        await until_served(client, "v0001")
        # a champion that cannot load: logged, counted, the old one keeps serving
        await asyncio.to_thread(_cli, "promote", broken.version, "--registry", str(reg.root))
        await asyncio.sleep(0.4)
        assert await _served(client) == "v0001"
        metrics = Scrape((await client.get("/metrics")).text)
        assert metrics("switchboard_model_reloads_total", outcome="failed") >= 1  # series starts at 0
        # and the watch keeps going: the next promotion is served
        await asyncio.to_thread(_cli, "promote", "v0002", "--registry", str(reg.root))
        await until_served(client, "v0002")
        assert len(engines.open_now()) == 1

    run(_with_app(settings, engines, scenario))


def test_without_polling_a_promotion_waits_for_a_reload(tmp_path: Path) -> None:
    reg = _registry(tmp_path, n=1)
    reg.register(_version_dir(tmp_path / "m-new"), alias="challenger")
    settings = make_settings(tmp_path, registry_dir=reg.root, admin_token=TOKEN)

    async def scenario(client: httpx.AsyncClient, rt: object) -> None:
        await _ready(client)
        reg.promote("challenger")
        await asyncio.sleep(0.2)
        assert await _served(client) == "v0001", "registry_poll_s is off by default"
        r = await client.post("/v1/admin/reload", headers=AUTH)
        assert r.status_code == 200 and await _served(client) == "v0002"

    run(_with_app(settings, Engines(), scenario))
