"""`switchboard serve`: the routing API on uvicorn, after a pre-flight check of its inputs."""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from router.cli._common import fail, quiet_libraries, require_dir, user_errors

if TYPE_CHECKING:
    from router.settings import Settings


class Engine(StrEnum):
    local = "local"
    remote = "remote"
    onnx = "onnx"
    auto = "auto"


def serve(
    model: Annotated[
        Path | None,
        typer.Option("--model", "-m", help="Exported model directory (or SWITCHBOARD_MODEL_DIR)."),
    ] = None,
    engine: Annotated[
        Engine | None,
        typer.Option(
            case_sensitive=False,
            help="local: in-process vLLM (default); remote: a `vllm serve` server at --url; onnx: "
            "ONNX Runtime in-process (the model's ONNX export, CPU); auto: vLLM on a GPU, on a CPU the "
            "engine the export measured faster.",
            show_default=False,
        ),
    ] = None,
    url: Annotated[str | None, typer.Option(help="vLLM server URL for --engine remote.")] = None,
    host: Annotated[str | None, typer.Option(help="Interface to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on (default 8000).")] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="Settings YAML; SWITCHBOARD_* env vars override it."),
    ] = None,
) -> None:
    """Serve the routing API: FastAPI on uvicorn, the model on vLLM, request log, /metrics."""
    quiet_libraries()
    with user_errors():
        from router.settings import load_settings

        settings = load_settings(
            config,
            model_dir=model,
            engine=None if engine is None else engine.value,
            engine_url=url,
            host=host,
            port=port,
        ).with_champion()
        _check_serving(settings)

    import signal

    import uvicorn

    from router.app import build_app

    application = build_app(settings)
    failures: list[str] = []

    def stop_on_failure(message: str) -> None:  # a model that cannot load: exit, do not idle
        failures.append(message)
        os.kill(os.getpid(), signal.SIGTERM)

    application.state.runtime.on_load_failure = stop_on_failure
    # uvicorn re-raises the signal that stopped it once it has shut down, which would kill the
    # process with -SIGTERM after a clean drain (and skip the exit code below); these no-op
    # handlers receive that re-raise, so a graceful stop exits 0.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    server_config = uvicorn.Config(
        application,
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        access_log=settings.access_log,
        log_level=settings.log_level,
        timeout_graceful_shutdown=drain_timeout_s(settings),
    )
    _graceful_server(server_config, application.state.runtime, settings.shutdown_delay_s).run()
    if failures:
        fail(f"model failed to load: {failures[0]}", code=1)
    _exit_now(0)


def _exit_now(code: int) -> None:
    """Exit without the interpreter's teardown, which takes 2-3 s with torch and vLLM loaded and
    would run past the shutdown budget. Safe here: the lifespan has flushed (or spooled) the
    request log and closed the engine; engine processes still alive are killed, as vLLM's own
    exit handler would."""
    import logging
    import multiprocessing
    import sys

    for child in multiprocessing.active_children():
        child.kill()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def drain_timeout_s(settings: Settings) -> int:
    """uvicorn's share of the one shutdown budget (`shutdown_timeout_s`, counted from SIGTERM):
    what is left after the readiness delay and a reserve for the log flush and the engine close
    (a fifth of the budget, at least 1 s), less half a second for uvicorn to notice the signal."""
    total = settings.shutdown_timeout_s
    reserve = max(1.0, 0.2 * total)
    return max(1, int(total - settings.shutdown_delay_s - reserve - 0.5))


def _graceful_server(config: Any, runtime: Any, delay_s: float) -> Any:
    """A uvicorn server whose first SIGTERM/SIGINT makes /readyz answer 503 and starts the
    shutdown budget at once; it keeps serving `delay_s` more (a load balancer notices), then
    stops accepting and drains. A second signal stops at once."""
    import threading

    import uvicorn

    class GracefulServer(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            first = runtime.shutdown_deadline is None
            runtime.begin_shutdown()
            if first and delay_s > 0:
                timer = threading.Timer(delay_s, setattr, (self, "should_exit", True))
                timer.daemon = True
                timer.start()
                return
            super().handle_exit(sig, frame)

    return GracefulServer(config)


def _check_serving(settings: Settings) -> None:
    """Model dir, route map, engine and database checked before vLLM spends a minute loading.

    Raises the settings', policy's, model directory's and store's own errors (user errors)."""
    from router.policy import policy_for
    from router.store import Spool, create_db_engine, migrate, spool_dir_for
    from serving.model_dir import read_model_info

    if settings.model_dir is None:
        fail("no model: pass --model DIR or set SWITCHBOARD_MODEL_DIR")
    require_dir(settings.model_dir)
    info = read_model_info(settings.model_dir)
    policy_for(info, settings)
    if settings.engine == "onnx":  # no export, or a generative model: one line now, not at load
        from serving.engine_choice import check_onnx_servable

        check_onnx_servable(settings.model_dir)
    elif settings.engine == "auto":
        from serving.engine_choice import choose_engine

        choose_engine(settings.model_dir)  # fails only when no engine can serve it here
    db = create_db_engine(settings.database_url, connect_timeout_s=settings.database_connect_timeout_s)
    try:
        migrate(db)
    finally:
        db.dispose()
    if settings.log_spool:  # an unwritable spool directory: one line, exit 2
        directory = spool_dir_for(settings.database_url, settings.log_spool_dir)
        if directory is not None:
            Spool(directory).close(keep=False)
