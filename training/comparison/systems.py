"""Each system of the benchmark, evaluated on the same test queries into one `SystemResult`.

- the tuned model (an exported model dir) through vLLM offline classify (the serving path) or
  transformers: accuracy, throughput measured here, latency one query at a time;
- the classical baselines (`training.baselines.classical`);
- few-shot LLMs (`training.baselines.fewshot`).

Cost per 1M queries: the tuned model and the classical baselines from the throughput measured in
this run on this machine and an hourly hardware price (cost at full utilisation); the few-shot
models from the token usage of every answer and the API's token prices.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from tqdm.auto import tqdm

from serving.label_scoring import is_generative
from serving.llm.pricing import hourly_cost_per_million
from training.baselines.fewshot import FewShotResult
from training.data import DatasetError, IntentDataset
from training.metrics import compute_metrics

__all__ = [
    "Hardware",
    "SystemResult",
    "TunedOutputs",
    "classical_system",
    "describe_machine",
    "fewshot_system",
    "tuned_system",
]

Kind = Literal["tuned", "classical", "fewshot", "cascade"]
Engine = Literal["vllm", "transformers"]


@dataclass(frozen=True)
class Hardware:
    """The machine throughput was measured on, and the hourly price it is costed at."""

    measured_on: str  # e.g. "Intel Xeon ..., 2 cores, no GPU"
    price_per_hour: float
    priced_as: str  # e.g. "aws-m7i.large (2 vCPU, 8 GiB)" or "--hardware-price-per-hour"


@dataclass
class SystemResult:
    name: str
    kind: Kind
    metrics: dict[str, Any]
    latency_p50_s: float | None = None
    latency_p99_s: float | None = None
    throughput_qps: float | None = None
    cost_per_million: float | None = None
    training_seconds: float | None = None
    training_cost_usd: float | None = None
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        metrics = {k: v for k, v in self.metrics.items() if k != "confusion"}
        return {**{k: v for k, v in self.__dict__.items() if k != "metrics"}, "metrics": metrics}


@dataclass
class TunedOutputs:
    """Per-query outputs of the tuned model, what the cascade needs."""

    predictions: list[str]  # the label the served policy answers (oos threshold applied)
    confidence: np.ndarray  # top-1 probability


def describe_machine() -> str:
    """CPU model, core count and GPU, for 'measured on'."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = "no GPU"
    try:
        import torch

        if torch.cuda.is_available():
            gpu = f"GPU {torch.cuda.get_device_name()}"
    except ImportError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {gpu}"


def _percentiles(seconds: list[float]) -> tuple[float | None, float | None]:
    if not seconds:
        return None, None
    return float(np.percentile(seconds, 50)), float(np.percentile(seconds, 99))


