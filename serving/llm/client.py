"""Talking to an OpenAI-compatible server: bounded concurrency, retries, cache, one-line errors.

The `openai` client retries 429/5xx and connection errors itself, with exponential backoff and
jitter (`max_retries`); on top of that an answer that cannot be parsed is asked once more
(`parse_retries`), and what remains an error ends the run with one line that says what to fix.
Every response is cached on disk before it is used, so a rerun replays it without a request.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tqdm.auto import tqdm

from serving.llm.cache import CachedResponse, ResponseCache, default_cache_dir, request_key
from serving.llm.prompts import DEFAULT_SHOTS, Selection, parse_answer, response_format

__all__ = ["Answer", "Asker", "FewShotConfig", "FewShotError", "api_key", "ask_all", "refuses_schema"]

Structured = Literal["auto", "on", "off"]


class FewShotError(RuntimeError):
    """A run that cannot go on (no key, server unreachable, key rejected ...): one line."""


@dataclass
class FewShotConfig:
    model: str
    base_url: str | None = None  # None: the client's default (OPENAI_BASE_URL or api.openai.com)
    api_key: str | None = None  # None: OPENAI_API_KEY
    shots: int | None = None  # None: DEFAULT_SHOTS[selection]
    selection: Selection = "per-class"
    structured: Structured = "auto"  # auto: JSON-schema enum, plain parsing if the server refuses
    concurrency: int = 8
    max_retries: int = 4  # the client's own, with exponential backoff, on 429/5xx/connection
    parse_retries: int = 1  # our own: ask again when the answer is not parseable
    timeout_s: float = 60.0
    max_tokens: int = 64
    temperature: float = 0.0
    seed: int = 0
    cache_dir: Path | None = field(default_factory=default_cache_dir)  # None: no cache

    @property
    def k(self) -> int:
        return DEFAULT_SHOTS[self.selection] if self.shots is None else self.shots


@dataclass
class Answer:
    label: str | None  # None: invalid
    response: CachedResponse
    cached: bool


def api_key(config: FewShotConfig) -> str:
    key = config.api_key or os.environ.get("OPENAI_API_KEY")
    if not key:
        raise FewShotError(
            "no API key: pass --api-key or set OPENAI_API_KEY "
            "(a local server started without --api-key accepts any value)"
        )
    return key


def _describe(err: Exception, config: FewShotConfig) -> FewShotError:
    """One line for an API error that ends the run."""
    import openai

    where = config.base_url or "the OpenAI API"
    status = getattr(err, "status_code", None)
    message = getattr(err, "message", None) or str(err)
    message = " ".join(str(message).split())[:300]
    if isinstance(err, openai.APITimeoutError):
        text = f"{where} did not answer within {config.timeout_s:g}s (after {config.max_retries} retries)"
    elif isinstance(err, openai.APIConnectionError):
        text = f"cannot reach {where} (after {config.max_retries} retries): {message}"
    elif isinstance(err, openai.AuthenticationError):
        text = f"{where} rejected the API key (401): {message}"
    elif isinstance(err, openai.PermissionDeniedError):
        text = f"{where} refused access (403): {message}"
    elif isinstance(err, openai.NotFoundError):
        text = f"model {config.model!r} not found at {where} (404): {message}"
    elif isinstance(err, openai.RateLimitError):
        text = f"{where} kept rate-limiting (429) after {config.max_retries} retries: {message}"
    elif isinstance(err, openai.APIStatusError):
        text = f"{where} answered HTTP {status}: {message}"
    else:
        text = f"{type(err).__name__}: {message}"
    return FewShotError(text)


def refuses_schema(err: Exception) -> bool:
    """A 400/422 that is about the response format: the server lacks structured outputs."""
    import openai

    if not isinstance(err, (openai.BadRequestError, openai.UnprocessableEntityError)):
        return False
    text = str(getattr(err, "message", err)).lower()
    return any(word in text for word in ("response_format", "json_schema", "structured", "schema"))


class Asker:
    """Sends (or replays from cache) one request per query, at most `concurrency` at a time."""

    def __init__(self, client: Any, config: FewShotConfig, labels: list[str]) -> None:
        self.client, self.config, self.labels = client, config, labels
        self.cache = ResponseCache(config.cache_dir)
        self.semaphore = asyncio.Semaphore(max(1, config.concurrency))
        self.schema = response_format(labels)

    def request(self, messages: list[dict[str, str]], structured: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.config.model,
            "messages": messages,
            "temperature": self.config.temperature,
            "max_completion_tokens": self.config.max_tokens,
            "seed": self.config.seed,
        }
        if structured:
            body["response_format"] = self.schema
        return body

    def cached(self, body: dict[str, Any]) -> CachedResponse | None:
        return self.cache.get(request_key(body))

    async def _call(self, body: dict[str, Any]) -> CachedResponse:
        import openai

        started = time.perf_counter()
        try:
            response = await self.client.chat.completions.create(**body)
        except openai.APIError as err:
            if refuses_schema(err):
                raise  # the caller falls back to plain answers
            raise _describe(err, self.config) from err
        latency = time.perf_counter() - started
        usage = response.usage
        details = getattr(usage, "prompt_tokens_details", None) if usage else None
        choice = response.choices[0] if response.choices else None
        return CachedResponse(
            content=choice.message.content if choice else None,
            finish_reason=choice.finish_reason if choice else None,
            prompt_tokens=int(usage.prompt_tokens) if usage else 0,
            completion_tokens=int(usage.completion_tokens) if usage else 0,
            cached_tokens=int(getattr(details, "cached_tokens", 0) or 0),
            latency_s=latency,
            model=str(response.model),
        )

    def _label(self, response: CachedResponse) -> str | None:
        if response.finish_reason == "length":  # cut off: whatever is there is not an answer
            return None
        return parse_answer(response.content, self.labels)

    async def ask(self, body: dict[str, Any], query: str) -> Answer:
        key = request_key(body)
        hit = self.cache.get(key)
        if hit is not None:
            return Answer(self._label(hit), hit, cached=True)
        async with self.semaphore:
            response = await self._call(body)
            tries = 0
            while self._label(response) is None and tries < self.config.parse_retries:
                tries += 1
                await asyncio.sleep(0.5 * 2 ** (tries - 1))
                again = await self._call(body)
                response = CachedResponse(  # keep the last answer, pay for all of them
                    **{
                        **again.__dict__,
                        "prompt_tokens": response.prompt_tokens + again.prompt_tokens,
                        "completion_tokens": response.completion_tokens + again.completion_tokens,
                        "cached_tokens": response.cached_tokens + again.cached_tokens,
                        "latency_s": response.latency_s + again.latency_s,
                        "attempts": response.attempts + 1,
                    }
                )
        self.cache.put(key, response, {"model": self.config.model, "query": query})
        return Answer(self._label(response), response, cached=False)


async def _resolve_structured(
    asker: Asker, first: list[dict[str, str]], query: str
) -> tuple[bool, Answer | None]:
    """Whether to send the JSON schema: `on`/`off` as configured; `auto` asks the cache first
    (a rerun must not send a probe), then the server, with the first query as the probe. Returns
    the probe's answer too, so the first query is not asked twice when there is no cache."""
    mode = asker.config.structured
    if mode != "auto":
        return mode == "on", None
    if asker.cached(asker.request(first, True)) is not None:
        return True, None
    if asker.cached(asker.request(first, False)) is not None:
        return False, None
    try:
        return True, await asker.ask(asker.request(first, True), query)
    except FewShotError:
        raise
    except Exception as err:
        if refuses_schema(err):
            return False, None
        raise _describe(err, asker.config) from err


async def ask_all(
    client: Any,
    config: FewShotConfig,
    labels: list[str],
    prompts: list[list[dict[str, str]]],
    queries: list[str],
    progress: bool,
) -> tuple[list[Answer], bool, float]:
    asker = Asker(client, config, labels)
    started = time.perf_counter()
    bar = tqdm(total=len(prompts), desc=f"few-shot {config.model}", unit="query", disable=not progress)
    try:
        structured, probe = await _resolve_structured(asker, prompts[0], queries[0])
        answers: list[Answer | None] = [probe] + [None] * (len(prompts) - 1)
        bar.update(int(probe is not None))

        async def one(i: int) -> None:
            answers[i] = await asker.ask(asker.request(prompts[i], structured), queries[i])
            bar.update(1)

        try:
            async with asyncio.TaskGroup() as group:  # the first failure cancels the rest
                for i, answer in enumerate(answers):
                    if answer is None:
                        group.create_task(one(i))
        except ExceptionGroup as errors:
            first = errors.exceptions[0]
            if isinstance(first, FewShotError):
                raise first from None
            raise _describe(first, config) from first
    finally:
        bar.close()
        await client.close()
    return [a for a in answers if a is not None], structured, time.perf_counter() - started
