"""`switchboard serve` as a child process on a free local port: for the demo, the benchmarks and
the end-to-end tests.

    with DevServer(model_dir, database_url="sqlite:///log.db", log_path=Path("server.log")) as server:
        with server.client() as client:
            client.post("/v1/route", json={"text": "why is my bill so high"})

`start()` picks a free port, runs `python -m router.cli serve --port P [--model DIR]` and waits
until `/readyz` answers 200 (a process that exits or a timeout raises `DevServerError` with the
tail of its log); `stop()` sends SIGTERM (the router drains and flushes its request log), kills it
after a timeout and returns the exit code. Settings come from the environment, as in production:
`env` adds SWITCHBOARD_* variables (e.g. SWITCHBOARD_REGISTRY_DIR to serve a registry's champion
when `model_dir` is None). Only the standard library and httpx: nothing here loads a model.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

import httpx


class DevServerError(RuntimeError):
    """The server exited or did not become ready in time (the message ends with its log tail)."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the OS's pick)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_http(
    url: str,
    timeout_s: float = 300.0,
    *,
    proc: subprocess.Popen[bytes] | None = None,
    interval_s: float = 0.25,
) -> float:
    """Poll GET `url` until it answers 200; returns the seconds waited. Raises `DevServerError`
    when `proc` (the server behind the URL, if given) exits first or after `timeout_s`."""
    started = time.monotonic()
    deadline = started + timeout_s
    with httpx.Client(timeout=5) as client:
        while True:
            if proc is not None and proc.poll() is not None:
                raise DevServerError(f"{url}: the server exited with code {proc.returncode}")
            try:
                if client.get(url).status_code == 200:
                    return time.monotonic() - started
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise DevServerError(f"{url} did not answer 200 in {timeout_s:g} s")
            time.sleep(interval_s)


class DevServer:
    """One `switchboard serve` process at a time; `start()` again after `stop()` for a restart.

    model_dir: the exported model (`--model`); None: whatever the settings name (for a registry's
        champion, SWITCHBOARD_REGISTRY_DIR in `env`).
    database_url: SWITCHBOARD_DATABASE_URL for the request log; None: the inherited setting.
    env: extra environment on top of this process's (and of database_url).
    log_path: the server's stdout and stderr; a restart writes next to it, numbered (server.log,
        server.2.log, ...). None: inherited from this process.
    cwd: the working directory of the server; None: this process's.
    args: more `switchboard serve` options (e.g. `--config settings.yaml`).
    """

    def __init__(
        self,
        model_dir: Path | None = None,
        *,
        database_url: str | None = None,
        env: Mapping[str, str] | None = None,
        log_path: Path | None = None,
        cwd: Path | None = None,
        args: Sequence[str] = (),
        host: str = "127.0.0.1",
        ready_timeout_s: float = 300.0,
        stop_timeout_s: float = 60.0,
    ) -> None:
        self.model_dir = model_dir
        self.database_url = database_url
        self.extra_env = dict(env or {})
        self.log_path = log_path
        self.cwd = cwd
        self.args = list(args)
        self.host = host
        self.ready_timeout_s = ready_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.base_url = ""
        self.starts = 0
        self.ready_s = 0.0  # how long the last start waited for /readyz
        self.env: dict[str, str] = {}  # the environment of the last start

    def command(self, port: int) -> list[str]:
        """The server's command line for `port`."""
        cmd = [sys.executable, "-m", "router.cli", "serve", "--host", self.host, "--port", str(port)]
        if self.model_dir is not None:
            cmd += ["--model", str(self.model_dir)]
        return cmd + self.args

    @property
    def log_file(self) -> Path | None:
        """Where the current (or last) start writes its output."""
        if self.log_path is None or self.starts <= 1:
            return self.log_path
        return self.log_path.with_name(f"{self.log_path.stem}.{self.starts}{self.log_path.suffix}")

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> DevServer:
        """Start on a free port and wait until ready; a failed start is stopped and raises."""
        if self.running():
            raise DevServerError(f"already running at {self.base_url}")
        self.port = free_port(self.host)
        self.base_url = f"http://{self.host}:{self.port}"
        self.env = {**os.environ}
        if self.database_url is not None:
            self.env["SWITCHBOARD_DATABASE_URL"] = self.database_url
        self.env.update(self.extra_env)
        self.starts += 1
        log = self.log_file
        if log is None:
            self.proc = subprocess.Popen(self.command(self.port), env=self.env, cwd=self.cwd)
        else:
            log.parent.mkdir(parents=True, exist_ok=True)
            with log.open("wb") as out:  # the child has its own copy of the descriptor
                self.proc = subprocess.Popen(
                    self.command(self.port), env=self.env, cwd=self.cwd, stdout=out, stderr=subprocess.STDOUT
                )
        try:
            self.ready_s = wait_http(f"{self.base_url}/readyz", self.ready_timeout_s, proc=self.proc)
        except DevServerError as err:
            self.stop()
            raise DevServerError(f"switchboard serve: {err}\n{self.log_tail()}") from None
        except BaseException:  # e.g. Ctrl-C while the model loads: no orphan server
            self.stop()
            raise
        return self

    def ensure_running(self) -> DevServer:
        """Start unless the server is up (a first start, or after a stop or a crash)."""
        if not self.running():
            self.start()
        return self

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after `stop_timeout_s`; the exit code (None: never started)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the current start's log ("" when there is none)."""
        log = self.log_file
        if log is None or not log.is_file():
            return ""
        return log.read_text(errors="replace")[-chars:]

    def client(self, timeout: float = 60.0) -> httpx.Client:
        """An httpx client on the running server (started first if need be)."""
        return httpx.Client(base_url=self.ensure_running().base_url, timeout=timeout)

    def __enter__(self) -> DevServer:
        return self.ensure_running()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
