"""Cascade mode: queries the tuned model is unsure of are escalated to a few-shot LLM.

The rule is the one `switchboard bench` sweeps (training.comparison.cascade): a query whose top-1
probability is under `escalation_threshold` is asked of the LLM, so the operating point the
report recommends can be copied into the settings unchanged. The LLM is any OpenAI-compatible
server, asked exactly as the few-shot baseline asks it (same system prompt, the same seeded
per-class examples from the model's training data, exported with the model as
`fewshot.json`, so serving never loads a dataset; answers constrained to the model's labels).

Escalation never fails a request: an LLM that errs, times out or answers with no valid label
leaves the tuned model's decision standing (outcome `invalid` / `failed`). Each escalation is
counted by outcome (`agreed`: the LLM named the tuned model's top intent, `overruled`: another
intent), timed, and its tokens and dollars are summed in the metrics; the request log records
the outcome with the request.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from serving.llm.client import Asker, FewShotConfig, FewShotError, refuses_schema
from serving.llm.pricing import DEFAULT_PRICES, TokenPrice, load_prices
from serving.llm.prompts import build_messages, fixed_examples, system_prompt
from serving.model_dir import FEWSHOT_FILE, ModelDirError, read_fewshot

log = logging.getLogger(__name__)

EscalationOutcome = Literal["agreed", "overruled", "invalid", "failed"]
OUTCOMES: tuple[EscalationOutcome, ...] = ("agreed", "overruled", "invalid", "failed")


class EscalationError(ValueError):
    """Cascade settings that cannot work (no key, no examples ...), in one line."""


@dataclass(frozen=True, slots=True)
class Escalation:
    """What the LLM said about one query."""

    label: str | None  # the LLM's intent; None when invalid or failed
    outcome: EscalationOutcome
    seconds: float
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = None  # None: the price table has no price for the model


class Escalator:
    """Asks one OpenAI-compatible model about single queries, at most `concurrency` at once."""

    def __init__(
        self,
        config: FewShotConfig,
        labels: Sequence[str],
        descriptions: dict[str, str],
        examples: Sequence[tuple[str, str]],
        *,
        timeout_s: float,
        price: TokenPrice | None = None,
    ) -> None:
        from openai import AsyncOpenAI

        self.model = config.model
        self.labels = list(labels)
        self.timeout_s = timeout_s
        self.price = price
        self.system = system_prompt(self.labels, descriptions)
        self.examples = list(examples)
        self.client = AsyncOpenAI(
            api_key=config.api_key,
            base_url=config.base_url,
            max_retries=config.max_retries,
            timeout=timeout_s,
        )
        self.asker = Asker(self.client, config, self.labels)
        # auto: try the JSON-schema enum first, fall back for good when the server refuses it
        self.structured: bool | None = {"on": True, "off": False}.get(config.structured)

    async def ask(self, text: str, tuned_intent: str) -> Escalation:
        """The LLM's intent for `text`; never raises (a failure is an outcome)."""
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout_s):
                answer = await self._ask(text)
        except (FewShotError, TimeoutError) as err:
            reason = "timed out" if isinstance(err, TimeoutError) else str(err)
            log.warning("escalation to %s failed: %s", self.model, reason)
            return Escalation(None, "failed", time.perf_counter() - started)
        except Exception as err:  # an unexpected client error must not fail the request
            log.error("escalation to %s failed: %s", self.model, err, exc_info=err)
            return Escalation(None, "failed", time.perf_counter() - started)
        response = answer.response
        label = answer.label
        outcome: EscalationOutcome = (
            "invalid" if label is None else "agreed" if label == tuned_intent else "overruled"
        )
        cost = None
        if self.price is not None:
            cost = self.price.cost(response.prompt_tokens, response.completion_tokens, response.cached_tokens)
        return Escalation(
            label,
            outcome,
            time.perf_counter() - started,
            response.prompt_tokens,
            response.completion_tokens,
            cost,
        )

    async def _ask(self, text: str) -> Any:
        messages = build_messages(self.system, self.examples, text)
        structured = self.structured is not False
        try:
            return await self.asker.ask(self.asker.request(messages, structured), text)
        except Exception as err:
            if not (structured and self.structured is None and refuses_schema(err)):
                raise
            log.warning("%s refuses structured outputs; escalating with plain answers", self.model)
            self.structured = False
            return await self.asker.ask(self.asker.request(messages, False), text)

    async def close(self) -> None:
        await self.client.close()


def load_examples(
    path: Path, labels: Sequence[str], shots: int
) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """`shots` examples per label of the model from a few-shot examples file (seeded, as the
    baseline picks them) and the intent descriptions. Intents the model does not know are dropped."""
    try:
        fewshot = read_fewshot(path)
    except ModelDirError as err:
        raise EscalationError(
            f"escalation examples: {err} (export the model again, or write the file with "
            "`switchboard models examples MODEL_DIR --dataset D`)"
        ) from None
    known = set(labels)
    per_intent = {label: texts for label, texts in fewshot.per_intent.items() if label in known}
    examples = fixed_examples(per_intent, shots, seed=fewshot.seed)
    if shots > 0 and not examples:
        raise EscalationError(f"escalation examples: {path} shares no intent with the model")
    return examples, fewshot.descriptions


def build_escalator(settings: Any, model_dir: Path, labels: Sequence[str]) -> Escalator:
    """The escalator the settings describe, for the model in `model_dir`: its labels, and the
    few-shot examples exported with it (`fewshot.json`) unless `escalation_examples` names a file."""
    s = settings
    secret = s.escalation_api_key
    key = secret.get_secret_value() if secret else os.environ.get("OPENAI_API_KEY")
    if not key:
        raise EscalationError(
            "escalation_model is set but there is no API key: set SWITCHBOARD_ESCALATION_API_KEY "
            "or OPENAI_API_KEY (a local server without --api-key accepts any value)"
        )
    examples: list[tuple[str, str]] = []
    descriptions: dict[str, str] = {}
    if s.escalation_shots > 0 or s.escalation_examples is not None:
        examples, descriptions = load_examples(
            s.escalation_examples or model_dir / FEWSHOT_FILE, labels, s.escalation_shots
        )
    price = None
    if s.prices_file is None and not DEFAULT_PRICES.is_file():  # e.g. an installed wheel
        log.warning("no price file (set prices_file): escalation cost is not counted")
    else:
        prices = load_prices(s.prices_file)  # a named file that cannot be read fails the load
        price = prices.for_model(s.escalation_model)
        if price is None:
            log.warning("no price for %s in %s: cost not counted", s.escalation_model, prices.path)
    config = FewShotConfig(
        model=s.escalation_model,
        base_url=s.escalation_base_url,
        api_key=key,
        shots=s.escalation_shots,
        structured=s.escalation_structured,
        concurrency=s.escalation_concurrency,
        max_retries=s.escalation_max_retries,
        parse_retries=0,  # a request is waiting: one answer, valid or not
        timeout_s=s.escalation_timeout_s,
        cache_dir=None,  # customers' queries are not written to a cache directory
    )
    return Escalator(config, labels, descriptions, examples, timeout_s=s.escalation_timeout_s, price=price)
