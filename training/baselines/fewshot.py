"""Few-shot LLM baseline: classify each test query by asking a chat model with K examples.

Any OpenAI-compatible server works (OpenAI, Azure OpenAI, vLLM, Ollama) through the official
`openai` client. What makes the numbers trustworthy and cheap to reproduce:

- answers constrained to the label set (a JSON-schema `enum` when the server has structured
  outputs, strict parsing otherwise, see `serving.llm.prompts`); an answer that names
  no label is *invalid*: counted, and scored as wrong (see :func:`metrics_from_predictions`);
- bounded concurrency (a semaphore over `AsyncOpenAI`), the client's exponential backoff on
  429/5xx and connection errors, one more try for an unparseable answer;
- every response cached on disk by sha256(model, messages, response_format, sampling), with its
  token usage: a rerun sends no request and still reports what the answers cost;
- token usage -> dollars via `data/prices.yaml`; latency p50/p99 of the calls actually made.
"""

import asyncio
from dataclasses import dataclass
from typing import Any

import numpy as np

from serving.llm.cache import CachedResponse
from serving.llm.client import FewShotConfig, FewShotError, api_key, ask_all
from serving.llm.pricing import PriceTable, TokenPrice
from serving.llm.prompts import build_messages, system_prompt
from training.baselines.examples import select_examples
from training.data import IntentDataset
from training.metrics import compute_metrics

__all__ = [
    "INVALID",
    "FewShotConfig",
    "FewShotError",
    "FewShotResult",
    "metrics_from_predictions",
    "run_fewshot",
]

#: Pseudo-label of an invalid answer in metrics: a column no real intent owns.
INVALID = "<invalid>"


@dataclass
class FewShotResult:
    name: str
    model: str
    served_model: str
    metrics: dict[str, Any]
    predictions: list[str | None]  # None where the answer was invalid
    query_costs: list[float] | None  # dollars per query (cached ones at their original usage)
    invalid: int
    requests: int  # calls sent in this run (0 on a fully cached rerun)
    cache_hits: int
    structured: bool
    prompt_tokens: int  # all queries, cached ones with their original usage
    completion_tokens: int
    cached_prompt_tokens: int
    cost_usd: float | None  # what answering all queries costs (None: model has no price)
    spent_usd: float | None  # what this run spent (calls actually sent)
    cost_per_million: float | None
    latency_p50_s: float | None
    latency_p99_s: float | None
    latency_source: str  # "live" (this run's calls) or "cache" (the original calls)
    throughput_qps: float | None  # answered per second of wall time, with `concurrency` in flight
    settings: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        """Everything but the per-query predictions (JSON-ready)."""
        return {k: v for k, v in self.__dict__.items() if k not in ("predictions", "query_costs")}


def metrics_from_predictions(
    y_true: list[int], y_pred: list[int | None], labels: list[str]
) -> dict[str, Any]:
    """`compute_metrics` for hard predictions where some answers are invalid (None).

    An invalid answer goes to an extra `<invalid>` column: it is wrong (accuracy), a missed
    example of its true intent (that intent's recall and F1), and a false positive of *no* real
    intent. The pseudo-label is then dropped from `per_intent`, the confusion matrix and the
    macro/weighted F1 (recomputed over the real labels), so an invalid answer is never scored as
    a guess of some class, nor does it add a zero-F1 class of its own. Hard predictions carry no
    confidence: `ece` and `mean_confidence` are None.
    """
    from sklearn.metrics import f1_score

    n_labels = len(labels)
    pred = np.array([n_labels if p is None else p for p in y_pred], dtype=np.int64)
    probs = np.zeros((len(pred), n_labels + 1), dtype=np.float32)
    probs[np.arange(len(pred)), pred] = 1.0
    metrics = compute_metrics(y_true, probs, [*labels, INVALID])
    y = np.asarray(y_true)
    present = np.setdiff1d(np.union1d(y, pred), [n_labels])
    for average in ("macro", "weighted"):
        metrics[f"{average}_f1"] = float(f1_score(y, pred, labels=present, average=average, zero_division=0))
    metrics["per_intent"].pop(INVALID)
    if "confusion" in metrics:
        metrics["confusion"] = [row[:n_labels] for row in metrics["confusion"][:n_labels]]
    metrics["ece"] = None
    metrics["mean_confidence"] = None
    metrics["invalid"] = int((pred == n_labels).sum())
    return metrics


