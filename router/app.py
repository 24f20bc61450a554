"""The FastAPI app factory: `build_app(settings)`, and its lifespan.

Startup (lifespan), in order:
1. Open the store and apply migrations; a database that cannot be reached fails startup.
2. Start the request-log writer.
3. Load the model in the background: the engine opens (tens of seconds for vLLM), the policy
   is built from its labels and route map, and one warm-up classification must succeed
   before `/readyz` says ready. Meanwhile the server already answers `/livez` (the process is
   up) and `/readyz` with 503, as orchestrators expect.
Shutdown, within one budget (`shutdown_timeout_s`, counted from SIGTERM): `/readyz` answers 503,
uvicorn stops accepting and lets in-flight requests finish; then the writer flushes everything
queued (what the database does not take in time stays in the spool) while the engine closes.
At startup, rows a killed predecessor left in the spool are replayed before the model loads.

What a request needs is `router.runtime.Runtime` (on `app.state.runtime`); the traffic bound
and request metrics are `router.middleware`; the handlers are `router.routes.*`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy import Engine as DbEngine

from router import live_accuracy
from router.errors import install_error_handlers
from router.middleware import TrafficMiddleware
from router.openapi import install_openapi
from router.registry_watch import ChampionWatch
from router.routes import admin, discover, feedback, health, intents, metrics, review, rollout, route
from router.runtime import EngineFactory, Runtime, open_configured_engine
from router.settings import Settings
from router.store import RequestLog, Spool, WriterHooks, create_db_engine, migrate, spool_dir_for
from router.web import install_review_inbox

log = logging.getLogger(__name__)


def build_app(settings: Settings, *, engine_factory: EngineFactory | None = None) -> FastAPI:
    """The router app for `settings`; `engine_factory` replaces vLLM in policy/API unit tests."""
    settings = settings.with_champion()
    runtime = Runtime(settings, engine_factory or open_configured_engine)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = create_db_engine(settings.database_url, connect_timeout_s=settings.database_connect_timeout_s)
        revision = await asyncio.to_thread(migrate, db)
        runtime.db = db  # reads that are not the writer's (GET /v1/review) use the same engine
        log.info(
            "request log: %s at schema revision %s",
            db.url.render_as_string(hide_password=True),
            revision,
        )
        runtime.log = open_request_log(settings, db, runtime)
        replayed = await runtime.log.replay()  # rows a killed predecessor left in the spool
        if replayed:
            log.warning("request log: replayed %d rows from the spool", replayed)
        runtime.log.start()
        loader = asyncio.create_task(runtime.load_model(), name="load-model")
        lag_watch = asyncio.create_task(runtime.metrics.watch_loop_lag(), name="loop-lag")
        accuracy_watch = (  # the audit sample's estimate, from the database (router.live_accuracy)
            asyncio.create_task(live_accuracy.watch(runtime), name="live-accuracy")
            if settings.live_accuracy_refresh_s
            else None
        )
        champion_watch = (  # registry_poll_s: follow the registry's champion (router.registry_watch)
            asyncio.create_task(ChampionWatch(runtime).run(), name="champion-watch")
            if settings.registry_dir is not None and settings.registry_poll_s
            else None
        )
        try:
            yield
        finally:
            if champion_watch is not None:  # first: no model change may start during shutdown
                champion_watch.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await champion_watch
            for task in (lag_watch, accuracy_watch):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
            if not loader.done():
                loader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await loader
            # one budget from SIGTERM (or from here, without one): the requests have drained,
            # so the log flush and the engine close run side by side until its deadline
            deadline = runtime.begin_shutdown()
            left = max(0.5, deadline - time.monotonic())
            await asyncio.gather(runtime.log.close(left), _close_model(runtime, left))
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
    install_openapi(app, runtime)
    app.add_middleware(TrafficMiddleware, runtime=runtime)
    for module in (route, feedback, intents, health, metrics, admin, rollout, review, discover):
        app.include_router(module.router)
    install_review_inbox(app, settings)  # /review: the review inbox, 404 unless review_ui is set
    return app


async def _close_model(runtime: Runtime, timeout_s: float) -> None:
    closing = [runtime.rollout.close()]
    if runtime.model is not None:
        closing.append(runtime.model.close())
    try:
        await asyncio.wait_for(asyncio.gather(*closing), timeout_s)
    except TimeoutError:
        log.warning("the engine did not close within the shutdown budget")


def open_request_log(settings: Settings, db: DbEngine, runtime: Runtime) -> RequestLog:
    """The request-log writer with its metrics and, unless `log_spool` is off, its spool."""
    m = runtime.metrics
    hooks = WriterHooks(
        on_flush=m.observe_flush,
        on_error=m.log_errors.inc,
        on_spill=m.observe_spill,
        on_repair=m.log_repaired.inc,
        on_spool_error=m.log_spool_errors.inc,
    )
    directory = spool_dir_for(settings.database_url, settings.log_spool_dir) if settings.log_spool else None
    spool = None
    if directory is not None:
        spool = Spool(directory, fsync_interval_s=settings.log_spool_fsync_interval_s)
        log.info("request log: spool in %s", directory)
    return RequestLog(
        db,
        linger_s=settings.log_flush_interval_s,
        batch_max=settings.log_batch_max,
        queue_max=settings.log_queue_max,
        hooks=hooks,
        spool=spool,
    )
