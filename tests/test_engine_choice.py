"""The rules around the ONNX export, on stored reports and made-up probabilities (no model):
int8 is served only where it keeps the quality, the checks' texts are bounded, and `--engine
auto` picks the engine the documented rule (serving.engine_choice) names."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from serving.engine_choice import choose_engine
from serving.model_dir import ModelDirError
from serving.onnx_model import ONNX_FILE, ONNX_INT8_FILE, ONNX_REPORT
from training.onnx_checks import MAX_CHECK_TEXTS, check_texts, fp32_check, int8_check


def _probs(top: list[int], classes: int = 3) -> np.ndarray:
    out = np.full((len(top), classes), 0.1, dtype=np.float32)
    out[np.arange(len(top)), top] = 0.8
    return out


def _int8(n: int, disagree: int, n_val: int, lost: int) -> dict[str, Any]:
    """`n` check texts (the first `n_val` validation, all labelled 0, fp32 right on each);
    int8 disagrees on `disagree` texts, `lost` of them validation texts."""
    fp32 = [0] * n
    int8 = list(fp32)
    for i in range(lost):
        int8[i] = 1
    for i in range(disagree - lost):
        int8[n_val + i] = 2
    return int8_check(_probs(fp32), _probs(int8), np.zeros(n_val, dtype=np.int64))


def test_int8_is_served_only_where_it_keeps_the_quality() -> None:
    ok = _int8(2000, disagree=15, n_val=600, lost=2)  # 99.25% agreement, 2 of 600 lost (2 allowed)
    assert ok["passed"] and ok["agreement"] == 0.9925
    assert ok["validation"]["drop_texts"] == 2 and ok["validation"]["allowed_drop_texts"] == 2

    low = _int8(2000, disagree=22, n_val=600, lost=0)  # 98.9%
    assert not low["passed"] and "agrees with fp32 on 98.90% of 2000 texts, under 99%" in low["reason"]

    lossy = _int8(2000, disagree=3, n_val=600, lost=3)  # agrees, but 3 of 600 lost (2 allowed)
    assert not lossy["passed"] and "3 of 600 validation texts fewer right" in lossy["reason"]

    small = _int8(1000, disagree=1, n_val=77, lost=1)  # 77 validation texts: no loss allowed
    assert not small["passed"] and small["validation"]["allowed_drop_texts"] == 0

    better = int8_check(_probs([1, 0, 0]), _probs([0, 0, 0]), np.zeros(3, dtype=np.int64))
    assert better["validation"]["drop_texts"] == -1  # int8 right where fp32 was wrong: no loss
    assert not better["passed"]  # ... but 67% agreement


def test_fp32_must_agree_with_torch() -> None:
    torch_probs = _probs([0] * 1000)
    assert fp32_check(torch_probs, torch_probs + 1e-7)["passed"]
    off = _probs([1] * 6 + [0] * 994)
    verdict = fp32_check(torch_probs, off)
    assert not verdict["passed"] and verdict["disagreements"] == 6 and verdict["agreement"] == 0.994


def test_the_check_texts_are_validation_first_and_bounded() -> None:
    labels = ["a", "b"]
    val_texts = [f"v{i}" for i in range(5000)]
    val_labels = ["a" if i % 2 else "b" for i in range(5000)]
    val_labels[7] = "retired"  # a label the model does not have: not a validation text here
    chosen = check_texts(labels, val_texts, val_labels, [f"t{i}" for i in range(50_000)])
    assert chosen.validation == 1000 and len(chosen.texts) == MAX_CHECK_TEXTS
    assert 7 not in chosen.validation_index
    assert all(t.startswith("v") for t in chosen.texts[:1000]) and chosen.texts[1000].startswith("t")
    assert chosen.validation_labels.tolist() == [labels.index(val_labels[i]) for i in chosen.validation_index]
    small = check_texts(labels, val_texts[:77], val_labels[:77], [f"t{i}" for i in range(240)])
    assert small.validation == 76 and len(small.texts) == 76 + 240  # all of them: no sampling


# -- --engine auto ------------------------------------------------------------------------------


def _model(tmp_path: Path, report: dict[str, Any] | None, *, name: str = "m") -> Path:
    path = tmp_path / name
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"id2label": {"0": "a", "1": "b"}}))
    if report is not None:
        (path / ONNX_REPORT).write_text(json.dumps(report))
        (path / str(report.get("file") or ONNX_FILE)).write_bytes(b"onnx")
    return path


def _report(onnx_qps: float, other: dict[str, Any] | None, *, bf16: bool = False) -> dict[str, Any]:
    speed: dict[str, Any] = {
        "cpu": {"model": "test", "native_bf16": bf16, "cpus": 2},
        "onnx": {"precision": "int8", "qps": onnx_qps},
    }
    if other is not None:
        speed[other.pop("key")] = other
    return {"passed": True, "file": ONNX_INT8_FILE, "precision": "int8", "reason": "ok", "speed": speed}


def _stand_in(qps: float, dtype: str = "float32") -> dict[str, Any]:
    return {"key": "vllm_stand_in", "engine": "torch", "dtype": dtype, "qps": qps}


def _vllm(qps: float, dtype: str = "bfloat16") -> dict[str, Any]:
    return {"key": "vllm", "engine": "vllm", "dtype": dtype, "qps": qps}


CPU = {"gpu": False, "vllm": True}


def test_auto_on_a_cpu_takes_the_faster_engine_at_export(tmp_path: Path) -> None:
    faster = choose_engine(_model(tmp_path, _report(620, _stand_in(327)), name="a"), native_bf16=False, **CPU)
    assert faster.kind == "onnx" and "620 queries/s" in faster.reason and "327/s" in faster.reason
    slower = choose_engine(_model(tmp_path, _report(300, _stand_in(327)), name="b"), native_bf16=False, **CPU)
    assert slower.kind == "local"
    # a bf16 host: vLLM's own measurement decides; PyTorch bf16 stands in for nothing
    bf16_vllm = _model(tmp_path, _report(400, _vllm(800), bf16=True), name="c")
    assert choose_engine(bf16_vllm, native_bf16=True, **CPU).kind == "local"
    bf16_onnx = _model(tmp_path, _report(900, _vllm(800), bf16=True), name="d")
    assert choose_engine(bf16_onnx, native_bf16=True, **CPU).kind == "onnx"
    bf16_torch = _model(tmp_path, _report(900, _stand_in(200, "bfloat16"), bf16=True), name="e")
    default = choose_engine(bf16_torch, native_bf16=True, **CPU)
    assert default.kind == "local" and "default on a CPU with bf16" in default.reason


def test_auto_uses_the_default_without_a_measurement_for_this_cpu(tmp_path: Path) -> None:
    measured_elsewhere = _model(tmp_path, _report(300, _stand_in(327), bf16=False))
    on_bf16 = choose_engine(measured_elsewhere, native_bf16=True, **CPU)
    assert on_bf16.kind == "local" and "no speed measurement on a CPU like this one" in on_bf16.reason
    unmeasured = {**_report(300, None), "speed": None}
    assert choose_engine(_model(tmp_path, unmeasured, name="u"), native_bf16=False, **CPU).kind == "onnx"


def test_auto_keeps_vllm_where_onnx_cannot_serve(tmp_path: Path) -> None:
    report = _report(9000, _stand_in(1))
    assert choose_engine(_model(tmp_path, report, name="gpu"), gpu=True, vllm=True).kind == "local"
    none = _model(tmp_path, None, name="none")
    choice = choose_engine(none, native_bf16=False, **CPU)
    assert choice.kind == "local" and "no ONNX export" in choice.reason
    failed = _model(tmp_path, {**report, "passed": False, "reason": "fp32 disagrees"}, name="failed")
    assert choose_engine(failed, native_bf16=False, **CPU).kind == "local"
    generative = _model(tmp_path, report, name="gen")
    (generative / "generative.json").write_text("{}")
    assert (
        choose_engine(generative, native_bf16=False, **CPU).reason
        == "the generative objective is served by vLLM"
    )
    # no vLLM in this install: ONNX Runtime, whatever was measured; an error when there is none
    slow = _model(tmp_path, _report(1, _stand_in(900)), name="slow")
    assert choose_engine(slow, gpu=True, vllm=False).kind == "onnx"
    with pytest.raises(ModelDirError, match=r"vLLM is not installed and .* has no ONNX export"):
        choose_engine(none, gpu=False, vllm=False)
