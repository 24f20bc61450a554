"""A hot swap on a GPU: the new vLLM engine starts while the old one still holds its memory.

vLLM refuses to start an engine when less than its `gpu_memory_utilization` share of the GPU is
free; at vLLM's default (0.9) a reload could therefore never start the second engine. The router
sizes each engine at `gpu_memory_utilization` (default 0.3), so three fit: champion, challenger, swap. Skipped
without CUDA (tests/conftest.py); `slow` too, as it starts real engines.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from support.fakes import make_settings, run

from router.app import build_app
from serving.local import HOT_SWAP_GPU_SHARE

pytestmark = [pytest.mark.gpu, pytest.mark.slow]
TOKEN = "gpu-reload-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def test_two_engines_fit_during_a_swap_by_default() -> None:
    settings = make_settings(Path("/tmp"))
    assert 3 * settings.gpu_memory_utilization < 1.0  # champion, challenger and a swap
    assert settings.gpu_memory_utilization == HOT_SWAP_GPU_SHARE


def test_reload_with_the_local_engine_on_a_gpu(router_model: Path, tmp_path: Path) -> None:
    import torch

    settings = make_settings(tmp_path, model_dir=router_model, admin_token=TOKEN, eager=True)

    async def scenario() -> None:
        app = build_app(settings)  # the real engine factory: in-process vLLM on the GPU
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://r", timeout=600) as client:
                for _ in range(3000):
                    ready = await client.get("/readyz")
                    if ready.status_code == 200:
                        break
                    assert "failed" not in ready.text, ready.text
                    await asyncio.sleep(0.1)
                free_before, total = torch.cuda.mem_get_info()
                for _ in range(2):  # twice: the second swap proves the first freed its engine
                    r = await client.post("/v1/admin/reload", headers=AUTH)
                    assert r.status_code == 200, r.text
                    routed = await client.post("/v1/route", json={"text": "my bill is too high"})
                    assert routed.status_code == 200, routed.text
                free_after, _ = torch.cuda.mem_get_info()
                # the old engine's memory came back: within 5% of the GPU of where it started
                assert abs(free_after - free_before) < 0.05 * total, (free_before, free_after, total)

    run(scenario())
