"""The whole loop, real processes: serve -> route -> corrective feedback -> retrain -> gate ->
promote -> hot reload under load (zero failed requests) -> better answers -> rollback -> old answers.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import REPO, WEAK, Server, build_weak_champion

pytestmark = pytest.mark.slow
TOKEN = "s3cret-admin-token"


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    root = tmp_path_factory.mktemp("loop")
    registry, unseen = build_weak_champion(root)
    url = f"sqlite:///{root / 'store.db'}"
    server = Server(
        None,
        url,
        root / "server",
        extra_env={
            "SWITCHBOARD_REGISTRY_DIR": str(registry.root),  # type: ignore[attr-defined]
            "SWITCHBOARD_ADMIN_TOKEN": TOKEN,
        },
    )
    try:
        yield {"server": server.ensure_running(), "registry": registry, "unseen": unseen, "url": url}
    finally:
        server.stop()


def _route(client: httpx.Client, texts: list[str]) -> list[dict]:
    out = []
    for text in texts:
        resp = client.post("/v1/route", json={"text": text})
        assert resp.status_code == 200, resp.text
        out.append(resp.json())
    return out


def _admin(client: httpx.Client, path: str, token: str | None = TOKEN) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.post(f"/v1/admin/{path}", headers=headers, timeout=300)


class Load(threading.Thread):
    """Continuous /v1/route traffic from 4 connections; counts statuses and model versions."""

    def __init__(self, base_url: str, texts: list[str]) -> None:
        super().__init__(daemon=True)
        self.base_url, self.texts = base_url, texts
        self.statuses: Counter[int] = Counter()
        self.versions: Counter[str] = Counter()
        self.errors: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        import asyncio

        async def worker(client: httpx.AsyncClient, offset: int) -> None:
            i = offset
            while not self.stop.is_set():
                try:
                    resp = await client.post("/v1/route", json={"text": self.texts[i % len(self.texts)]})
                    self.statuses[resp.status_code] += 1
                    if resp.status_code == 200:
                        self.versions[resp.json()["model_version"]] += 1
                except httpx.HTTPError as err:
                    self.errors.append(repr(err))
                i += 1

        async def main() -> None:
            async with httpx.AsyncClient(base_url=self.base_url, timeout=60) as client:
                await asyncio.gather(*(worker(client, k) for k in range(4)))

        asyncio.run(main())


def test_admin_endpoints_need_the_token(loop: dict) -> None:
    with loop["server"].client() as client:
        assert _admin(client, "reload", token=None).status_code == 401
        assert _admin(client, "reload", token="wrong").status_code == 403
        resp = client.post(
            "/v1/admin/reload", json={"version": "v0099"}, headers={"Authorization": f"Bearer {TOKEN}"}
        )
        assert resp.status_code == 422 and resp.json()["errors"][0]["field"] == "version"


def test_feedback_retrain_promote_hot_swap_and_rollback(loop: dict) -> None:
    server: Server = loop["server"]
    with server.client() as client:
        # 1. the champion gets most unseen upgrade_device queries wrong; users correct it
        before = _route(client, loop["unseen"])
        v1 = before[0]["model_version"]
        wrong = [r for r in before if r["intent"] != WEAK]
        wrong_texts = [t for r, t in zip(before, loop["unseen"], strict=True) if r["intent"] != WEAK]
        assert len(wrong) >= 10, [r["intent"] for r in before]
        for r in wrong:
            resp = client.post("/v1/feedback", json={"request_id": r["request_id"], "correct_intent": WEAK})
            assert resp.status_code == 201, resp.text

        # 2. retrain from the logged feedback: the gate promotes the challenger (exit 0)
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "router.cli",
                "retrain",
                "--registry",
                str(loop["registry"].root),
                "--database-url",
                loop["url"],
                "--min-feedback",
                "5",
                "--no-progress",
                "--start-from",
                "champion",
                "--lr-factor",
                "1",  # a barely trained champion: 24 steps at the full rate
                "--holdout",
                "0.5",  # enough held-out corrections for the paired test to decide
                "optim.max_steps=24",
                "--promotion",
                "direct",  # this test is about the retrain and the hot swap; rollouts: test_rollout
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
        decision = json.loads(done.stdout.strip().splitlines()[-1])
        assert decision["outcome"] == "promoted"

        # 3. hot reload to the new champion while traffic flows: no request fails
        load = Load(server.base_url, loop["unseen"])
        load.start()
        try:
            resp = _admin(client, "reload")
            assert resp.status_code == 200, resp.text
            swapped = resp.json()
            assert swapped["previous_version"] == v1 and swapped["model_version"] != v1
            _route(client, loop["unseen"][:3])  # traffic on the new model too
        finally:
            load.stop.set()
            load.join(timeout=60)
        assert not load.errors and set(load.statuses) == {200}, (load.statuses, load.errors[:3])
        assert sum(load.statuses.values()) > 20
        v2 = swapped["model_version"]

        # 4. the new model answers the corrected queries; metrics show the swap
        after = _route(client, wrong_texts)
        assert {r["model_version"] for r in after} == {v2}
        assert sum(r["intent"] == WEAK for r in after) >= 0.8 * len(after)
        families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}
        versions = {s.labels["version"] for s in families["switchboard_model_info"].samples if s.value == 1}
        assert versions == {v2}
        reloads = {
            s.labels["outcome"]: s.value
            for s in families["switchboard_model_reloads"].samples
            if s.name.endswith("_total")
        }
        assert reloads.get("ok") == 1

        # 5. rollback: the previous champion serves again, with its old answers
        resp = _admin(client, "rollback")
        assert resp.status_code == 200, resp.text
        assert resp.json()["model_version"] == v1
        again = _route(client, loop["unseen"])
        assert [r["intent"] for r in again] == [r["intent"] for r in before]
        assert loop["registry"].get("champion").version == v1


def test_failed_reload_keeps_the_old_model(loop: dict, tmp_path: Path) -> None:
    server: Server = loop["server"]
    registry = loop["registry"]
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{}")  # registers (has config.json) but cannot load
    (broken / "model.safetensors").write_bytes(b"not weights")
    bad = registry.register(broken)
    with server.client() as client:
        current = client.get("/readyz").json()["model_version"]
        resp = client.post(
            "/v1/admin/reload",
            json={"version": bad.version},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=300,
        )
        assert resp.status_code == 503 and "still serving" in resp.json()["detail"]
        assert client.get("/readyz").json()["model_version"] == current
        assert _route(client, ["I want to cancel"])[0]["model_version"] == current
