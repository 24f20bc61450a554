"""`make demo`: the whole product in a few minutes on a CPU.

1. Train the sample model (MiniLM on data/sample) into runs/demo, unless it is already there.
2. Start the router (`switchboard serve`, a real uvicorn process, via `router.devserver`) and wait
   until it is ready.
3. Route a few queries (one at a time and as a batch), print the answers.
4. Post feedback for one answer (twice: the repeat is recognised), print it.
5. Print a few lines of /metrics.
6. Stop the router with SIGTERM and show that every request reached the request log.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from router.devserver import DevServer, DevServerError

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
    "switchboard_reviewed_agreement ",
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
    server = DevServer(
        MODEL_DIR,
        database_url=f"sqlite:///{db_path}",
        env={
            "SWITCHBOARD_ROUTES_FILE": str(REPO / "data" / "sample" / "routes.yaml"),
            "SWITCHBOARD_LOG_LEVEL": "warning",
            # the sample model answers in-scope queries with 0.9+; below 0.7 it is guessing
            "SWITCHBOARD_CONFIDENCE_THRESHOLD": "0.7",
        },
        log_path=WORK_DIR / "server.log",
        cwd=REPO,
        ready_timeout_s=600,
    )
    console.print(f"[bold]2.[/] starting the router on a free port (log: {server.log_path})")
    try:
        with console.status("loading the model into vLLM..."):
            server.start()
    except DevServerError as err:
        raise SystemExit(str(err)) from None
    console.print(f"   ready at {server.base_url} after {server.ready_s:.0f} s")
    try:
        with server.client(timeout=30) as client:
            request_ids = _route(client)
            _feedback(client, request_ids)
            _metrics(client)
    finally:
        console.print("[bold]6.[/] stopping the router (SIGTERM)")
        code = server.stop()
    console.print(f"router exited with code {code}")
    logged = _count_rows(db_path)
    console.print(f"request log {db_path}: {logged} routed requests stored")
    return 0 if code == 0 else 1


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
