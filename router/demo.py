"""`make demo`: the whole product in a few minutes on a CPU.

1. Train the sample model (MiniLM on data/sample) into runs/demo, unless it is already there.
2. Start the router (`switchboard serve`, a real uvicorn process) and wait until it is ready.
3. Route a few queries (one at a time and as a batch), print the answers.
4. Post feedback for one answer (twice: the repeat is recognised), print it.
5. Print a few lines of /metrics.
6. Stop the router with SIGTERM and show that every request reached the request log.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
MODEL_DIR = REPO / "runs" / "demo"
WORK_DIR = REPO / "runs" / "demo-router"
QUERIES = [
    "Why is my bill £20 more than last month?",
    "I've had no signal on my phone since this morning",
    "I want to cancel my contract and leave",
    "Can I add my daughter to my plan?",
    "What's the weather like in Leeds tomorrow?",
]
METRIC_PREFIXES = (
    "switchboard_http_requests_total",
    "switchboard_routed_queries_total",
    "switchboard_fallbacks_total",
    "switchboard_feedback_total",
    "switchboard_live_accuracy ",
    "switchboard_model_info",
    'switchboard_request_duration_seconds_count{endpoint="/v1/route"}',
    'switchboard_request_duration_seconds_sum{endpoint="/v1/route"}',
)

console = Console(width=max(110, Console().width))  # room for the table in logs too


def main() -> int:
    # 1. Model
    if (MODEL_DIR / "config.json").is_file():
        console.print(f"[bold]1.[/] model already trained: {MODEL_DIR}")
    else:
        console.print(f"[bold]1.[/] training the sample model into {MODEL_DIR} (a few minutes on CPU)")
        subprocess.run(
            [sys.executable, "-m", "router.cli", "train", "--config", "configs/minilm-cpu.yaml",
             "--dataset", "data/sample", "--output", str(MODEL_DIR), "--no-progress"],
            cwd=REPO, check=True,
        )  # fmt: skip

    # 2. Router
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    db_path = WORK_DIR / "requests.db"
    for old in WORK_DIR.glob("requests.db*"):  # a fresh log per demo run
        old.unlink()
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "SWITCHBOARD_DATABASE_URL": f"sqlite:///{db_path}",
        "SWITCHBOARD_ROUTES_FILE": str(REPO / "data" / "sample" / "routes.yaml"),
        "SWITCHBOARD_LOG_LEVEL": "warning",
        # the sample model answers in-scope queries with 0.9+; below 0.7 it is guessing
        "SWITCHBOARD_CONFIDENCE_THRESHOLD": "0.7",
    }
    server_log = WORK_DIR / "server.log"
    console.print(f"[bold]2.[/] starting the router on {base} (log: {server_log})")
    with server_log.open("w") as log_file:
        server = subprocess.Popen(
            [sys.executable, "-m", "router.cli", "serve", "--model", str(MODEL_DIR), "--port", str(port)],
            cwd=REPO, env=env, stdout=log_file, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            with httpx.Client(base_url=base, timeout=30) as client:
                _wait_ready(client, server, server_log)
                request_ids = _route(client)
                _feedback(client, request_ids)
                _metrics(client)
        finally:
            console.print("[bold]6.[/] stopping the router (SIGTERM)")
            server.send_signal(signal.SIGTERM)
            code = server.wait(timeout=60)
    console.print(f"router exited with code {code}")
    logged = _count_rows(db_path)
    console.print(f"request log {db_path}: {logged} routed requests stored")
    return 0 if code == 0 else 1


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(client: httpx.Client, server: subprocess.Popen[bytes], log: Path) -> None:
    started = time.monotonic()
    with console.status("loading the model into vLLM..."):
        while time.monotonic() - started < 600:
            if server.poll() is not None:
                console.print(log.read_text()[-3000:])
                raise SystemExit(f"the router exited with code {server.returncode}")
            try:
                if client.get("/readyz").status_code == 200:
                    console.print(f"   ready after {time.monotonic() - started:.0f} s")
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
    raise SystemExit("the router did not become ready in 10 minutes")


def _route(client: httpx.Client) -> list[str]:
    console.print("[bold]3.[/] routing queries")
    answers = [client.post("/v1/route", json={"text": q}).raise_for_status().json() for q in QUERIES]
    batch = client.post("/v1/route/batch", json={"texts": QUERIES[:2]}).raise_for_status().json()
    table = Table("query", "intent", "route", "confidence", "fallback", "ms")
    for query, a in zip(QUERIES, answers, strict=True):
        style = "yellow" if a["fallback"] else ""
        table.add_row(
            query, a["intent"], a["route"], f"{a['confidence']:.2f}", str(a["fallback"]),
            f"{a['latency_ms']:.1f}", style=style,
        )  # fmt: skip
    console.print(table)
    console.print(f"   batch of {len(batch['results'])}: {[r['route'] for r in batch['results']]}")
    console.print(f"   model version {answers[0]['model_version']}")
    return [a["request_id"] for a in answers]


def _feedback(client: httpx.Client, request_ids: list[str]) -> None:
    console.print("[bold]4.[/] feedback: the agent who took query 4 records its true intent")
    body: dict[str, Any] = {
        "request_id": request_ids[3],
        "correct_intent": "add_line",
        "source": "agent",
        "comment": "demo feedback",
    }
    first = client.post("/v1/feedback", json=body)
    repeat = client.post("/v1/feedback", json=body)
    console.print(f"   POST /v1/feedback -> {first.status_code} {first.json()}")
    replayed = repeat.headers.get("Idempotent-Replayed")
    same = repeat.json() == first.json()
    console.print(f"   repeat -> {repeat.status_code}, Idempotent-Replayed: {replayed}, same: {same}")


def _metrics(client: httpx.Client) -> None:
    console.print("[bold]5.[/] a few lines of /metrics")
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(METRIC_PREFIXES) and not line.endswith(" 0.0"):
            console.print(f"   {line}", highlight=False)


def _count_rows(db_path: Path) -> int:
    import sqlite3

    with sqlite3.connect(db_path) as conn:
        return int(conn.execute("SELECT count(*) FROM requests").fetchone()[0])


if __name__ == "__main__":
    sys.exit(main())
