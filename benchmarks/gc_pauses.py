"""Garbage-collection pauses in the router under load, with and without the heap freeze.

Run:  python benchmarks/gc_pauses.py [--model-dir runs/bench/minilm-banking77] [--runs 5]
      (needs `wrk`; the model comes from `python benchmarks/train.py --datasets banking77`)

The router runs its engine in-process, so its Python heap holds hundreds of thousands of
long-lived objects (torch, vLLM, transformers). `switchboard serve` freezes that heap once the model answers
(`router.app.freeze_heap`). This script serves the Banking77 model twice, as `switchboard serve`
does, once as shipped and once with the freeze turned off, and drives each with wrk at
concurrency 32 (`--runs` x 10 s after a 5 s warm-up). Inside the server it records every
collection longer than 5 ms (`gc.callbacks`) and every event-loop stall longer than 20 ms (a
5 ms timer). Writes benchmarks/results/gc_pauses.json and the "GC pauses" section of
docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import signal
import statistics
import sys
import tempfile
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.local_data import use_local_datasets  # noqa: E402
from benchmarks.markdown import machine_info, machine_line, replace_section  # noqa: E402
from benchmarks.wrk_load import lua_script, wrk  # noqa: E402
from router.devserver import DevServer  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "gc_pauses.json"
CONCURRENCY = 32
RUN_S = 10
GC_MIN_S = 0.005
STALL_TICK_S, STALL_MIN_S = 0.005, 0.020
VARIANTS = {"heap frozen (as shipped)": False, "no freeze": True}


def serve_child(model_dir: str, port: int, out: str, no_freeze: bool) -> None:
    """The router as `switchboard serve` runs it, plus GC and event-loop stall recorders."""
    import uvicorn

    import router.app
    from router.settings import load_settings

    if no_freeze:
        router.app.freeze_heap = lambda: None  # type: ignore[assignment]
    pauses: list[dict[str, Any]] = []
    stalls: list[dict[str, float]] = []
    started: dict[str, float] = {}

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started["t"] = time.perf_counter()
        elif (took := time.perf_counter() - started.get("t", time.perf_counter())) > GC_MIN_S:
            pauses.append(
                {"t": time.time(), "generation": info["generation"], "ms": round(took * 1e3, 1),
                 "thread": threading.current_thread().name}
            )  # fmt: skip

    gc.callbacks.append(on_gc)
    app = router.app.build_app(load_settings(model_dir=Path(model_dir), port=port))
    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: Any) -> Any:
        async def watch() -> None:
            while True:
                t0 = time.perf_counter()
                await asyncio.sleep(STALL_TICK_S)
                if (late := time.perf_counter() - t0 - STALL_TICK_S) > STALL_MIN_S:
                    stalls.append({"t": time.time(), "ms": round(late * 1e3, 1)})

        async with inner(a):
            task = asyncio.create_task(watch())
            yield
            task.cancel()
            Path(out).write_text(json.dumps({"gc": pauses, "stalls": stalls}))

    app.router.lifespan_context = lifespan
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)  # uvicorn re-raises the stop signal after shutdown
    uvicorn.run(app, host="127.0.0.1", port=port, loop="uvloop", http="httptools", access_log=False,
                log_level="warning")  # fmt: skip


class ProbedServer(DevServer):
    """`switchboard serve` as this script's --serve-child: the router plus the recorders, which
    write `out` when it stops."""

    def __init__(self, model_dir: Path, workdir: Path, no_freeze: bool) -> None:
        db = workdir / f"log-{int(no_freeze)}.db"
        super().__init__(model_dir, database_url=f"sqlite:///{db}", cwd=REPO, stop_timeout_s=120)
        self.out = workdir / f"probe-{int(no_freeze)}.json"
        self.no_freeze = no_freeze

    def command(self, port: int) -> list[str]:
        cmd = [sys.executable, __file__, "--serve-child", str(self.model_dir), str(port), str(self.out)]
        return cmd + (["--no-freeze"] if self.no_freeze else [])


def measure(model_dir: Path, script: Path, workdir: Path, runs: int, no_freeze: bool) -> dict[str, Any]:
    server = ProbedServer(model_dir, workdir, no_freeze)
    with server:
        url = f"{server.base_url}/v1/route"
        wrk(url, script, 8, 5)  # warm-up
        t0 = time.time()
        rows = []
        for _ in range(runs):
            rows.append(wrk(url, script, CONCURRENCY, RUN_S))
            print(rows[-1], flush=True)
    probe = json.loads(server.out.read_text())
    pauses = [p for p in probe["gc"] if p["t"] >= t0]
    stalls = [s["ms"] for s in probe["stalls"] if s["t"] >= t0]
    full = [p["ms"] for p in pauses if p["generation"] == 2]
    return {
        "runs": rows,
        "req_per_s_median": statistics.median(r["req_per_s"] for r in rows),
        "p50_ms_median": statistics.median(r["p50_ms"] for r in rows),
        "p99_ms_median": statistics.median(r["p99_ms"] for r in rows),
        "p99_ms_range": [min(r["p99_ms"] for r in rows), max(r["p99_ms"] for r in rows)],
        "gc_pauses_over_5ms": len(pauses),
        "full_collections_ms": full,
        "longest_gc_ms": max((p["ms"] for p in pauses), default=0.0),
        "loop_stalls_over_20ms": len(stalls),
        "longest_stall_ms": max(stalls, default=0.0),
    }


def _ms_or_none(ms: float, floor_s: float) -> str:
    return f"{ms:.0f} ms" if ms else f"none over {floor_s * 1e3:g} ms"


def to_markdown(r: dict[str, Any]) -> str:
    lines = [
        f"Command: `{r['command']}`. {machine_line(r['machine'])} Model: `{r['model_dir']}`; "
        f"wrk at concurrency {CONCURRENCY}, {r['runs']} × {RUN_S} s per variant after a warm-up; "
        "GC pauses and event-loop stalls recorded inside the router process.",
        "",
        "| router heap | req/s (median) | p50 (median) | p99 (median, range) | full (gen-2) collections "
        "| longest GC pause | longest loop stall |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, v in r["variants"].items():
        full = ", ".join(f"{ms:.0f} ms" for ms in v["full_collections_ms"]) or "none"
        lines.append(
            f"| {name} | {v['req_per_s_median']:.0f} | {v['p50_ms_median']:.0f} ms | "
            f"{v['p99_ms_median']:.0f} ms ({v['p99_ms_range'][0]:.0f}–{v['p99_ms_range'][1]:.0f}) | {full} | "
            f"{_ms_or_none(v['longest_gc_ms'], GC_MIN_S)} | "
            f"{_ms_or_none(v['longest_stall_ms'], STALL_MIN_S)} |"
        )
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve-child":
        serve_child(sys.argv[2], int(sys.argv[3]), sys.argv[4], "--no-freeze" in sys.argv)
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", type=Path, default=REPO / "runs" / "bench" / "minilm-banking77")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    use_local_datasets()
    from training.data import load_dataset

    texts = load_dataset("banking77").test.texts  # type: ignore[union-attr]
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        script = lua_script([json.dumps({"text": t}) for t in texts], workdir / "route.lua")
        variants = {
            name: measure(args.model_dir.resolve(), script, workdir, args.runs, no_freeze)
            for name, no_freeze in VARIANTS.items()
        }
    model_dir = args.model_dir.resolve()
    results = {
        "command": "python benchmarks/gc_pauses.py " + " ".join(sys.argv[1:]),
        "machine": machine_info(),
        "model_dir": str(model_dir.relative_to(REPO) if model_dir.is_relative_to(REPO) else model_dir),
        "runs": args.runs,
        "variants": variants,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    replace_section(
        REPO / "docs" / "BENCHMARKS.md", "gc-pauses", "GC pauses: the router's p99 tail", to_markdown(results)
    )
    print(to_markdown(results))


if __name__ == "__main__":
    main()
