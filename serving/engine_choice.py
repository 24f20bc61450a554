"""`--engine auto`: which in-process engine serves a model on this host, decided without measuring.

The rule, in order (docs/ROUTER.md, "Engines"):
1. A generative model (`objective: generate`): vLLM (`local`); only vLLM scores labels by logprobs.
2. A visible GPU with vLLM installed: vLLM.
3. No ONNX export that passed its check: vLLM (and an error naming why when vLLM is not installed).
4. vLLM not installed (a `serve,onnx` install): ONNX Runtime.
5. The export's speed measurement, when it was taken on a CPU of this host's kind (native bf16
   or not: what decides vLLM's dtype, and its speed, on a CPU): ONNX Runtime when its served file
   (int8 where that passed the quality rule, so at equal accuracy) classified at least as many
   queries/s as vLLM, else vLLM. vLLM's rate is its own where the export measured it
   (`switchboard models export-onnx --measure-vllm`); otherwise, on a CPU without native bf16,
   PyTorch fp32 stands in for it (the export measures in seconds, not vLLM's start-up minute;
   there PyTorch fp32 classified faster than vLLM fp32, so the stand-in errs towards vLLM). On a
   CPU with native bf16 nothing stands in: PyTorch bf16 ran at a quarter of vLLM's bf16 rate.
6. No measurement that applies: ONNX Runtime on a CPU without native bf16 (vLLM runs fp32 there,
   and ONNX Runtime fp32 was 1.5x its rate), vLLM on one with it (vLLM runs bf16: 2x ONNX
   Runtime fp32's rate on the host of docs/BENCHMARKS.md).

Start-up reads two small files (config, `onnx.json`) and /proc; it measures nothing.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from serving.hardware import cpu_has_native_bf16, gpu_visible
from serving.label_scoring import is_generative
from serving.model_dir import ModelDirError
from serving.onnx_model import read_onnx_report, served_onnx_file

InProcess = Literal["local", "onnx"]


@dataclass(frozen=True)
class EngineChoice:
    kind: InProcess
    reason: str


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


def check_onnx_servable(model_dir: str | Path) -> None:
    """`ModelDirError` naming the reason why `--engine onnx` cannot serve `model_dir`."""
    if is_generative(model_dir):
        raise ModelDirError(
            f"{model_dir}: the generative objective is served by vLLM (--engine local), not ONNX Runtime"
        )
    served_onnx_file(model_dir)


def choose_engine(
    model_dir: str | Path,
    *,
    gpu: bool | None = None,
    native_bf16: bool | None = None,
    vllm: bool | None = None,
) -> EngineChoice:
    """The engine `--engine auto` opens for `model_dir` on this host (the module's rule).

    The host facts default to this host's; tests pass their own."""
    gpu = gpu_visible() if gpu is None else gpu
    native_bf16 = cpu_has_native_bf16() if native_bf16 is None else native_bf16
    vllm = vllm_installed() if vllm is None else vllm
    if is_generative(model_dir):
        return EngineChoice("local", "the generative objective is served by vLLM")
    if gpu and vllm:
        return EngineChoice("local", "a GPU is visible: vLLM")
    try:
        served_onnx_file(model_dir)
    except ModelDirError as err:
        if not vllm:
            raise ModelDirError(f"--engine auto: vLLM is not installed and {err}") from None
        return EngineChoice("local", f"no ONNX export to serve ({err})")
    if not vllm:
        return EngineChoice("onnx", "vLLM is not installed")
    report = read_onnx_report(model_dir) or {}
    measured = measured_choice(report.get("speed"), native_bf16=native_bf16)
    if measured is not None:
        return measured
    kind: InProcess = "local" if native_bf16 else "onnx"
    cpu = "with" if native_bf16 else "without"
    return EngineChoice(kind, f"no speed measurement on a CPU like this one: the default on a CPU {cpu} bf16")


def measured_choice(speed: Any, *, native_bf16: bool) -> EngineChoice | None:
    """Rule 5 on a report's `speed` section; None when it does not apply to this host."""
    try:
        if bool(speed["cpu"]["native_bf16"]) != native_bf16:
            return None
        onnx = speed["onnx"]
        onnx_qps = float(onnx["qps"])
        other = speed.get("vllm")
        if other is None:
            other = speed.get("vllm_stand_in")
            if other is None or other.get("dtype") != "float32":
                return None
        other_qps = float(other["qps"])
    except (KeyError, TypeError, ValueError, AttributeError):
        return None
    name = "vLLM" if other.get("engine") == "vllm" else "PyTorch (vLLM's stand-in)"
    measured = (
        f"at export ONNX Runtime {onnx.get('precision', '?')} classified {onnx_qps:.0f} queries/s, "
        f"{name} {other.get('dtype', '?')} {other_qps:.0f}/s"
    )
    return EngineChoice("onnx" if onnx_qps >= other_qps else "local", measured)
