"""The served model and everything a request needs: `Runtime` (on `app.state.runtime`).

The loaded model lives in one `LoadedModel` reference, so a hot swap replaces a single
attribute; `Usage` counts the engine calls in flight on each model so a swap can wait for them
before closing the old one. Engine calls, escalations and the request log are reached through
`Runtime`, which turns their failures into the API's errors (503 / 504).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import random
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import replace
from pathlib import Path
from time import monotonic, perf_counter, time
from typing import Any

import numpy as np
from sqlalchemy import Engine as DbEngine

from router.drift import QualityMonitor
from router.errors import timed_out, unavailable
from router.escalation import Escalation, Escalator, build_escalator
from router.loaded_model import LoadedModel
from router.metrics import RouterMetrics
from router.policy import Alternative, Decision, escalation_cutoff, policy_for
from router.readiness import ReadinessCheck
from router.schemas import EscalationInfo, RouteResult
from router.settings import Settings
from router.shadow import LiveRollout
from router.store import RequestLog, RequestRecord, new_request_id
from serving.engine import Engine, EngineError
from serving.factory import open_engine
from serving.model_dir import ModelInfo
from serving.taxonomy import TAXONOMY_FILE, Changes, Taxonomy, TaxonomyError

log = logging.getLogger(__name__)

EngineFactory = Callable[[Settings], Awaitable[Engine]]
T0 = "switchboard.t0"  # ASGI scope keys shared by the middleware and the handlers
ENGINE_S = "switchboard.engine_s"
ESCALATION_S = "switchboard.escalation_s"


class Runtime:
    """Shared state of one app: settings, metrics, request log, the loaded model."""

    def __init__(self, settings: Settings, engine_factory: EngineFactory) -> None:
        self.settings = settings
        self.engine_factory = engine_factory
        self.metrics = RouterMetrics(accuracy_window=settings.accuracy_window)
        self.quality = QualityMonitor(  # intent mix, confidence drift, feedback by intent
            self.metrics.registry,
            window=settings.drift_window,
            escalation_budget=settings.escalation_budget_usd_per_hour,
        )
        self.log: RequestLog | None = None
        self.db: DbEngine | None = None  # the store's engine, opened in the lifespan (reads: review)
        self.model: LoadedModel | None = None
        # the served model's intents with the registry's recorded changes (pending, retiring,
        # renaming), and the names feedback may give: set by `refresh_intents`, never per request
        self.taxonomy: Taxonomy = Taxonomy((), {}, {}, Changes())
        self.feedback_intents: frozenset[str] = frozenset()
        self.load_error: str | None = None
        self.readiness = ReadinessCheck(settings.ready_cache_s)  # /readyz's cached engine check
        self.in_flight = 0
        # monotonic time by which a graceful stop must be over (set at SIGTERM: begin_shutdown)
        self.shutdown_deadline: float | None = None
        self.on_load_failure: Callable[[str], None] | None = None
        self._swap_lock = asyncio.Lock()  # one engine load at a time: startup load, swaps
        # held for a whole model change (resolve the registry, swap, commit): admin reload and
        # rollback, the registry watcher; taken before `_swap_lock`, never after it
        self.change_lock = asyncio.Lock()
        self.rollout = LiveRollout(self)  # a challenger in shadow or canary (router.shadow)
        self.metrics.track(
            in_flight=lambda: self.in_flight, backlog=lambda: self.log.backlog if self.log else 0
        )

    # -- model -----------------------------------------------------------------------------

    async def load_model(self) -> None:
        """Open the engine, build the policy, warm up; on failure record why (readyz says it).

        Holds the swap lock, so a reload that arrives meanwhile waits for this load and then
        replaces (and frees) its model, instead of being overwritten by it and leaking its
        engine; if a reload somehow installed a model first, this load is skipped."""
        async with self._swap_lock:
            if self.model is not None:
                return
            try:
                model = await self.open_model(self.settings)
            except Exception as err:
                self.load_error = f"{type(err).__name__}: {err}"
                log.error("model failed to load: %s", self.load_error, exc_info=err)
                if self.on_load_failure is not None:
                    self.on_load_failure(self.load_error)
                return
            freeze_heap()
            self._install(model)

    async def open_model(self, s: Settings) -> LoadedModel:
        """A warmed-up model for `s.model_dir`; raises (and frees the engine) if any step fails."""
        engine: Engine | None = None
        escalator: Escalator | None = None
        try:
            engine = await self.engine_factory(s)
            info = engine.info
            policy = policy_for(info, s)
            if hasattr(engine, "batch_size_observer"):
                engine.batch_size_observer = self.metrics.engine_batch.observe
            async with asyncio.timeout(max(s.request_timeout_s, 60.0)):
                await engine.classify(["warm-up query"])  # ready means: the model answers
            if s.escalation_model:  # no warm-up call: it would cost money, and may be down now
                escalator = await asyncio.to_thread(build_escalator, s, Path(info.model_dir), info.labels)
                log.info(
                    "cascade mode: top-1 under %.3f escalates to %s",
                    escalation_cutoff(s, policy),
                    s.escalation_model,
                )
        except BaseException:  # includes cancellation at shutdown: never leak an engine
            if escalator is not None:
                await asyncio.shield(escalator.close())
            if engine is not None:
                await asyncio.shield(engine.close())
            raise
        return LoadedModel(engine, info, policy, frozenset(info.labels), escalator)

    def _install(self, model: LoadedModel) -> None:
        self.model = model  # one reference: requests already holding the old model keep it
        self.refresh_intents()
        self.load_error = None
        kind = engine_kind(model.engine, self.settings)
        self.metrics.set_model(model.info.version, kind, model.policy.route_names)
        self.quality.set_model(model.info, model.policy.threshold)
        self.metrics.ready.set(1)
        log.info(
            "serving model %s (%d intents) from %s on the %s engine; fallback under %.2f confidence "
            "or %.2f margin",
            model.info.version, len(model.info.labels), model.info.model_dir, kind,
            model.policy.threshold, model.policy.margin,
        )  # fmt: skip

    async def swap(self, model_dir: Path) -> tuple[ModelInfo, ModelInfo | None]:
        """Zero-downtime model change: load and warm the new model while the old one serves,
        switch atomically, let calls in flight on the old model finish, then free it.

        A model that fails to load raises and leaves the old one serving. Returns the infos of
        the new model and of the old one.
        """
        async with self._swap_lock:
            update: dict[str, Any] = {"model_dir": model_dir}
            if self.settings.engine == "remote" and self.settings.engine_served_model:
                # the server must serve the new version: a swap waits for its own server to roll
                update["engine_served_model"] = Path(model_dir).resolve().name
            settings = self.settings.model_copy(update=update)
            try:
                new = await self.open_model(settings)
            except Exception:
                self.metrics.reloads.labels("failed").inc()
                raise
            return await self._switch(new, settings)

    async def adopt(self, new: LoadedModel) -> tuple[ModelInfo, ModelInfo | None]:
        """Serve a model that is loaded already (a promoted challenger), as `swap` would."""
        async with self._swap_lock:
            settings = self.settings.model_copy(update={"model_dir": Path(new.info.model_dir)})
            return await self._switch(new, settings)

    async def _switch(self, new: LoadedModel, settings: Settings) -> tuple[ModelInfo, ModelInfo | None]:
        old = self.model
        old_info = old.info if old is not None else None
        self.settings = settings
        self._install(new)
        self.metrics.reloads.labels("ok").inc()
        if old is not None:
            await old.close_when_drained(settings.request_timeout_s + 5.0)
            self.metrics.clear_version(old.info.version)
        # drop the old model, let the collector reach its objects, then freeze what serves
        # now; that one full collection (~0.45 s with vLLM in-process) pauses the event
        # loop once per swap instead of at random under load
        del old
        gc.unfreeze()
        freeze_heap()
        return new.info, old_info

    def refresh_intents(self) -> None:
        """Re-read the registry's intent changes (`taxonomy.json`, a small file) against the
        served model's labels: feedback may then name the model's intents (renamed ones under
        their new names, retiring ones not) and the pending ones. Called when a model is
        installed and after an admin intents change, so no request reads a file."""
        model = self.model
        if model is None:
            return
        changes = Changes()
        if self.settings.registry_dir is not None:
            try:
                changes = Changes.read(Path(self.settings.registry_dir) / TAXONOMY_FILE)
            except (OSError, TaxonomyError) as err:
                log.warning("intent changes not read, feedback may name the served intents only: %s", err)
        info = model.info
        self.taxonomy = Taxonomy(info.labels, dict(info.routes), {}, changes)
        self.feedback_intents = frozenset(self.taxonomy.feedback_labels())

    def begin_shutdown(self, now: float | None = None) -> float:
        """SIGTERM: /readyz answers 503 from now on (a load balancer stops sending), and the
        one shutdown budget (`shutdown_timeout_s`) starts; returns its deadline (monotonic)."""
        if self.shutdown_deadline is None:
            started = monotonic() if now is None else now
            self.shutdown_deadline = started + self.settings.shutdown_timeout_s
            self.metrics.ready.set(0)
            log.info("shutting down: not ready; %.1f s to drain and flush", self.settings.shutdown_timeout_s)
        return self.shutdown_deadline

    def require_model(self) -> LoadedModel:
        model = self.model
        if model is None:
            state = "failed to load" if self.load_error else "is loading"
            raise unavailable(f"the model {state}; retry later", self.settings.retry_after_s)
        return model

    # -- per request -----------------------------------------------------------------------

    async def classify(
        self, model: LoadedModel, texts: Sequence[str], scope: MutableMapping[str, Any]
    ) -> np.ndarray:
        """Engine probabilities under the per-request timeout; engine failures become 503."""
        if self.log is not None and self.log.full:
            raise unavailable("request log backlog is full; retry later", self.settings.retry_after_s)
        started = perf_counter()
        model.usage.acquire()
        try:
            async with asyncio.timeout(self.settings.request_timeout_s):
                probs = await model.engine.classify(texts)
        except TimeoutError:
            self.metrics.version_errors.labels(model.info.version).inc(len(texts))
            self.rollout.count(model.info.version, len(texts), failed=True)
            raise timed_out(self.settings.request_timeout_s) from None
        except Exception as err:
            self.metrics.version_errors.labels(model.info.version).inc(len(texts))
            self.rollout.count(model.info.version, len(texts), failed=True)
            log.error("engine failed: %s", err, exc_info=not isinstance(err, EngineError))
            raise unavailable(
                "the model engine is unavailable; retry later", self.settings.retry_after_s
            ) from None
        finally:
            model.usage.release()
        elapsed = perf_counter() - started
        self.metrics.engine_latency.observe(elapsed)
        self.metrics.observe_answers(model.info.version, len(texts), elapsed)
        self.rollout.count(model.info.version, len(texts), failed=False, seconds=elapsed)
        scope[ENGINE_S] = elapsed
        return probs

    async def escalate(
        self,
        model: LoadedModel,
        decisions: list[Decision],
        texts: Sequence[str],
        scope: MutableMapping[str, Any],
    ) -> list[Escalation | None]:
        """Cascade mode: ask the LLM about every decision under the cutoff, concurrently, and
        put its valid answers into `decisions` (in place). Returns each query's escalation."""
        escalator = model.escalator
        escalations: list[Escalation | None] = [None] * len(decisions)
        if escalator is None:
            return escalations
        cutoff = escalation_cutoff(self.settings, model.policy)
        unsure = [i for i, d in enumerate(decisions) if d.confidence < cutoff]
        if not unsure:
            return escalations
        started = perf_counter()
        model.usage.acquire()  # the escalator closes with its model: a swap waits for us
        try:
            answers = await asyncio.gather(*(escalator.ask(texts[i], decisions[i].intent) for i in unsure))
        finally:
            model.usage.release()
        scope[ESCALATION_S] = perf_counter() - started
        for i, answer in zip(unsure, answers, strict=True):
            self.metrics.observe_escalation(answer)
            escalations[i] = answer
            if answer.label is not None:
                decisions[i] = model.policy.answered(decisions[i], answer.label)
        return escalations

    def record(
        self,
        model: LoadedModel,
        decisions: Sequence[Decision],
        texts: Sequence[str],
        meta: dict[str, Any] | None,
        scope: MutableMapping[str, Any],
        escalations: Sequence[Escalation | None] | None = None,
    ) -> list[RouteResult]:
        """Log each decision (queued, no I/O), count it, and return the response objects."""
        if self.log is not None and self.log.closing:  # cannot promise to store it: not accepted
            raise unavailable("shutting down; retry on another replica", self.settings.retry_after_s)
        t0 = scope.get(T0)
        latency_ms = round((perf_counter() - t0) * 1000, 3) if t0 is not None else 0.0
        version = model.info.version
        store_text = self.settings.store_text
        now = time()
        results = []
        escalated_to = model.escalator.model if model.escalator is not None else None
        audit_rate = self.settings.audit_rate
        for decision, text, escalation in zip(
            decisions, texts, escalations or [None] * len(decisions), strict=True
        ):
            request_id = new_request_id()
            outcome = escalation.outcome if escalation is not None else None
            self.metrics.observe_decision(decision.route, decision.confidence, decision.reason)
            self.quality.observe(decision.intent, decision.confidence)
            if self.log is not None:
                self.log.log(
                    RequestRecord(
                        request_id, now, text if store_text else None, decision.intent,
                        decision.confidence, decision.route, decision.fallback, decision.reason,
                        version, latency_ms, meta, outcome, escalated_to if outcome else None,
                        decision.runner_up, _logged(decision.alternatives),
                        random.random() < audit_rate,  # the audit sample: decided per request
                    )
                )  # fmt: skip
            results.append(
                RouteResult(
                    request_id=request_id,
                    intent=decision.intent,
                    route=decision.route,
                    confidence=round(decision.confidence, 6),
                    fallback=decision.fallback,
                    alternatives=[
                        replace(a, probability=round(a.probability, 6)) for a in decision.alternatives
                    ],
                    model_version=version,
                    escalation=None
                    if escalation is None or escalated_to is None
                    else EscalationInfo(
                        model=escalated_to,
                        outcome=escalation.outcome,
                        latency_ms=round(escalation.seconds * 1000, 3),
                    ),
                    latency_ms=latency_ms,
                )
            )
        return results