def _exported_metrics(model_dir: Path) -> dict[str, Any]:
    """The model's `metrics.json` (what `switchboard train` measured at export), or {}."""
    try:
        metrics = json.loads((model_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return {}
    return metrics if isinstance(metrics, dict) else {}


def _oos_threshold(exported: dict[str, Any]) -> float | None:
    """The out-of-scope threshold shipped with the model, if any."""
    value = exported.get("oos_threshold")
    if isinstance(value, dict):
        value = value.get("threshold")
    return float(value) if isinstance(value, (int, float)) else None


def _training_facts(exported: dict[str, Any]) -> dict[str, Any]:
    """`training` (base model, method, train_seconds, device), or {}."""
    facts = exported.get("training", {})
    return facts if isinstance(facts, dict) else {}


def _exported_test_accuracy(exported: dict[str, Any], with_oos_threshold: bool, n: int) -> float | None:
    """Test accuracy at export (transformers, fp32) on the same `n` queries, or None."""
    test = exported.get("test")
    if not isinstance(test, dict) or test.get("n") != n:
        return None
    scored = test.get("with_oos_threshold") if with_oos_threshold else test
    value = scored.get("accuracy") if isinstance(scored, dict) else None
    return float(value) if isinstance(value, (int, float)) else None


def _tuned_name(model_dir: Path, facts: dict[str, Any]) -> str:
    base, method = facts.get("base_model"), facts.get("method")
    if not base or not method:
        return f"tuned: {model_dir.name}"
    objective = ", generate" if facts.get("objective") == "generate" else ""
    return f"tuned {str(base).rstrip('/').split('/')[-1]} ({method}{objective})"


def _run_vllm(
    model_dir: Path, texts: list[str], max_length: int, latency_samples: int, progress: bool
) -> tuple[np.ndarray, list[str], float, list[float], str]:
    from serving.offline import classify_texts, close_llm, labels_of, open_llm

    if is_generative(model_dir):
        return _run_vllm_generative(model_dir, texts, latency_samples, progress)
    llm = open_llm(model_dir, max_model_len=max_length + 8)
    try:
        labels = labels_of(llm)
        dtype = str(llm.llm_engine.model_config.dtype).removeprefix("torch.")
        classify_texts(llm, texts[:32], max_length=max_length)  # warm-up, not timed
        started = time.perf_counter()
        probs = classify_texts(llm, texts, max_length=max_length, progress=progress)
        batch_s = time.perf_counter() - started
        latencies = []
        for text in tqdm(texts[:latency_samples], desc="latency", disable=not progress, leave=False):
            started = time.perf_counter()
            classify_texts(llm, [text], max_length=max_length)
            latencies.append(time.perf_counter() - started)
    finally:
        close_llm(llm)
    return probs, labels, batch_s, latencies, f"vLLM offline classify ({dtype})"


def _run_vllm_generative(
    model_dir: Path, texts: list[str], latency_samples: int, progress: bool
) -> tuple[np.ndarray, list[str], float, list[float], str]:
    """`objective: generate`: label probabilities from vLLM logprobs (`serving.generative`)."""
    from serving.generative import open_generative_llm, score_texts
    from serving.offline import close_llm, labels_of

    llm = open_generative_llm(model_dir)
    try:
        labels = labels_of(llm)
        dtype = str(llm.llm_engine.model_config.dtype).removeprefix("torch.")
        score_texts(llm, model_dir, texts[:32])  # warm-up (and the instruction's prefix cache)
        started = time.perf_counter()
        probs = score_texts(llm, model_dir, texts, progress=progress)
        batch_s = time.perf_counter() - started
        latencies = []
        for text in tqdm(texts[:latency_samples], desc="latency", disable=not progress, leave=False):
            started = time.perf_counter()
            score_texts(llm, model_dir, [text])
            latencies.append(time.perf_counter() - started)
    finally:
        close_llm(llm)
    return probs, labels, batch_s, latencies, f"vLLM label scoring, generated labels ({dtype})"


def _run_transformers(
    model_dir: Path, texts: list[str], max_length: int, latency_samples: int, progress: bool
) -> tuple[np.ndarray, list[str], float, list[float], str]:
    from training.modeling import load_classifier, model_labels
    from training.predict import predict_proba

    if is_generative(model_dir):
        from training.generative_scoring import generative_probabilities

        started = time.perf_counter()
        labels, probs = generative_probabilities(model_dir, texts, progress=progress)
        batch_s = time.perf_counter() - started
        latencies = [batch_s / max(1, len(texts))]  # one query at a time is what it does anyway
        return probs, labels, batch_s, latencies, "transformers label scoring (fp32, one query at a time)"
    model, tokenizer = load_classifier(model_dir)
    labels = model_labels(model)
    predict_proba(model, tokenizer, texts[:32], max_length=max_length, progress=False)  # warm-up
    started = time.perf_counter()
    probs = predict_proba(model, tokenizer, texts, max_length=max_length, progress=progress)
    batch_s = time.perf_counter() - started
    latencies = []
    for text in tqdm(texts[:latency_samples], desc="latency", disable=not progress, leave=False):
        started = time.perf_counter()
        predict_proba(model, tokenizer, [text], max_length=max_length, progress=False)
        latencies.append(time.perf_counter() - started)
    return probs, labels, batch_s, latencies, "transformers (fp32, batch 64)"


def tuned_system(
    model_dir: Path,
    data: IntentDataset,
    hardware: Hardware,
    *,
    engine: Engine = "vllm",
    max_length: int = 128,
    latency_samples: int = 200,
    progress: bool = True,
) -> tuple[SystemResult, TunedOutputs]:
    """Evaluate an exported model on `data.test`, measuring its throughput on this machine."""
    assert data.test is not None
    texts, gold = data.test.texts, data.test.labels
    run = _run_vllm if engine == "vllm" else _run_transformers
    probs, labels, batch_s, latencies, how = run(model_dir, texts, max_length, latency_samples, progress)

    # 1. Score with the model's own label order; the served policy's oos threshold when it has one.
    index = {label: i for i, label in enumerate(labels)}
    unknown = sorted({g for g in gold if g not in index})
    if unknown:
        raise DatasetError(f"{len(unknown)} test label(s) unknown to the model: {', '.join(unknown[:5])}")
    y = [index[g] for g in gold]
    pred = probs.argmax(axis=1)
    exported_metrics = _exported_metrics(model_dir)
    threshold = _oos_threshold(exported_metrics) if "oos" in index else None
    if threshold is not None:
        pred = np.where(probs.max(axis=1) < threshold, index["oos"], pred)
        metrics = compute_metrics(y, probs, labels, y_pred=pred)
    else:
        metrics = compute_metrics(y, probs, labels)

    # 2. Speed and cost on this machine.
    qps = len(texts) / batch_s
    p50, p99 = _percentiles(latencies)
    facts = _training_facts(exported_metrics)
    train_s = facts.get("train_seconds")
    train_s = float(train_s) if isinstance(train_s, (int, float)) else None
    notes = [f"{how}; throughput over the whole test split, latency one query at a time"]
    if train_s is not None:
        notes.append(
            f"trained in {train_s / 60:.1f} min on {facts.get('device', '?')} "
            f"({facts.get('torch_threads', '?')} threads), costed at the same hourly price"
        )
    if threshold is not None:
        notes.append(f"out-of-scope below top-1 probability {threshold:g} (the model's own threshold)")
    exported = _exported_test_accuracy(exported_metrics, threshold is not None, len(texts))
    if engine == "vllm" and exported is not None:
        notes.append(f"the same weights in transformers fp32 at export (metrics.json): {100 * exported:.2f}%")
    result = SystemResult(
        name=_tuned_name(model_dir, facts),
        kind="tuned",
        metrics=metrics,
        latency_p50_s=p50,
        latency_p99_s=p99,
        throughput_qps=qps,
        cost_per_million=hourly_cost_per_million(qps, hardware.price_per_hour),
        training_seconds=train_s,
        training_cost_usd=None if train_s is None else train_s / 3600 * hardware.price_per_hour,
        notes=notes,
        details={"model_dir": str(model_dir), "engine": engine, "latency_samples": len(latencies)},
    )
    outputs = TunedOutputs([labels[i] for i in pred], probs.max(axis=1))
    return result, outputs


def classical_system(
    kind: str, data: IntentDataset, hardware: Hardware, *, progress: bool, latency_samples: int = 200
) -> SystemResult:
    """A classical baseline; throughput is its batched predict (features included) on the test
    split, latency one query at a time."""
    from training.baselines.classical import run_baseline

    base = run_baseline(kind, data, progress=progress, latency_samples=latency_samples)  # type: ignore[arg-type]
    assert data.test is not None
    qps = len(data.test) / base.predict_seconds if base.predict_seconds > 0 else None
    p50, p99 = _percentiles(base.latencies)
    return SystemResult(
        name=base.name,
        kind="classical",
        metrics=base.metrics,
        latency_p50_s=p50,
        latency_p99_s=p99,
        throughput_qps=qps,
        cost_per_million=None if qps is None else hourly_cost_per_million(qps, hardware.price_per_hour),
        training_seconds=base.fit_seconds,
        training_cost_usd=base.fit_seconds / 3600 * hardware.price_per_hour,
        notes=["throughput: batched predict incl. feature extraction; latency one query at a time"],
    )


def fewshot_system(result: FewShotResult) -> SystemResult:
    notes = [
        f"{result.requests} requests sent, {result.cache_hits} answers from the cache, "
        f"{result.invalid} invalid; latency from {result.latency_source} calls",
    ]
    if result.cost_usd is None:
        notes.append(f"no price for {result.model!r} in the price table: cost not computed")
    return SystemResult(
        name=result.name,
        kind="fewshot",
        metrics=result.metrics,
        latency_p50_s=result.latency_p50_s,
        latency_p99_s=result.latency_p99_s,
        throughput_qps=result.throughput_qps,
        cost_per_million=result.cost_per_million,
        training_seconds=0.0,
        training_cost_usd=0.0,
        notes=notes,
        details=result.summary(),
    )