def _cost(price: TokenPrice | None, responses: list[CachedResponse]) -> float | None:
    if price is None:
        return None
    return sum(price.cost(r.prompt_tokens, r.completion_tokens, r.cached_tokens) for r in responses)


def run_fewshot(
    data: IntentDataset,
    config: FewShotConfig,
    *,
    prices: PriceTable | None = None,
    limit: int | None = None,
    progress: bool = True,
) -> FewShotResult:
    """Ask `config.model` to classify the test split (the first `limit` queries) of `data`."""
    from openai import AsyncOpenAI

    # 1. Key, queries, labels.
    key = api_key(config)
    if data.test is None:
        raise FewShotError(f"dataset {data.name!r} has no test split")
    queries = data.test.texts[:limit] if limit else list(data.test.texts)
    gold = data.test.labels[: len(queries)]
    labels = list(data.label_map.labels)

    # 2. Prompts: system (intents), examples from train, the query.
    system = system_prompt(labels, data.descriptions)
    examples = select_examples(data, queries, config.selection, config.k, seed=config.seed, progress=progress)
    prompts = [build_messages(system, ex, q) for ex, q in zip(examples, queries, strict=True)]

    # 3. Ask (cache first), bounded concurrency.
    client = AsyncOpenAI(
        api_key=key, base_url=config.base_url, max_retries=config.max_retries, timeout=config.timeout_s
    )
    answers, structured, wall = asyncio.run(ask_all(client, config, labels, prompts, queries, progress))

    # 4. Score: invalid answers are wrong, not guessed.
    ids = data.label_map.label2id
    predictions = [a.label for a in answers]
    metrics = metrics_from_predictions(
        [ids[g] for g in gold], [None if p is None else ids[p] for p in predictions], labels
    )

    # 5. Usage, cost, latency.
    responses = [a.response for a in answers]
    live = [a.response for a in answers if not a.cached]
    price = prices.for_model(config.model) if prices else None
    cost = _cost(price, responses)
    timed = live or responses
    latencies = np.array([r.latency_s for r in timed])
    served = next((r.model for r in responses if r.model), config.model)
    return FewShotResult(
        name=f"few-shot {config.model} ({config.k}-shot {config.selection})",
        model=config.model,
        served_model=served,
        metrics=metrics,
        predictions=predictions,
        query_costs=None
        if price is None
        else [price.cost(r.prompt_tokens, r.completion_tokens, r.cached_tokens) for r in responses],
        invalid=metrics["invalid"],
        requests=sum(r.attempts for r in live),
        cache_hits=len(answers) - len(live),
        structured=structured,
        prompt_tokens=sum(r.prompt_tokens for r in responses),
        completion_tokens=sum(r.completion_tokens for r in responses),
        cached_prompt_tokens=sum(r.cached_tokens for r in responses),
        cost_usd=cost,
        spent_usd=_cost(price, live),
        cost_per_million=None if cost is None else cost / len(answers) * 1_000_000,
        latency_p50_s=float(np.percentile(latencies, 50)) if latencies.size else None,
        latency_p99_s=float(np.percentile(latencies, 99)) if latencies.size else None,
        latency_source="live" if live else "cache",
        throughput_qps=len(live) / wall if live and wall > 0 else None,
        settings={
            "base_url": config.base_url,
            "shots": config.k,
            "selection": config.selection,
            "concurrency": config.concurrency,
            "temperature": config.temperature,
            "max_tokens": config.max_tokens,
            "seed": config.seed,
            "n_queries": len(queries),
            "price": None if price is None else price.__dict__,
            "prices_file": prices.path if prices else None,
            "prices_read_on": prices.llm_read_on if prices else None,
        },
    )
