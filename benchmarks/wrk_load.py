"""Load generation with `wrk` and histogram quantiles from a Prometheus `/metrics` page: the
plain helpers the serving benchmarks share (serve, overload, gc_pauses, shadow_overhead)."""

from __future__ import annotations

import re
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

DURATION_S = 15  # seconds of one wrk run, unless a benchmark says otherwise


def lua_script(bodies: list[str], path: Path) -> Path:
    """wrk cycles through real request bodies (JSON in Lua long strings)."""
    items = ",\n".join(f"[==[{b}]==]" for b in bodies)
    path.write_text(
        f"local bodies = {{\n{items}\n}}\nlocal i = 0\n"
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        "request = function()\n  i = i % #bodies + 1\n"
        "  return wrk.format(nil, nil, nil, bodies[i])\nend\n"
    )
    return path


def _ms(value: str) -> float:
    number, unit = re.match(r"([\d.]+)(us|ms|s)", value).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def wrk(
    url: str, script: Path, connections: int, duration_s: int = DURATION_S, *, allow_errors: bool = False
) -> dict[str, Any]:
    """One closed-loop wrk run: req/s (2xx and others together), p50/p99 of all answers, the
    number of non-2xx answers and of requests; `allow_errors` False: any non-2xx is fatal."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration_s}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors and not allow_errors:  # an error answers fast: counting it as throughput would be a lie
        raise SystemExit(f"{url}: {errors.group(1)} non-2xx responses at concurrency {connections}")
    return {
        "concurrency": connections,
        "req_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": _ms(latency["50"]),
        "p99_ms": _ms(latency["99"]),
        "non_2xx": int(errors.group(1)) if errors else 0,
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),  # type: ignore[union-attr]
        "socket_errors": sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out)),
    }


def histogram_buckets(metrics_text: str, name: str) -> dict[float, float]:
    """Cumulative bucket counts {le: count} of an unlabelled-enough histogram (summed over labels)."""
    from prometheus_client.parser import text_string_to_metric_families

    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(metrics_text):
        if family.name != name:
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                le = float(sample.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + sample.value
    return buckets


def quantile(before: dict[float, float], after: dict[float, float], q: float) -> float:
    """Quantile of the observations between two snapshots, interpolated inside its bucket."""
    edges = sorted(after)
    counts = [after[e] - before.get(e, 0.0) for e in edges]
    total = counts[-1]
    target, lower, below = q * total, 0.0, 0.0
    for edge, cum in zip(edges, counts, strict=True):
        if cum >= target:
            if edge == float("inf"):
                return lower
            return lower + (edge - lower) * (target - below) / max(cum - below, 1e-12)
        lower, below = edge, cum
    return lower


def max_bound(before: dict[float, float], after: dict[float, float]) -> float:
    """Upper edge of the highest bucket that gained observations: the largest one is below it."""
    bound, below = 0.0, 0.0
    for edge in sorted(after):
        cum = after[edge] - before.get(edge, 0.0)
        if cum > below:
            bound, below = edge, cum
    return bound


def prometheus_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        return str(resp.read().decode())
