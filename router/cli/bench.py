"""`switchboard baseline fewshot|classical` and `switchboard bench`: what the tuned model must beat.

Heavy libraries (sklearn, torch, openai, vLLM) load inside the commands.
"""

from __future__ import annotations

import json
import os
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer

from router.cli._common import (
    ProgressOpt,
    RequiredDatasetOpt,
    console,
    fail,
    print_metrics,
    quiet_libraries,
    require_dir,
    user_errors,
)

if TYPE_CHECKING:
    from serving.llm.client import FewShotConfig

baseline_app = typer.Typer(
    help="Baselines the tuned model must beat: few-shot LLMs, TF-IDF / embeddings + logistic regression.",
    no_args_is_help=True,
)


class Selection(StrEnum):
    per_class = "per-class"
    nearest = "nearest"


class Structured(StrEnum):
    auto = "auto"
    on = "on"
    off = "off"


class Classical(StrEnum):
    tfidf = "tfidf"
    embeddings = "embeddings"


class BenchEngine(StrEnum):
    vllm = "vllm"
    transformers = "transformers"


ALL_CLASSICAL = [Classical.tfidf, Classical.embeddings]

BaseUrlOpt = Annotated[
    str | None,
    typer.Option(help="OpenAI-compatible server, e.g. http://localhost:8000/v1 (default: OpenAI)."),
]
ApiKeyOpt = Annotated[
    str | None, typer.Option(help="API key (default: $OPENAI_API_KEY).", show_default=False)
]
ShotsOpt = Annotated[
    int | None, typer.Option(help="Examples: per intent (per-class, default 3) or in total (nearest, 20).")
]
SelectionOpt = Annotated[
    Selection,
    typer.Option(case_sensitive=False, help="per-class: a fixed seeded sample; nearest: MiniLM neighbours."),
]
StructuredOpt = Annotated[
    Structured,
    typer.Option(
        case_sensitive=False, help="JSON-schema enum of the labels (auto: if the server supports it)."
    ),
]
ConcurrencyOpt = Annotated[int, typer.Option(min=1, help="Requests in flight at once.")]
CacheDirOpt = Annotated[
    Path | None, typer.Option(help="Response cache directory (default ~/.cache/switchboard/fewshot).")
]
NoCacheOpt = Annotated[bool, typer.Option("--no-cache", help="Neither read nor write the cache.")]
PricesOpt = Annotated[Path | None, typer.Option(help="Price table YAML (default data/prices.yaml).")]
LimitOpt = Annotated[int | None, typer.Option(min=1, help="Only the first N test queries.")]


def _fewshot_config(
    model: str,
    *,
    base_url: str | None,
    api_key: str | None,
    shots: int | None,
    selection: Selection,
    structured: Structured,
    concurrency: int,
    cache_dir: Path | None,
    no_cache: bool,
) -> FewShotConfig:
    from serving.llm.cache import default_cache_dir
    from serving.llm.client import FewShotConfig

    return FewShotConfig(
        model=model,
        base_url=base_url,
        api_key=api_key,
        shots=shots,
        selection=cast(Any, selection.value),  # the enum's values are the config's literals
        structured=cast(Any, structured.value),
        concurrency=concurrency,
        cache_dir=None if no_cache else (cache_dir or default_cache_dir()),
    )


@baseline_app.command("fewshot")
def fewshot(
    dataset: RequiredDatasetOpt,
    model: Annotated[str, typer.Option(help="Chat model, e.g. gpt-4o-mini, or the name a server serves.")],
    base_url: BaseUrlOpt = None,
    api_key: ApiKeyOpt = None,
    shots: ShotsOpt = None,
    selection: SelectionOpt = Selection.per_class,
    structured: StructuredOpt = Structured.auto,
    concurrency: ConcurrencyOpt = 8,
    limit: LimitOpt = None,
    cache_dir: CacheDirOpt = None,
    no_cache: NoCacheOpt = False,
    prices: PricesOpt = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write fewshot.json (summary + answers) here.")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON only.")] = False,
    progress: ProgressOpt = True,
) -> None:
    """Classify the test split with a few-shot prompted chat model (OpenAI or any compatible server)."""
    quiet_libraries()
    with user_errors():
        config = _fewshot_config(
            model, base_url=base_url, api_key=api_key, shots=shots, selection=selection,
            structured=structured, concurrency=concurrency, cache_dir=cache_dir, no_cache=no_cache,
        )  # fmt: skip
        from serving.llm.pricing import load_prices
        from training.baselines.fewshot import run_fewshot
        from training.data import load_dataset

        table = load_prices(prices)
        result = run_fewshot(load_dataset(dataset), config, prices=table, limit=limit, progress=progress)
    summary = result.summary()
    summary["metrics"] = {k: v for k, v in result.metrics.items() if k not in ("confusion", "per_intent")}
    if output is not None:
        output.mkdir(parents=True, exist_ok=True)
        full = {**result.summary(), "predictions": result.predictions, "query_costs": result.query_costs}
        (output / "fewshot.json").write_text(json.dumps(full, indent=2) + "\n")
    if json_out:
        print(json.dumps(summary, indent=2))
        return
    print_metrics(result.metrics, result.name)
    console.print(_usage_line(result))


