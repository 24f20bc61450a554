"""docs/BENCHMARKS.md is assembled from sections, each owned and rewritten by one benchmark."""

from __future__ import annotations

import os
import platform
import re
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

HEADER = """# Benchmarks

Every number here is written by a script under `benchmarks/` (named in each section), on the
machine its section names. Raw results: `benchmarks/results/*.json`.
"""


def cpu_name() -> str:
    """The CPU model plus its widest vector/bf16 support: a generic name ("AMD EPYC" on cloud
    VMs) hides what decides CPU inference speed, e.g. whether bf16 is native (vLLM's dtype)."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    for flag, label in (("amx_bf16", "AMX-BF16"), ("avx512_bf16", "AVX-512 BF16"), ("avx512f", "AVX-512")):
        if flag in flags:
            return f"{name} ({label})"
    return f"{name} (AVX2)" if "avx2" in flags else name


def machine_info() -> dict[str, Any]:
    """What every benchmark records about the machine it ran on."""
    import torch

    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "date": time.strftime("%Y-%m-%d"),
        "commit": commit(),
    }


def commit() -> str | None:
    """The checkout's commit (`+dirty` with uncommitted changes), or None outside git."""
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout

    try:
        head = git("rev-parse", "--short=12", "HEAD").strip()
        return head + ("+dirty" if git("status", "--porcelain", "--untracked-files=no").strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def machine_line(machine: dict[str, Any]) -> str:
    gpu = f", GPU {machine['gpu']}" if machine.get("gpu") else ", no GPU"
    return (
        f"Machine: {machine['cpu']}, {machine['cores']} cores ({machine['torch_threads']} torch threads)"
        f"{gpu}; measured {machine['date']}"
        + (f" at commit {machine['commit']}." if machine.get("commit") else ".")
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
