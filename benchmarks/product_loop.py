"""One product instance as the loop benchmarks drive it: a registry, a SQLite request log and
`switchboard serve` on them (router.devserver), with the calls a team makes over HTTP (route,
review, feedback, discovery, reload under load) and `switchboard retrain` as a process. A plain
module: the benchmark scripts import it, never each other.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from benchmarks.loop_data import cli
from router.devserver import DevServer

TOKEN = "learning-loop-benchmark-admin-token"
OOS = "oos"  # CLINC150's out-of-scope label: its accuracy is the in-scope one, its recall beside
BATCH = 64


def recipe_key(recipe: str) -> str:
    """A retrain recipe's short name (its options hashed): the learning loop names the work
    directory of a run beside the default's by it, and the round profile reads it back."""
    return hashlib.sha1(recipe.encode()).hexdigest()[:8]


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


class Loop:
    """One scenario's registry, store and router."""

    def __init__(self, root: Path, quick: bool) -> None:
        self.root = root
        self.registry = root / "registry"
        self.database_url = f"sqlite:///{root / 'store.db'}"
        self.log = root / "commands.log"
        self.state_file = root / "state.json"
        self.state: dict[str, Any] = (
            json.loads(self.state_file.read_text()) if self.state_file.is_file() else {}
        )
        env = {
            "SWITCHBOARD_REGISTRY_DIR": str(self.registry),
            "SWITCHBOARD_ADMIN_TOKEN": TOKEN,
            "SWITCHBOARD_LOG_LEVEL": "warning",
            "SWITCHBOARD_REQUEST_TIMEOUT_S": "60",
            "SWITCHBOARD_MAX_BATCH": str(BATCH),
        }
        if quick:
            env["SWITCHBOARD_EAGER"] = "true"
        self.server = DevServer(None, database_url=self.database_url, log_path=root / "server.log", env=env)

    def save(self) -> None:
        self.state_file.write_text(json.dumps(self.state, indent=2))

    def register(self, model_dir: Path) -> None:
        if not (self.registry / "aliases.json").is_file():
            rc, _ = cli(
                ["models", "register", str(model_dir), "--alias", "champion", "-r", str(self.registry)],
                self.log,
            )
            if rc != 0:
                raise SystemExit(f"register failed; see {self.log}")

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.server.ensure_running().base_url,
            timeout=120,
            headers={"Authorization": f"Bearer {TOKEN}"},
        )

    def route(self, texts: list[str]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        with self.client() as client:
            for start in range(0, len(texts), BATCH):
                r = client.post("/v1/route/batch", json={"texts": texts[start : start + BATCH]})
                r.raise_for_status()
                out += r.json()["results"]
        return out

    def accuracy(self, rows: list[tuple[str, str]]) -> float:
        return self.scores(rows)["test_accuracy"]

    def scores(self, rows: list[tuple[str, str]]) -> dict[str, float]:
        """The served model on `rows`: the share answered with their intent; with out-of-scope
        rows (label `oos`), the in-scope accuracy as served (the right intent, not sent to the
        fallback by the out-of-scope threshold) and the out-of-scope recall (sent to the fallback)."""
        results = self.route([t for t, _ in rows])
        pairs = list(zip(results, (y for _, y in rows), strict=True))
        outside = [r for r, y in pairs if y == OOS]
        if not outside:
            return {"test_accuracy": sum(r["intent"] == y for r, y in pairs) / len(pairs)}
        inside = [(r, y) for r, y in pairs if y != OOS]
        return {
            "test_accuracy": sum(r["intent"] == y and not r["fallback"] for r, y in inside) / len(inside),
            "oos_recall": sum(r["fallback"] for r in outside) / len(outside),
        }

    def review(self, strategy: str, limit: int, since: str, seed: int) -> list[dict[str, Any]]:
        with self.client() as client:
            r = client.get(
                "/v1/review", params={"strategy": strategy, "limit": limit, "since": since, "seed": seed}
            )
            r.raise_for_status()
            return list(r.json()["items"])

    def label(self, items: list[dict[str, Any]], truth: dict[str, str]) -> Counter[str]:
        """The reviewer: posts each item's true intent (the queue then drops the text's copies)."""
        posted: Counter[str] = Counter()
        with self.client() as client:
            for item in items:
                label = truth[item["text"]]
                r = client.post(
                    "/v1/feedback",
                    json={"request_id": item["request_id"], "correct_intent": label, "source": "benchmark"},
                )
                r.raise_for_status()
                posted[label] += 1
        return posted

    def retrain(self, recipe: list[str]) -> tuple[int, float, dict[str, Any]]:
        rc, seconds = cli(
            [
                "retrain",
                "-r",
                str(self.registry),
                "--database-url",
                self.database_url,
                "--no-progress",
                "--promotion",
                "direct",  # this benchmark measures learning, not the live rollout (benchmarks/promotion.py)
                *recipe,
            ],
            self.log,
        )
        if rc not in (0, 10, 11):
            raise SystemExit(f"retrain failed (exit {rc}); see {self.log}")
        versions = sorted((self.registry / "versions").glob("v*/decision.json"))
        decision = json.loads(versions[-1].read_text()) if versions and rc != 11 else {}
        return rc, seconds, decision

    def reload_under_load(self, texts: list[str]) -> tuple[int, int, str]:
        """POST /v1/admin/reload while a thread keeps routing; (requests sent, failed, version)."""
        stop = threading.Event()
        counts = {"sent": 0, "failed": 0}

        def load() -> None:
            with httpx.Client(base_url=self.server.base_url, timeout=60) as client:
                i = 0
                while not stop.is_set():
                    try:
                        ok = client.post("/v1/route", json={"text": texts[i % len(texts)]}).status_code == 200
                    except httpx.HTTPError:
                        ok = False
                    counts["sent"] += 1
                    counts["failed"] += not ok
                    i += 1

        worker = threading.Thread(target=load, daemon=True)
        worker.start()
        time.sleep(1.0)
        with self.client() as client:  # loading a vLLM engine on a busy CPU takes minutes
            r = client.post("/v1/admin/reload", timeout=900)
            r.raise_for_status()
            version = r.json()["model_version"]
        time.sleep(1.0)
        stop.set()
        worker.join()
        return counts["sent"], counts["failed"], version
