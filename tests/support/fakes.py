"""Fakes for the router's unit tests: a keyword 'classifier' engine, the app served in-process on
it, and a /metrics parser."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from router.app import build_app
from router.settings import Settings, load_settings
from serving.model_dir import ModelInfo

LABELS = ("bill_explanation", "no_signal", "cancel_service", "oos")
ROUTES = {"bill_explanation": "billing", "no_signal": "technical_support"}
KEYWORDS = {"bill": 0, "signal": 1, "cancel": 2, "weather": 3}


class FakeEngine:
    """Keyword 'classifier': a known word gets 0.9, no word gets a flat, unsure answer."""

    def __init__(self, delay_s: float = 0.0, fail: BaseException | None = None) -> None:
        self.info = ModelInfo("/fake", "fake-v1", LABELS, 64, dict(ROUTES))
        self.batch_size_observer: Callable[[int], None] | None = None
        self.delay_s = delay_s
        self.fail = fail
        self.gate: asyncio.Event | None = None
        self.calls = 0
        self.closed = False
        self.keywords = dict(KEYWORDS)

    async def classify(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail is not None:
            raise self.fail
        if self.batch_size_observer is not None:
            self.batch_size_observer(len(texts))
        rows = []
        for text in texts:
            hit = next((i for word, i in self.keywords.items() if word in text.lower()), None)
            if hit is None:
                rows.append([0.4, 0.35, 0.15, 0.1])
            else:
                row = [0.1 / 3] * len(LABELS)
                row[hit] = 0.9
                rows.append(row)
        return np.asarray(rows, dtype=np.float32)

    async def ready(self) -> bool:
        return not self.closed

    async def close(self) -> None:
        self.closed = True


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": f"sqlite:///{tmp_path / 'log.db'}",
        "log_flush_interval_s": 0.005,
    }
    values.update(overrides)
    return load_settings(**values)


@asynccontextmanager
async def serving(
    settings: Settings,
    engine: FakeEngine | None = None,
    *,
    wait: bool = True,
    engine_factory: Callable[[Settings], Any] | None = None,
) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan running, an httpx client on it, the fake model loaded (or the
    engines `engine_factory` opens for each model directory)."""
    engine = engine or FakeEngine()

    async def factory(_: Settings) -> FakeEngine:
        return engine

    app = build_app(settings, engine_factory=engine_factory or factory)
    async with app.router.lifespan_context(app):
        # like uvicorn: an unhandled error is answered (500 JSON) and then logged, not raised here
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://router") as client:
            client.app = app  # type: ignore[attr-defined]
            if wait:
                for _ in range(200):
                    if (await client.get("/readyz")).status_code == 200:
                        break
                    await asyncio.sleep(0.01)
            yield client


def run(coro: Any) -> Any:
    return asyncio.run(coro)


class Scrape:
    """A /metrics page parsed with prometheus_client's own parser."""

    def __init__(self, text: str) -> None:
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples = [s for f in self.families.values() for s in f.samples]

    def __call__(self, name: str, **labels: str) -> float:
        for s in self.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
        raise AssertionError(f"no sample {name} {labels}")

    def label_values(self, name: str, label: str) -> set[str]:
        return {s.labels[label] for s in self.samples if s.name == name}