def _logged(alternatives: Sequence[Alternative]) -> list[dict[str, Any]]:
    """The top-k as the request log keeps it (`requests.alternatives`)."""
    return [{"intent": a.intent, "probability": round(a.probability, 6)} for a in alternatives]


def freeze_heap() -> None:
    """Put every object alive now out of the cyclic collector's reach (`gc.freeze`).

    A router process with vLLM in-process holds hundreds of thousands of long-lived objects
    (torch, vLLM, transformers, the engine client). Without this, each full (generation-2)
    collection walks them all on the event loop: under load at c=32 they took 453-472 ms, and
    those pauses were the p99 tail (`benchmarks/gc_pauses.py`, docs/BENCHMARKS.md). Collections
    after the freeze see only new objects. vLLM's own API server freezes its heap after start-up
    the same way.
    """
    gc.collect()
    gc.freeze()


def engine_kind(engine: Engine, settings: Settings) -> str:
    """The engine serving a model, as the `engine` label shows it: its own `kind` (what `auto`
    chose), else the configured one (a test's fake engine)."""
    return str(getattr(engine, "kind", settings.engine))


async def open_configured_engine(settings: Settings) -> Engine:
    """The engine the settings name, for `settings.model_dir` (the default `EngineFactory`)."""
    if settings.model_dir is None:
        raise ValueError("no model directory: set model_dir (SWITCHBOARD_MODEL_DIR or --model)")
    overrides = {"max_num_seqs": settings.max_num_seqs} if settings.max_num_seqs else None
    return await open_engine(
        settings.model_dir,
        kind=settings.engine,
        url=settings.engine_url,
        served_model=settings.engine_served_model,
        dtype=settings.dtype,
        eager=settings.eager,
        # a little over ours, so a slow request is our 504, not the engine's error (503)
        timeout_s=settings.request_timeout_s + 1.0,
        engine_overrides=overrides,
        gpu_memory_utilization=settings.gpu_memory_utilization,  # champion, challenger and a swap fit
        onnx_threads=settings.onnx_threads,
    )
