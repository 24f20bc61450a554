"""What the host offers an engine, read without torch: a visible GPU, the CPU's native bf16, cores.

`--engine auto` decides with these at start-up (`serving.engine_choice`), and the ONNX export
records them beside its speed measurement, so a model measured on one kind of CPU is not taken
as measured on another. Nothing here imports torch: a `serve,onnx` install has none.
"""

from __future__ import annotations

import math
import os
import platform
import re
from functools import cache
from pathlib import Path
from typing import Any

BF16_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}  # x86 AVX-512 BF16 / AMX, Arm's bf16 feature


@cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (x86 `flags`, Arm `Features`); empty elsewhere."""
    try:
        with open("/proc/cpuinfo") as fh:
            line = next((line for line in fh if line.startswith(("flags", "Features"))), "")
    except OSError:
        return frozenset()
    return frozenset(line.partition(":")[2].split())


def cpu_has_native_bf16() -> bool:
    """True on CPUs that compute bf16 natively (vLLM then runs a float32 checkpoint in bf16)."""
    return bool(BF16_FLAGS & cpu_flags())


@cache
def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def available_cpus() -> int:
    """Cores this process may use: its CPU affinity, bounded by a cgroup v2 CPU quota (a container's
    `--cpus` or a Kubernetes CPU limit), at least 1."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            count = min(count, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, count)


def gpu_visible() -> bool:
    """True when an NVIDIA GPU is visible to this process (a device node, not hidden by
    `CUDA_VISIBLE_DEVICES`); read from /dev, so it needs neither torch nor a CUDA runtime."""
    hidden = os.environ.get("CUDA_VISIBLE_DEVICES")
    if hidden is not None and hidden.strip() in {"", "-1"}:
        return False
    try:
        return any(re.fullmatch(r"nvidia\d+", p.name) for p in Path("/dev").iterdir())
    except OSError:
        return False


def cpu_facts() -> dict[str, Any]:
    """The facts stored with a speed measurement: which CPU, native bf16 or not, cores used."""
    return {"model": cpu_model(), "native_bf16": cpu_has_native_bf16(), "cpus": available_cpus()}
