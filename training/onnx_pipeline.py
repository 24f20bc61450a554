"""Export a model directory to ONNX, check it, choose fp32 or int8, measure, and write `onnx.json`.

Run by `switchboard train` after the model is saved and evaluated (its time counts in the
training's), and by `switchboard models export-onnx` for versions trained before. The report:

```
{"format": 1, "passed": true, "file": "model.int8.onnx", "precision": "int8",
 "reason": "int8 agrees with fp32 on 99.40% ...",
 "files": {"fp32": {"file": "model.onnx", "bytes": ...}, "int8": {...}},
 "checks": {"fp32_vs_torch": {...}, "int8_vs_fp32": {...}},
 "speed": {"cpu": {"model", "native_bf16", "cpus"}, "texts", "batch",
           "onnx": {"precision", "qps", "single_ms_p50"}, "onnx_fp32": {...},
           "vllm_stand_in": {"engine": "torch", "dtype": "float32", ...} (CPUs without native bf16),
           "vllm": {"engine": "vllm", "dtype", ...} (export-onnx --measure-vllm), "auto": {...}},
 "max_length": 64, "opset": 17, "onnxruntime": "1.x", "torch": "2.x", "seconds": {...}}
```

`passed` false (fp32 disagreeing with torch) means nothing is served from ONNX: the ONNX engine
refuses the directory with the report's reason, and `auto` keeps vLLM.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from serving.engine_choice import measured_choice
from serving.files import write_json_atomic
from serving.hardware import cpu_facts
from serving.model_dir import ModelDirError, read_model_info
from serving.onnx_model import ONNX_FILE, ONNX_INT8_FILE, ONNX_REPORT, OnnxClassifier, read_onnx_report
from training.onnx_checks import SPEED_BATCH, SPEED_TEXTS, CheckTexts, fp32_check, int8_check, timed
from training.onnx_export import OPSET, check_exportable, export_fp32, quantize_int8

log = logging.getLogger(__name__)

REPORT_FORMAT = 1
EVAL_BATCH = 64


def export_checked(
    model_dir: str | Path,
    texts: CheckTexts,
    *,
    torch_validation: np.ndarray | None = None,
    measure: bool = True,
) -> dict[str, Any]:
    """Export, check, choose and measure (see the module docstring); returns the report written.

    `torch_validation`: the torch classifier's probabilities of the validation split (rows
    indexed by `texts.validation_index`) when the caller has them (training evaluated them
    already); else they are computed here."""
    import onnxruntime
    import torch

    out = Path(model_dir)
    check_exportable(out)
    info = read_model_info(out)
    seconds: dict[str, float] = {}
    started = lap = time.perf_counter()

    def step(name: str) -> None:
        nonlocal lap
        now = time.perf_counter()
        seconds[name] = round(now - lap, 2)
        lap = now

    fp32_path, int8_path = out / ONNX_FILE, out / ONNX_INT8_FILE
    export_fp32(out, fp32_path)
    step("export")
    fp32 = OnnxClassifier(out, fp32_path, max_length=info.max_length)
    fp32_probs = fp32.probabilities(texts.texts, batch_size=EVAL_BATCH)
    step("fp32_check_texts")
    # against torch on the validation texts (training texts where there are none)
    n_ref = texts.validation or min(len(texts.texts), 200)
    if torch_validation is None or not texts.validation:
        torch_ref = _torch_probabilities(out, texts.texts[:n_ref], info.max_length)
        step("torch_reference")
    else:
        torch_ref = np.asarray(torch_validation)[texts.validation_index]
    fp32_verdict = fp32_check(torch_ref, fp32_probs[:n_ref])
    report: dict[str, Any] = {
        "format": REPORT_FORMAT,
        "passed": fp32_verdict["passed"],
        "file": ONNX_FILE,
        "precision": "fp32",
        "files": {"fp32": {"file": ONNX_FILE, "bytes": fp32_path.stat().st_size}},
        "checks": {"fp32_vs_torch": fp32_verdict},
        "max_length": info.max_length,
        "opset": OPSET,
        "onnxruntime": onnxruntime.__version__,
        "torch": torch.__version__,
    }
    served: OnnxClassifier | None = fp32
    if not fp32_verdict["passed"]:
        report["reason"] = (
            f"fp32 ONNX agrees with torch on {fp32_verdict['agreement']:.2%} of "
            f"{fp32_verdict['n']} texts, under {fp32_verdict['required']:.1%}"
        )
        int8_path.unlink(missing_ok=True)
        served = None
    else:
        quantize_int8(fp32_path, int8_path)
        int8 = OnnxClassifier(out, int8_path, max_length=info.max_length)
        step("quantize")
        int8_verdict = int8_check(
            fp32_probs, int8.probabilities(texts.texts, batch_size=EVAL_BATCH), texts.validation_labels
        )
        step("int8_check_texts")
        report["checks"]["int8_vs_fp32"] = int8_verdict
        if int8_verdict["passed"]:
            report.update(file=ONNX_INT8_FILE, precision="int8", reason=int8_verdict["reason"])
            report["files"]["int8"] = {"file": ONNX_INT8_FILE, "bytes": int8_path.stat().st_size}
            served = int8
        else:
            report["reason"] = f"int8 refused: {int8_verdict['reason']}"
            int8_path.unlink(missing_ok=True)
    if measure and served is not None:
        speed_texts = texts.texts[:SPEED_TEXTS]
        report["speed"] = _speed(out, speed_texts, served, fp32, report["precision"], info.max_length)
        step("speed")
    seconds["total"] = round(time.perf_counter() - started, 2)
    report["seconds"] = seconds
    _write_report(out, report)
    log.info(
        "ONNX export of %s: %s (%s) in %.1f s", out, report["precision"], report["reason"], seconds["total"]
    )
    return report


def record_failure(model_dir: str | Path, err: BaseException) -> dict[str, Any]:
    """A report saying the export failed (the ONNX engine refuses the directory with it)."""
    out = Path(model_dir)
    for name in (ONNX_FILE, ONNX_INT8_FILE):
        (out / name).unlink(missing_ok=True)
    report = {
        "format": REPORT_FORMAT,
        "passed": False,
        "file": None,
        "precision": None,
        "reason": f"the export failed: {type(err).__name__}: {err}",
        "seconds": {"total": 0.0},
    }
    _write_report(out, report)
    return report


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """The few facts `metrics.json` keeps about the export (the rest is in `onnx.json`)."""
    speed = report.get("speed") or {}
    return {
        "passed": report["passed"],
        "precision": report["precision"] if report["passed"] else None,
        "reason": report["reason"],
        "seconds": report["seconds"]["total"],
        "queries_per_s": (speed.get("onnx") or {}).get("qps"),
    }


def _speed(
    model_dir: Path,
    texts: list[str],
    served: OnnxClassifier,
    fp32: OnnxClassifier,
    precision: str,
    max_length: int,
) -> dict[str, Any]:
    """The short measurement `--engine auto` reads (`serving.engine_choice`): the served ONNX file
    and, on a CPU without native bf16, PyTorch fp32 (vLLM's stand-in there), same texts, batches
    of `SPEED_BATCH`."""
    speed: dict[str, Any] = {"cpu": cpu_facts(), "texts": len(texts), "batch": SPEED_BATCH}
    speed["onnx"] = {"precision": precision, "threads": served.threads, **timed(served.probabilities, texts)}
    if served is not fp32:
        speed["onnx_fp32"] = {"precision": "fp32", **timed(fp32.probabilities, texts)}
    if not speed["cpu"]["native_bf16"]:
        speed["vllm_stand_in"] = _torch_speed(model_dir, texts, max_length)
    return with_auto(speed)


def with_auto(speed: dict[str, Any]) -> dict[str, Any]:
    """`speed` with what `auto` makes of it on a host like the measuring one (for people)."""
    speed.pop("auto", None)
    choice = measured_choice(speed, native_bf16=speed["cpu"]["native_bf16"])
    if choice is not None:
        speed["auto"] = {"kind": choice.kind, "reason": choice.reason}
    return speed


def measure_vllm(model_dir: str | Path, texts: list[str]) -> dict[str, Any]:
    """vLLM's own rate on this host, offline, on the texts the export measured (tens of seconds:
    vLLM starts an engine), into the report's `speed.vllm`; returns the report."""
    from serving.offline import classify_texts, close_llm, open_llm

    out = Path(model_dir)
    report = read_onnx_report(out)
    if report is None or not report.get("speed"):
        raise ModelDirError(f"{out}: no ONNX speed measurement to add vLLM's to (export it first)")
    speed = report["speed"]
    texts = texts[: int(speed.get("texts") or SPEED_TEXTS)]
    max_length = int(report.get("max_length") or read_model_info(out).max_length)
    llm = open_llm(out, max_model_len=max_length + 8)
    try:
        dtype = str(llm.llm_engine.model_config.dtype).removeprefix("torch.")

        def run(batch: list[str]) -> Any:
            return classify_texts(llm, batch, max_length=max_length)

        speed["vllm"] = {"engine": "vllm", "dtype": dtype, **timed(run, texts, whole=True)}
    finally:
        close_llm(llm)
    speed["cpu"] = cpu_facts()
    report["speed"] = with_auto(speed)
    _write_report(out, report)
    return report


def _write_report(out: Path, report: dict[str, Any]) -> None:
    """`onnx.json`, readable by all like the model's other files (a router often runs as another
    user than the training did; the atomic write creates it private)."""
    path = out / ONNX_REPORT
    write_json_atomic(path, report)
    umask = os.umask(0)
    os.umask(umask)
    path.chmod(0o666 & ~umask)


def _torch_speed(model_dir: Path, texts: list[str], max_length: int) -> dict[str, Any]:
    import torch

    from training.modeling import load_classifier
    from training.predict import predict_proba

    model, tokenizer = load_classifier(model_dir)  # float32: what vLLM runs on this CPU

    def run(batch: list[str]) -> np.ndarray:
        return predict_proba(
            model, tokenizer, batch, max_length=max_length, batch_size=SPEED_BATCH, progress=False
        )

    return {
        "engine": "torch",
        "dtype": "float32",
        "threads": torch.get_num_threads(),
        **timed(run, texts),
    }


def _torch_probabilities(model_dir: Path, texts: list[str], max_length: int) -> np.ndarray:
    from training.modeling import load_classifier
    from training.predict import predict_proba

    model, tokenizer = load_classifier(model_dir)
    return predict_proba(model, tokenizer, texts, max_length=max_length, progress=False)
