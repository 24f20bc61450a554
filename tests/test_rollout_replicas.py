"""Two router replicas on one registry and one PostgreSQL database, in the Kubernetes layout (the
remote engine: one `vllm serve` for the champion, one for the challenger), follow a rollout's every
transition within a stated bound, with a load thread on both and 0 failed requests throughout."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import Server, pg_schema, vllm_server

from serving.registry import Registry
from serving.rollout import finish, history, start_canary, start_shadow

TOKEN = "replica-rollout-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
POLL_S = 0.5
CONVERGE_S = 2 * POLL_S + 30.0  # the bound: a poll, and the challenger engine's load and first answer
PHASE_REQUESTS = 30  # requests sent in each phase, before and after every transition
VLLM_ARGS = [
    "--runner", "pooling", "--pooler-config", '{"use_activation": true}', "--dtype", "float32",
    "--max-model-len", "128", "--gpu-memory-utilization", "0.3", "--enforce-eager", "--disable-log-stats",
]  # fmt: skip


class Load:
    """Requests to every router from a thread until stopped; failures kept."""

    def __init__(self, urls: list[str]) -> None:
        self.urls, self.sent, self.failed = urls, 0, []  # type: ignore[var-annotated]
        self.versions: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def wait_for(self, more: int, timeout: float = 60.0) -> None:
        """Until `more` requests beyond those sent so far have been answered (a phase's traffic is a
        count, not a sleep: a slow host sends fewer requests a second, never fewer per phase)."""
        target, started = self.sent + more, time.monotonic()
        while self.sent < target:
            assert time.monotonic() - started < timeout, f"{self.sent} of {target} requests in {timeout} s"
            time.sleep(0.05)

    def _run(self) -> None:
        clients = [httpx.Client(base_url=u, timeout=30) for u in self.urls]
        try:
            while not self._stop.is_set():
                for i, client in enumerate(clients):
                    body = {
                        "text": f"my bill is wrong {self.sent}",
                        "metadata": {"conversation_id": str(self.sent)},
                    }
                    try:
                        r = client.post("/v1/route", json=body)
                        if r.status_code == 200:
                            self.versions.append(r.json()["model_version"])
                        else:
                            self.failed.append((i, r.status_code, r.text[:200]))
                    except httpx.HTTPError as err:
                        self.failed.append((i, type(err).__name__, str(err)))
                    self.sent += 1
                time.sleep(0.01)
        finally:
            for client in clients:
                client.close()


def _stage(url: str) -> dict[str, Any]:
    r = httpx.get(f"{url}/v1/admin/rollout", headers=AUTH, timeout=10)
    r.raise_for_status()
    return dict(r.json()["served_by_this_replica"])


def _converged(urls: list[str], expected: dict[str, Any], logs: list[Path]) -> float:
    started = time.monotonic()
    while time.monotonic() - started < CONVERGE_S:
        if all(_stage(u) == expected for u in urls):
            return time.monotonic() - started
        time.sleep(0.1)
    tails = "\n".join(  # what the replicas said, without the request lines
        f"--- {p.name}\n" + "\n".join([x for x in p.read_text().splitlines() if '"POST /v1/route' not in x
                                        and '"GET /v1/admin' not in x][-15:])
        for p in logs
    )  # fmt: skip
    raise AssertionError(
        f"replicas did not converge on {expected} in {CONVERGE_S} s: {[_stage(u) for u in urls]}\n{tails}"
    )


@pytest.mark.slow
def test_two_replicas_follow_shadow_canary_and_promotion(minilm_model: Path, tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry")
    registry.register(minilm_model, alias="champion")
    challenger_dir = shutil.copytree(minilm_model, tmp_path / "challenger")
    registry.register(challenger_dir, alias="challenger")
    with (
        pg_schema() as db,
        vllm_server(registry.get("v0001").path, [*VLLM_ARGS, "--served-model-name", "v0001"],
                    tmp_path / "vllm-champion.log") as champion_url,
        vllm_server(registry.get("v0002").path, [*VLLM_ARGS, "--served-model-name", "v0002"],
                    tmp_path / "vllm-challenger.log") as challenger_url,
    ):  # fmt: skip
        for url in (champion_url, challenger_url):  # a CPU vLLM's first batches are slow: warm both
            for n in (1, 2, 4, 8):
                httpx.post(f"{url}/classify", json={"input": ["warm up"] * n}, timeout=120).raise_for_status()
        env = {
            "SWITCHBOARD_REGISTRY_DIR": str(registry.root),
            "SWITCHBOARD_REGISTRY_POLL_S": str(POLL_S),
            "SWITCHBOARD_ENGINE": "remote",
            "SWITCHBOARD_ENGINE_URL": champion_url,
            "SWITCHBOARD_ENGINE_SERVED_MODEL": "v0001",
            "SWITCHBOARD_CHALLENGER_ENGINE_URL": challenger_url,
            "SWITCHBOARD_ADMIN_TOKEN": TOKEN,
            "SWITCHBOARD_ROLLOUT_AUTO": "false",  # the transitions are this test's, timed
        }
        routers = [Server(None, db, tmp_path / f"router-{i}", extra_env=env) for i in range(2)]
        try:
            urls = [r.ensure_running().base_url for r in routers]
            logs = [r.log_path for r in routers]
            timings = {}
            with Load(urls) as load:
                load.wait_for(PHASE_REQUESTS)
                start_shadow(registry, by="test")
                timings["shadow"] = _converged(
                    urls, {"champion": "v0001", "challenger": "v0002", "stage": "shadow"}, logs
                )
                load.wait_for(PHASE_REQUESTS)
                start_canary(registry, 0.5, by="test")
                timings["canary"] = _converged(
                    urls, {"champion": "v0001", "challenger": "v0002", "stage": "canary"}, logs
                )
                load.wait_for(2 * PHASE_REQUESTS)  # both versions answer a 50% canary
                canary_versions = list(load.versions)
                finish(registry, "promoted", by="test")
                # remote layout: the champion's own server still serves v0001, so every replica keeps
                # serving it (the served-model check refuses v0002 there) until it is rolled
                timings["promoted"] = _converged(
                    urls, {"champion": "v0001", "challenger": None, "stage": None}, logs
                )
                load.wait_for(PHASE_REQUESTS)
            assert load.failed == [], load.failed[:5]
            assert "v0002" in canary_versions and "v0001" in canary_versions
            assert all(t < CONVERGE_S for t in timings.values()), timings
        finally:
            for r in routers:
                r.stop()
        with httpx.Client() as client:  # the challenger's server answered shadow and canary calls
            served = client.get(f"{challenger_url}/metrics").text
        calls = [
            float(line.rsplit(" ", 1)[1])
            for line in served.splitlines()
            if line.startswith("http_requests_total{") and 'handler="/classify"' in line
        ]
        assert sum(calls) > 10, calls
    assert [e["event"] for e in history(registry)] == ["shadow", "canary", "promoted"]
    assert registry.aliases()["champion"] == "v0002"
    logs = "".join(p.read_text() for p in tmp_path.glob("router-*.log"))
    assert "serves v0001, not v0002" in logs  # why the replicas wait for their engine to roll
