"""`switchboard bench`: every system on the same test queries, one report.

Steps: 1. data (the test split, optionally its first N queries) and prices; 2. the tuned model;
3. the classical baselines; 4. the few-shot models; 5. a cascade per few-shot model; 6. the
report (markdown, JSON, two pictures).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serving.llm.pricing import PriceTable, load_prices
from training.baselines.fewshot import FewShotConfig, run_fewshot
from training.comparison.cascade import CascadeSweep, sweep
from training.comparison.plots import plot_accuracy_vs_cost, plot_per_intent_f1
from training.comparison.report import BenchReport, write_report
from training.comparison.systems import (
    Engine,
    Hardware,
    SystemResult,
    TunedOutputs,
    classical_system,
    describe_machine,
    fewshot_system,
    tuned_system,
)
from training.data import DatasetError, IntentDataset, Split, load_dataset

__all__ = ["BenchConfig", "limit_test", "resolve_hardware", "run_bench"]


@dataclass
class BenchConfig:
    dataset: str | IntentDataset
    output: Path
    model_dirs: tuple[Path, ...] = ()  # exported tuned models: one row each (either objective)
    engine: Engine = "vllm"
    classical: tuple[str, ...] = ("tfidf", "embeddings")
    fewshot_models: tuple[str, ...] = ()
    fewshot: FewShotConfig = field(default_factory=lambda: FewShotConfig(model=""))  # model set per run
    limit: int | None = None  # the first N test queries (stratified order is the dataset's own)
    prices_file: Path | None = None
    hardware_price_per_hour: float | None = None  # None: the price file's default instance
    latency_samples: int = 200
    max_length: int = 128
    progress: bool = True


def limit_test(data: IntentDataset, limit: int | None) -> IntentDataset:
    """`data` with only the first `limit` test queries (all when None)."""
    if data.test is None:
        raise DatasetError(f"dataset {data.name!r} has no test split")
    if not limit or limit >= len(data.test):
        return data
    test = Split(data.test.texts[:limit], data.test.labels[:limit])
    return dataclasses.replace(data, test=test)


def resolve_hardware(prices: PriceTable, price_per_hour: float | None) -> Hardware:
    measured_on = describe_machine()
    if price_per_hour is not None:
        return Hardware(measured_on, price_per_hour, "--hardware-price-per-hour")
    default = prices.default_hardware()
    if default is None:
        raise DatasetError(
            f"no hardware price: pass --hardware-price-per-hour or set hardware.default in {prices.path}"
        )
    return Hardware(measured_on, default.per_hour, f"{default.name}, {default.what}".rstrip(", "))


def _cascades(
    data: IntentDataset,
    tuned: SystemResult,
    outputs: TunedOutputs,
    fewshots: list[tuple[SystemResult, Any]],
    *,
    name: str,
) -> list[CascadeSweep]:
    assert data.test is not None
    labels = list(dict.fromkeys([*data.label_map.labels, *outputs.predictions]))
    return [
        sweep(
            data.test.labels,
            outputs.predictions,
            outputs.confidence,
            result.predictions,
            labels,
            fallback=system.name,
            tuned_cost_per_million=tuned.cost_per_million,
            fallback_query_costs=result.query_costs,
            fallback_model=result.model,
            tuned_name=name,
        )
        for system, result in fewshots
    ]


def run_bench(config: BenchConfig) -> BenchReport:
    """Evaluate every configured system and write the report to `config.output`."""
    # 1. Data and prices.
    data = load_dataset(config.dataset) if isinstance(config.dataset, str) else config.dataset
    data = limit_test(data, config.limit)
    assert data.test is not None
    prices = load_prices(config.prices_file)
    hardware = resolve_hardware(prices, config.hardware_price_per_hour)
    systems: list[SystemResult] = []

    # 2. The tuned models (a classification head and a generative model side by side, say).
    tuned: list[tuple[SystemResult, TunedOutputs]] = []
    for model_dir in config.model_dirs:
        system, outputs = tuned_system(
            model_dir, data, hardware, engine=config.engine, max_length=config.max_length,
            latency_samples=config.latency_samples, progress=config.progress,
        )  # fmt: skip
        if any(system.name == other.name for other, _ in tuned):  # two of one base and objective
            system.name = f"{system.name} [{model_dir.name}]"
        tuned.append((system, outputs))
        systems.append(system)

    # 3. Classical baselines.
    for kind in config.classical:
        systems.append(
            classical_system(
                kind, data, hardware, progress=config.progress, latency_samples=config.latency_samples
            )
        )

    # 4. Few-shot models (cached answers cost nothing on a rerun).
    fewshots = []
    for model in config.fewshot_models:
        result = run_fewshot(
            data, dataclasses.replace(config.fewshot, model=model), prices=prices, progress=config.progress
        )
        fewshots.append((fewshot_system(result), result))
        systems.append(fewshots[-1][0])

    # 5. Cascades: each tuned model first, few-shot for the unsure rest.
    sweeps = [
        one
        for system, outputs in tuned
        for one in _cascades(
            data, system, outputs, fewshots, name="tuned model" if len(tuned) == 1 else system.name
        )
    ]
    if not systems:
        raise DatasetError("nothing to benchmark: give --model, a classical baseline or --fewshot-model")

    # 6. Report and pictures.
    report = BenchReport(
        dataset=data.name,
        n=len(data.test),
        has_oos=data.has_oos,
        systems=systems,
        sweeps=sweeps,
        hardware=hardware,
        prices={"file": prices.path, "source": prices.llm_source, "read_on": prices.llm_read_on},
        settings={
            "model_dirs": [str(d) for d in config.model_dirs],
            "engine": config.engine,
            "limit": config.limit,
            "fewshot_models": list(config.fewshot_models),
            "latency_samples": config.latency_samples,
        },
        created=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    )
    out = config.output
    plot_accuracy_vs_cost(
        systems, sweeps, out / "accuracy_vs_cost.png", title=f"{data.name}: accuracy vs. cost"
    )
    columns = [(s.name, s.metrics["per_intent"]) for s in systems]
    columns += [
        (f"cascade -> {sw.fallback} @ {sw.best['threshold']:g}", sw.best_metrics["per_intent"])
        for sw in sweeps
    ]
    plot_per_intent_f1(columns, out / "per_intent_f1.png", title=f"{data.name}: per-intent F1")
    report.pictures = {"accuracy vs. cost": "accuracy_vs_cost.png", "per-intent F1": "per_intent_f1.png"}
    write_report(report, out)
    return report
