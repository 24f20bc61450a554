"""The FastAPI app factory: `build_app(settings)`, and its lifespan.

Startup (lifespan), in order:
1. Open the store and apply migrations; a database that cannot be reached fails startup.
2. Start the request-log writer.
3. Load the model in the background: the engine opens (tens of seconds for vLLM), the policy
   is built from its labels and route map, and one warm-up classification must succeed
   before `/readyz` says ready. Meanwhile the server already answers `/livez` (the process is
   up) and `/readyz` with 503, as orchestrators expect.
Shutdown: uvicorn first stops accepting and lets in-flight requests finish; then the writer
flushes everything queued and the engine closes.

What a request needs is `router.runtime.Runtime` (on `app.state.runtime`); the traffic bound
and request metrics are `router.middleware`; the handlers are `router.routes.*`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from router.errors import install_error_handlers
from router.middleware import TrafficMiddleware
from router.routes import admin, feedback, health, intents, metrics, review, route
from router.runtime import EngineFactory, Runtime, open_configured_engine
from router.settings import Settings
from router.store import RequestLog, WriterHooks, create_db_engine, migrate

log = logging.getLogger(__name__)


def build_app(settings: Settings, *, engine_factory: EngineFactory | None = None) -> FastAPI:
    """The router app for `settings`; `engine_factory` replaces vLLM in policy/API unit tests."""
    settings = settings.with_champion()
    runtime = Runtime(settings, engine_factory or open_configured_engine)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = create_db_engine(settings.database_url)
        revision = await asyncio.to_thread(migrate, db)
        runtime.db = db  # reads that are not the writer's (GET /v1/review) use the same engine
        log.info(
            "request log: %s at schema revision %s",
            db.url.render_as_string(hide_password=True),
            revision,
        )
        hooks = WriterHooks(on_flush=runtime.metrics.observe_flush, on_error=runtime.metrics.log_errors.inc)
        runtime.log = RequestLog(
            db,
            linger_s=settings.log_flush_interval_s,
            batch_max=settings.log_batch_max,
            queue_max=settings.log_queue_max,
            hooks=hooks,
        )
        runtime.log.start()
        loader = asyncio.create_task(runtime.load_model(), name="load-model")
        lag_watch = asyncio.create_task(runtime.metrics.watch_loop_lag(), name="loop-lag")
        try:
            yield
        finally:
            lag_watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await lag_watch
            if not loader.done():
                loader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await loader
            await runtime.log.close(settings.shutdown_timeout_s)
            if runtime.model is not None:
                await runtime.model.close()
            runtime.metrics.ready.set(0)
            runtime.db = None
            db.dispose()
            gc.unfreeze()

    app = FastAPI(
        title="Switchboard router",
        summary="Routes customer queries to the right department with a fine-tuned intent model.",
        version="1",
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    install_error_handlers(app)
    app.add_middleware(TrafficMiddleware, runtime=runtime)
    for module in (route, feedback, intents, health, metrics, admin, review):
        app.include_router(module.router)
    return app
