"""docs/BENCHMARKS.md is assembled from sections, each owned and rewritten by one benchmark."""

from __future__ import annotations

import platform
import re
from pathlib import Path
from typing import Any

HEADER = """# Benchmarks

Every number here is written by a script under `benchmarks/` (named in each section), on the
machine its section names. Raw results: `benchmarks/results/*.json`.
"""


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_line(machine: dict[str, Any]) -> str:
    gpu = f", GPU {machine['gpu']}" if machine.get("gpu") else ", no GPU"
    return (
        f"Machine: {machine['cpu']}, {machine['cores']} cores ({machine['torch_threads']} torch threads)"
        f"{gpu}; measured {machine['date']}."
    )


def replace_section(doc: Path, key: str, title: str, body: str) -> None:
    """Insert or replace the block between `<!-- key:start -->` and `<!-- key:end -->`."""
    text = doc.read_text() if doc.exists() else HEADER
    block = f"<!-- {key}:start -->\n## {title}\n\n{body.rstrip()}\n<!-- {key}:end -->"
    pattern = re.compile(rf"<!-- {re.escape(key)}:start -->.*?<!-- {re.escape(key)}:end -->", re.S)
    text = (
        pattern.sub(lambda _m: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    )
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text)
