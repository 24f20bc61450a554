"""Prometheus metrics for one router app (its own registry, so tests and apps never share).

Label values are bounded by construction: `endpoint` is one of the API paths (anything else
is "other"), `status` an HTTP status code, `route` a route of the loaded route map,
`reason` one of three fallback reasons, `verdict` agree | disagree, `outcome` one of four
escalation outcomes, `kind` prompt | completion. Query texts, intents of
unknown origin and request ids never become labels.

Hot-path cost matters (the router's overhead target is under a millisecond), so labelled
children are resolved once and cached, and gauges that mirror state (in-flight, queue depth)
are read at scrape time instead of being updated per request.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from router.escalation import OUTCOMES, Escalation
from router.policy import FALLBACK_REASONS
from router.store.audit import AccuracyEstimate
from serving.rollout import Rollout

# 0.1 ms .. 10 s: sub-millisecond router overhead up to a stuck engine at the timeout.
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.00075, 0.001, 0.0025, 0.005, 0.0075, 0.01,
    0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

LOOP_LAG_INTERVAL_S = 0.1

ENDPOINTS = ("/v1/route", "/v1/route/batch", "/v1/feedback", "/v1/intents", "/v1/review")
REFUSALS = frozenset({408, 413, 429, 499})  # refused before any work (499: the client left)
UNCOUNTED = frozenset({"/metrics", "/livez", "/readyz"})  # probes are not traffic
OTHER = "other"

__all__ = ["CONTENT_TYPE_LATEST", "RouterMetrics"]


class RouterMetrics:
    """Every series the router exports; see docs/ROUTER.md for what each one means."""

    def __init__(self, registry: CollectorRegistry | None = None, accuracy_window: int = 500):
        disable_created_metrics()  # `*_created` series double the exposition for no use here
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "switchboard_http_requests",
            "HTTP requests by endpoint and status code (probes and /metrics excluded).",
            ["endpoint", "status"],
            registry=r,
        )
        self.request_latency = Histogram(
            "switchboard_request_duration_seconds",
            "End-to-end time in the router of admitted requests, received to response sent "
            "(refusals before any work, 408/413/429, are counted in http_requests only).",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.engine_latency = Histogram(
            "switchboard_engine_duration_seconds",
            "Time waiting for the engine per classify call (one per /v1/route request).",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.overhead = Histogram(
            "switchboard_router_overhead_seconds",
            "End-to-end time minus engine time for /v1/route: the router's own cost.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.confidence = Histogram(
            "switchboard_confidence",
            "Top-1 probability of each routed query.",
            buckets=CONFIDENCE_BUCKETS,
            registry=r,
        )
        self.routed = Counter(
            "switchboard_routed_queries",
            "Routed queries by the route they were sent to (fallbacks under the fallback route).",
            ["route"],
            registry=r,
        )
        self.fallbacks = Counter(
            "switchboard_fallbacks",
            "Queries sent to the fallback route, by reason.",
            ["reason"],
            registry=r,
        )
        self.feedback = Counter(
            "switchboard_feedback",
            "New feedback by whether the correct intent agrees with the prediction.",
            ["verdict"],
            registry=r,
        )
        self.reviewed_agreement = Gauge(
            "switchboard_reviewed_agreement",
            "Share of this replica's newest feedback (any queue, so biased to hard texts) that agrees "
            "with the prediction (NaN before any). Live accuracy is switchboard_live_accuracy.",
            registry=r,
        )
        self.reviewed_agreement_samples = Gauge(
            "switchboard_reviewed_agreement_samples",
            "Feedback rows in the reviewed-agreement window.",
            registry=r,
        )
        self.live_accuracy = Gauge(
            "switchboard_live_accuracy",
            "Accuracy on the labelled audit sample (a random share of requests), per model version, "
            "from the database (the same on every replica).",
            ["model_version"],
            registry=r,
        )
        self.discovery_open = Gauge(
            "switchboard_discovery_proposals_open",
            "Proposed intents waiting for a reviewer (switchboard intents discover), from the database.",
            registry=r,
        )
        self.unrouted_share = Gauge(
            "switchboard_unrouted_share",
            "Share of the latest discovery run's window that was not routed (fallback, out of scope); "
            "NaN before any run.",
            registry=r,
        )
        self.discovery_last_run = Gauge(
            "switchboard_discovery_last_run_timestamp_seconds",
            "When the latest discovery run started (Unix time; 0 before any).",
            registry=r,
        )
        self.unrouted_share.set(float("nan"))
        self.live_accuracy_low = Gauge(
            "switchboard_live_accuracy_low",
            "Lower end of live accuracy's 90% Wilson interval.",
            ["model_version"],
            registry=r,
        )
        self.live_accuracy_high = Gauge(
            "switchboard_live_accuracy_high",
            "Upper end of live accuracy's 90% Wilson interval.",
            ["model_version"],
            registry=r,
        )
        self.live_accuracy_samples = Gauge(
            "switchboard_live_accuracy_samples",
            "Labelled audit items behind live accuracy, per model version.",
            ["model_version"],
            registry=r,
        )
        self.model_info = Gauge(
            "switchboard_model_info",
            "The served model: 1 for the loaded version.",
            ["version", "engine"],
            registry=r,
        )
        self.reloads = Counter(
            "switchboard_model_reloads_total",
            "Hot model swaps (admin reload/rollback), by outcome (ok | failed).",
            ["outcome"],
            registry=r,
        )
        self.ready = Gauge("switchboard_ready", "1 when the model is loaded and answering.", registry=r)
        # per model version: at most the champion, and a challenger in shadow or canary
        self.version_answers = Counter(
            "switchboard_version_answers",
            "Queries answered to customers, by model version (champion, canary).",
            ["model_version"],
            registry=r,
        )
        self.version_errors = Counter(
            "switchboard_version_errors",
            "Queries a model version's engine failed or timed out on (live or in shadow).",
            ["model_version"],
            registry=r,
        )
        self.version_engine_latency = Histogram(
            "switchboard_version_engine_duration_seconds",
            "Engine time per call, by model version (live and shadow calls).",
            ["model_version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.shadow_answers = Counter(
            "switchboard_shadow_answers",
            "Shadow classifications, by the shadowing version and whether it agreed with the answer sent.",
            ["model_version", "verdict"],
            registry=r,
        )
        self.shadow_shed = Counter(
            "switchboard_shadow_shed",
            "Queries whose shadow classification was dropped because the router was busy.",
            registry=r,
        )
        self.rollout_info = Gauge(
            "switchboard_rollout_info",
            "The rollout this replica follows: 1 for its stage, challenger, champion and canary share.",
            ["stage", "challenger", "champion", "share"],
            registry=r,
        )
        self.rollout_load_failures = Counter(
            "switchboard_rollout_load_failures",
            "Challengers that failed to load for a shadow or canary (the champion served alone).",
            registry=r,
        )
        self.in_flight = Gauge(
            "switchboard_in_flight_requests",
            "Requests being handled now (probes excluded).",
            registry=r,
        )
        self.engine_batch = Histogram(
            "switchboard_engine_batch_size",
            "Requests per engine step, as the local vLLM scheduler batches them.",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "switchboard_batch_request_size",
            "Texts per /v1/route/batch request.",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.escalations = Counter(
            "switchboard_escalations",
            "Cascade mode: queries asked of the escalation LLM, by outcome (agreed | overruled: "
            "the LLM named the model's top intent or another one; invalid | failed: the model's "
            "answer stood).",
            ["outcome"],
            registry=r,
        )
        self.escalation_latency = Histogram(
            "switchboard_escalation_duration_seconds",
            "Time per escalation to the LLM, failures and timeouts included.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.escalation_tokens = Counter(
            "switchboard_escalation_tokens",
            "Tokens the escalation LLM billed, by kind (prompt | completion).",
            ["kind"],
            registry=r,
        )
        self.escalation_cost = Counter(
            "switchboard_escalation_cost_dollars",
            "What the escalations cost at the price table's rates (US dollars).",
            registry=r,
        )
        self.loop_lag = Histogram(
            "switchboard_event_loop_lag_seconds",
            f"How late the event loop ran a timer due every {LOOP_LAG_INTERVAL_S} s: time it was "
            "blocked (garbage-collection pauses, CPU-bound work on the loop). Every request "
            "waits out such a stall.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.log_backlog = Gauge(
            "switchboard_request_log_backlog", "Logged requests not yet written.", registry=r
        )
        self.log_rows = Counter(
            "switchboard_request_log_rows", "Rows written to the request log store.", registry=r
        )
        self.log_flush = Histogram(
            "switchboard_request_log_flush_seconds",
            "Time per request-log write transaction.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.log_errors = Counter(
            "switchboard_request_log_errors", "Failed request-log writes (retried).", registry=r
        )
        self.log_spilled = Counter(
            "switchboard_request_log_spilled",
            "Log rows not stored, written to the server log as JSON instead, by reason: rejected "
            "(the database refused even the repaired row), shutdown (unwritten at the deadline "
            "with no spool), error (a writer bug).",
            ["reason"],
            registry=r,
        )
        self.log_repaired = Counter(
            "switchboard_request_log_repaired",
            "Log rows the database refused and took after NUL, lone surrogates or non-finite "
            "JSON numbers were replaced.",
            registry=r,
        )
        self.log_spool_errors = Counter(
            "switchboard_request_log_spool_errors",
            "Failed writes to the request-log spool (the router then keeps rows in memory only).",
            registry=r,
        )
        for reason in ("rejected", "shutdown", "error"):
            self.log_spilled.labels(reason)
        for outcome in ("ok", "failed"):  # from 0: an alert on increase() sees the first failure
            self.reloads.labels(outcome)
        self._window: deque[bool] = deque(maxlen=accuracy_window)
        self._agreeing = 0
        self.reviewed_agreement.set(float("nan"))
        self.reviewed_agreement_samples.set(0)
        self._live_versions: set[str] = set()
        self._version_children: dict[str, tuple[Counter, Histogram]] = {}
        self._request_children: dict[tuple[str, int], Counter] = {}
        self._latency_children = {e: self.request_latency.labels(e) for e in (*ENDPOINTS, OTHER)}
        self._routed_children: dict[str, Counter] = {}
        self._fallback_children: dict[str, Counter] = {r: self.fallbacks.labels(r) for r in FALLBACK_REASONS}
        for verdict in ("agree", "disagree"):
            self.feedback.labels(verdict)
        self._escalation_children = {o: self.escalations.labels(o) for o in OUTCOMES}
        self._prompt_tokens = self.escalation_tokens.labels("prompt")
        self._completion_tokens = self.escalation_tokens.labels("completion")

    # -- wiring ----------------------------------------------------------------------------

    def track(self, *, in_flight: Callable[[], int], backlog: Callable[[], int]) -> None:
        """Gauges read at scrape time: zero per-request cost."""
        self.in_flight.set_function(lambda: float(in_flight()))
        self.log_backlog.set_function(lambda: float(backlog()))

    def set_model(self, version: str, engine: str, routes: Iterable[str]) -> None:
        self.model_info.clear()
        self.model_info.labels(version, engine).set(1)
        for route in routes:  # pre-create: the route label stays within the route map
            self._routed_children.setdefault(route, self.routed.labels(route))

    def set_rollout(self, state: Rollout | None) -> None:
        self.rollout_info.clear()
        if state is not None:
            share = f"{state.share:g}" if state.stage == "canary" else "0"
            self.rollout_info.labels(state.stage, state.challenger, state.champion, share).set(1)

    def observe_answers(self, version: str, queries: int, seconds: float) -> None:
        """A customer-facing engine call of `version` (per request: its label children cached)."""
        children = self._version_children.get(version)
        if children is None:
            children = (self.version_answers.labels(version), self.version_engine_latency.labels(version))
            self._version_children[version] = children
        children[0].inc(queries)
        children[1].observe(seconds)

    def clear_version(self, version: str) -> None:
        """A version no longer served here: its per-version series go (bounded label sets)."""
        self._version_children.pop(version, None)
        for metric in (self.version_answers, self.version_errors, self.version_engine_latency):
            with contextlib.suppress(KeyError):
                metric.remove(version)
        for verdict in ("agree", "disagree"):
            with contextlib.suppress(KeyError):
                self.shadow_answers.remove(version, verdict)

    # -- per request -----------------------------------------------------------------------

    def observe_request(self, endpoint: str, status: int, seconds: float) -> None:
        key = (endpoint, status)
        child = self._request_children.get(key)
        if child is None:
            child = self._request_children[key] = self.requests.labels(endpoint, str(status))
        child.inc()
        if status not in REFUSALS:  # answered in microseconds: they would hide the real latency
            self._latency_children[endpoint].observe(seconds)

    def observe_decision(self, route: str, confidence: float, reason: str | None) -> None:
        child = self._routed_children.get(route)
        if child is None:  # a route outside the map would mean a bug; still bounded by policy
            child = self._routed_children[route] = self.routed.labels(route)
        child.inc()
        self.confidence.observe(confidence)
        if reason is not None:
            self._fallback_children[reason].inc()

    def observe_escalation(self, escalation: Escalation) -> None:
        self._escalation_children[escalation.outcome].inc()
        self.escalation_latency.observe(escalation.seconds)
        self._prompt_tokens.inc(escalation.prompt_tokens)
        self._completion_tokens.inc(escalation.completion_tokens)
        if escalation.cost_usd:
            self.escalation_cost.inc(escalation.cost_usd)

    def observe_feedback(self, agree: bool) -> None:
        self.feedback.labels("agree" if agree else "disagree").inc()
        if len(self._window) == self._window.maxlen and self._window[0]:
            self._agreeing -= 1
        self._window.append(agree)
        self._agreeing += agree
        self.reviewed_agreement.set(self._agreeing / len(self._window))
        self.reviewed_agreement_samples.set(len(self._window))

    def set_live_accuracy(self, estimates: Iterable[AccuracyEstimate]) -> None:
        """The audit estimates of the versions served now (at most champion, shadow and canary)."""
        gauges = (
            self.live_accuracy,
            self.live_accuracy_low,
            self.live_accuracy_high,
            self.live_accuracy_samples,
        )
        now: set[str] = set()
        for e in estimates:
            now.add(e.model_version)
            self.live_accuracy.labels(e.model_version).set(e.accuracy)
            self.live_accuracy_low.labels(e.model_version).set(e.low)
            self.live_accuracy_high.labels(e.model_version).set(e.high)
            self.live_accuracy_samples.labels(e.model_version).set(e.n)
        for version in self._live_versions - now:  # a version no longer served: its series go
            for gauge in gauges:
                gauge.remove(version)
        self._live_versions = now

    def observe_spill(self, rows: int, reason: str) -> None:
        self.log_spilled.labels(reason).inc(rows)

    def observe_flush(self, rows: int, seconds: float) -> None:
        self.log_rows.inc(rows)
        self.log_flush.observe(seconds)

    async def watch_loop_lag(self, interval_s: float = LOOP_LAG_INTERVAL_S) -> None:
        """Run until cancelled: sleep `interval_s` and record how late the wake-up came."""
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + interval_s
            await asyncio.sleep(interval_s)
            self.loop_lag.observe(max(0.0, loop.time() - due))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
