"""`switchboard baseline fewshot|classical` and `switchboard bench`.

Kept apart from `router/cli.py` so the serving CLI stays small; registered there with
`app.add_typer(baseline_app)` and `app.command("bench")(bench)`. Nothing here imports `router.cli`
at module level (it imports this module), and heavy libraries load inside the commands.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

baseline_app = typer.Typer(
    name="baseline",
    help="Baselines the tuned model must beat: few-shot LLMs, TF-IDF / embeddings + logistic regression.",
    no_args_is_help=True,
)

DatasetArg = Annotated[
    str, typer.Option("--dataset", "-d", help="Dataset dir/file, `banking77`, `clinc150` or a hub id.")
]
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
SelectionOpt = Annotated[str, typer.Option(help="per-class (a fixed seeded sample) | nearest (MiniLM).")]
StructuredOpt = Annotated[
    str, typer.Option(help="auto | on | off: JSON-schema enum of the labels (auto: if the server has it).")
]
ConcurrencyOpt = Annotated[int, typer.Option(min=1, help="Requests in flight at once.")]
CacheDirOpt = Annotated[
    Path | None, typer.Option(help="Response cache directory (default ~/.cache/switchboard/fewshot).")
]
NoCacheOpt = Annotated[bool, typer.Option("--no-cache", help="Neither read nor write the cache.")]
PricesOpt = Annotated[Path | None, typer.Option(help="Price table YAML (default data/prices.yaml).")]
LimitOpt = Annotated[int | None, typer.Option(min=1, help="Only the first N test queries.")]
ProgressOpt = Annotated[bool, typer.Option(help="Show progress bars.")]


@contextmanager
def _errors() -> Iterator[None]:
    """The CLI's user errors plus the few-shot and price ones -> one line, exit 2."""
    from router.cli import fail, user_errors
    from serving.llm.pricing import PriceError
    from training.baselines.fewshot import FewShotError

    with user_errors():
        try:
            yield
        except (FewShotError, PriceError) as err:
            fail(str(err))


def _fewshot_config(
    model: str,
    *,
    base_url: str | None,
    api_key: str | None,
    shots: int | None,
    selection: str,
    structured: str,
    concurrency: int,
    cache_dir: Path | None,
    no_cache: bool,
) -> Any:
    from router.cli import fail
    from serving.llm.cache import default_cache_dir
    from training.baselines.fewshot import FewShotConfig

    if selection not in ("per-class", "nearest"):
        fail(f"--selection must be per-class or nearest, not {selection!r}")
    if structured not in ("auto", "on", "off"):
        fail(f"--structured must be auto, on or off, not {structured!r}")
    return FewShotConfig(
        model=model,
        base_url=base_url,
        api_key=api_key,
        shots=shots,
        selection=selection,  # type: ignore[arg-type]
        structured=structured,  # type: ignore[arg-type]
        concurrency=concurrency,
        cache_dir=None if no_cache else (cache_dir or default_cache_dir()),
    )


@baseline_app.command("fewshot")
def fewshot(
    dataset: DatasetArg,
    model: Annotated[str, typer.Option(help="Chat model, e.g. gpt-4o-mini, or the name a server serves.")],
    base_url: BaseUrlOpt = None,
    api_key: ApiKeyOpt = None,
    shots: ShotsOpt = None,
    selection: SelectionOpt = "per-class",
    structured: StructuredOpt = "auto",
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
    from router.cli import _print_metrics, _quiet_libraries, console

    _quiet_libraries()
    config = _fewshot_config(
        model, base_url=base_url, api_key=api_key, shots=shots, selection=selection,
        structured=structured, concurrency=concurrency, cache_dir=cache_dir, no_cache=no_cache,
    )  # fmt: skip
    with _errors():
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
    _print_metrics(result.metrics, result.name)
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
    dataset: DatasetArg,
    kind: Annotated[list[str] | None, typer.Option(help="tfidf | embeddings (repeat; default both).")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write classical.json here.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the results as JSON only.")] = False,
    progress: ProgressOpt = True,
) -> None:
    """TF-IDF and MiniLM-embedding logistic regressions: seconds to train, the floor to clear."""
    from router.cli import _print_metrics, _quiet_libraries, console, fail

    _quiet_libraries()
    kinds = kind or ["tfidf", "embeddings"]
    for k in kinds:
        if k not in ("tfidf", "embeddings"):
            fail(f"--kind must be tfidf or embeddings, not {k!r}")
    with _errors():
        from training.baselines.classical import run_baseline
        from training.data import load_dataset

        data = load_dataset(dataset)
        results = [run_baseline(k, data, progress=progress) for k in kinds]  # type: ignore[arg-type]
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
        _print_metrics(r.metrics, f"{r.name} on {data.name}")
        console.print(f"fit {r.fit_seconds:.1f} s, predict {r.predict_seconds:.1f} s")


def _headline(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if k != "per_intent"}


def bench(
    dataset: DatasetArg,
    output: Annotated[Path, typer.Option("--output", "-o", help="Report directory.")],
    model: Annotated[
        Path | None, typer.Option("--model", "-m", help="Exported tuned model directory.")
    ] = None,
    fewshot_model: Annotated[
        list[str] | None, typer.Option(help="Few-shot chat model (repeat for several).")
    ] = None,
    classical: Annotated[
        list[str] | None, typer.Option(help="tfidf | embeddings (repeat; default both).")
    ] = None,
    no_classical: Annotated[
        bool, typer.Option("--no-classical", help="Skip the classical baselines.")
    ] = False,
    engine: Annotated[
        str, typer.Option(help="Tuned model through vllm (serving path) | transformers.")
    ] = "vllm",
    base_url: BaseUrlOpt = None,
    api_key: ApiKeyOpt = None,
    shots: ShotsOpt = None,
    selection: SelectionOpt = "per-class",
    structured: StructuredOpt = "auto",
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
    from router.cli import _quiet_libraries, console, fail

    _quiet_libraries()
    if engine not in ("vllm", "transformers"):
        fail(f"--engine must be vllm or transformers, not {engine!r}")
    if model is not None and not model.is_dir():
        fail(f"model directory not found: {model}")
    kinds = [] if no_classical else (classical or ["tfidf", "embeddings"])
    if any(k not in ("tfidf", "embeddings") for k in kinds):
        fail(f"--classical must be tfidf or embeddings, got {kinds}")
    if fewshot_model and not (api_key or os.environ.get("OPENAI_API_KEY")):
        fail("no API key for --fewshot-model: pass --api-key or set OPENAI_API_KEY")  # before a long run
    fewshot_config = _fewshot_config(
        "", base_url=base_url, api_key=api_key, shots=shots, selection=selection,
        structured=structured, concurrency=concurrency, cache_dir=cache_dir, no_cache=no_cache,
    )  # fmt: skip
    with _errors():
        from training.comparison import BenchConfig, run_bench
        from training.comparison.report import systems_table

        report = run_bench(
            BenchConfig(
                dataset=dataset, output=output, model_dir=model, engine=engine,  # type: ignore[arg-type]
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