def _usage_line(result: Any) -> str:
    from training.comparison.report import fmt_cost

    p50 = "n/a" if result.latency_p50_s is None else f"{1000 * result.latency_p50_s:.0f} ms"
    p99 = "n/a" if result.latency_p99_s is None else f"{1000 * result.latency_p99_s:.0f} ms"
    return (
        f"{result.metrics['n']} queries: {result.invalid} invalid answers; {result.requests} requests sent, "
        f"{result.cache_hits} from cache; tokens {result.prompt_tokens} in "
        f"({result.cached_prompt_tokens} prompt-cached) / {result.completion_tokens} out; "
        f"cost {fmt_cost(result.cost_usd)} ({fmt_cost(result.cost_per_million)} per 1M queries), "
        f"spent this run {fmt_cost(result.spent_usd)}; "
        f"latency p50 {p50}, p99 {p99} ({result.latency_source}); "
        f"structured output {'on' if result.structured else 'off'}"
    )


@baseline_app.command("classical")
def classical(
    dataset: RequiredDatasetOpt,
    kind: Annotated[
        list[Classical] | None,
        typer.Option(case_sensitive=False, help="Which baseline (repeat; default both)."),
    ] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write classical.json here.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the results as JSON only.")] = False,
    progress: ProgressOpt = True,
) -> None:
    """TF-IDF and MiniLM-embedding logistic regressions: seconds to train, the floor to clear."""
    quiet_libraries()
    kinds = [k.value for k in (kind or ALL_CLASSICAL)]
    with user_errors():
        from training.baselines.classical import run_baseline
        from training.data import load_dataset

        data = load_dataset(dataset)
        results = [run_baseline(cast(Any, k), data, progress=progress) for k in kinds]
    rows: list[dict[str, Any]] = [
        {
            "name": r.name,
            "fit_seconds": r.fit_seconds,
            "predict_seconds": r.predict_seconds,
            "metrics": {k: v for k, v in r.metrics.items() if k != "confusion"},
        }
        for r in results
    ]
    if output is not None:
        output.mkdir(parents=True, exist_ok=True)
        (output / "classical.json").write_text(json.dumps(rows, indent=2) + "\n")
    if json_out:
        print(json.dumps([{**r, "metrics": _headline(r["metrics"])} for r in rows], indent=2))
        return
    for r in results:
        print_metrics(r.metrics, f"{r.name} on {data.name}")
        console.print(f"fit {r.fit_seconds:.1f} s, predict {r.predict_seconds:.1f} s")


def _headline(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if k != "per_intent"}


def bench(
    dataset: RequiredDatasetOpt,
    output: Annotated[Path, typer.Option("--output", "-o", help="Report directory.")],
    model: Annotated[
        list[Path] | None,
        typer.Option(
            "--model",
            "-m",
            help="Exported tuned model directory, either objective (repeat: one row each, e.g. "
            "the classification head beside the generative model).",
        ),
    ] = None,
    fewshot_model: Annotated[
        list[str] | None, typer.Option(help="Few-shot chat model (repeat for several).")
    ] = None,
    classical: Annotated[
        list[Classical] | None,
        typer.Option(case_sensitive=False, help="Classical baseline (repeat; default both)."),
    ] = None,
    no_classical: Annotated[
        bool, typer.Option("--no-classical", help="Skip the classical baselines.")
    ] = False,
    engine: Annotated[
        BenchEngine,
        typer.Option(
            case_sensitive=False, help="Run the tuned model on vllm (the serving path) or transformers."
        ),
    ] = BenchEngine.vllm,
    base_url: BaseUrlOpt = None,
    api_key: ApiKeyOpt = None,
    shots: ShotsOpt = None,
    selection: SelectionOpt = Selection.per_class,
    structured: StructuredOpt = Structured.auto,
    concurrency: ConcurrencyOpt = 8,
    cache_dir: CacheDirOpt = None,
    no_cache: NoCacheOpt = False,
    limit: LimitOpt = None,
    prices: PricesOpt = None,
    hardware_price_per_hour: Annotated[
        float | None,
        typer.Option(min=0, help="USD/hour of the machine the tuned model runs on (default: prices file)."),
    ] = None,
    latency_samples: Annotated[int, typer.Option(min=1, help="Queries timed one at a time.")] = 200,
    progress: ProgressOpt = True,
) -> None:
    """Every system on the same test split: accuracy, latency, cost; cascade sweep; report + pictures."""
    quiet_libraries()
    for model_dir in model or ():
        require_dir(model_dir)
    kinds = [] if no_classical else [k.value for k in (classical or ALL_CLASSICAL)]
    if fewshot_model and not (api_key or os.environ.get("OPENAI_API_KEY")):
        fail("no API key for --fewshot-model: pass --api-key or set OPENAI_API_KEY")  # before a long run
    with user_errors():
        fewshot_config = _fewshot_config(
            "", base_url=base_url, api_key=api_key, shots=shots, selection=selection,
            structured=structured, concurrency=concurrency, cache_dir=cache_dir, no_cache=no_cache,
        )  # fmt: skip
        from training.comparison import BenchConfig, run_bench
        from training.comparison.report import systems_table

        report = run_bench(
            BenchConfig(
                dataset=dataset, output=output, model_dirs=tuple(model or ()), engine=cast(Any, engine.value),
                classical=tuple(kinds), fewshot_models=tuple(fewshot_model or ()), fewshot=fewshot_config,
                limit=limit, prices_file=prices, hardware_price_per_hour=hardware_price_per_hour,
                latency_samples=latency_samples, progress=progress,
            )
        )  # fmt: skip
    console.print(systems_table(report.systems, has_oos=report.has_oos), markup=False, highlight=False)
    for sweep in report.sweeps:
        best = sweep.best
        console.print(
            f"cascade -> {sweep.fallback}: best threshold {best['threshold']:g}, "
            f"accuracy {100 * best['accuracy']:.2f}%, {100 * best['escalated']:.1f}% escalated"
        )
    console.print(f"report written to [bold]{output / 'report.md'}[/]")
