"""Test support: `switchboard serve` as a real subprocess (shared by the end-to-end tests)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
        port = _free_port()
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
