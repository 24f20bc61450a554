"""Routing-quality and drift signals: is live traffic still the traffic the model was trained for?

`QualityMonitor` keeps one sliding window of the last `drift_window` routed queries (the model's
top intent and whether its top-1 probability was under the confidence threshold) and compares it
at scrape time with the model directory's baseline (`serving.model_dir.BASELINE_FILE`): the
intent mix of the training split and the share of validation queries under the threshold. It
also counts routed queries and feedback by intent. docs/ROUTER.md "Metrics" explains each series
and deploy/prometheus/rules/ alerts on them.

Cardinality: the `intent` label only takes the served model's labels (anything else is "other"),
so it is bounded by the label set; texts, request ids and paths never become labels. The window
is reset when a model is installed (its labels and baseline may differ).

Hot-path cost: per query a deque append, two list updates and a cached counter child; the
divergences are computed when Prometheus scrapes, over the intents' counts (O(labels)).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Iterable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from serving.model_dir import Baseline, ModelDirError, ModelInfo, read_baseline

log = logging.getLogger(__name__)

OTHER = "other"
PSI_EPSILON = 1e-4  # floor for empty bins in the population stability index
NAN = float("nan")


def js_divergence(p: Sequence[float], q: Sequence[float]) -> float:
    """Jensen-Shannon divergence of two distributions in bits: 0 (same) .. 1 (disjoint)."""
    total = 0.0
    for a, b in zip(p, q, strict=True):
        m = (a + b) / 2
        if a > 0:
            total += a * math.log2(a / m)
        if b > 0:
            total += b * math.log2(b / m)
    return max(0.0, total / 2)


def psi(actual: Sequence[float], expected: Sequence[float], epsilon: float = PSI_EPSILON) -> float:
    """Population stability index: sum of (a - e) ln(a / e), empty bins floored at `epsilon`.
    Rule of thumb: under 0.1 stable, 0.1-0.25 moderate shift, over 0.25 a major shift."""
    total = 0.0
    for a, e in zip(actual, expected, strict=True):
        a, e = max(a, epsilon), max(e, epsilon)
        total += (a - e) * math.log(a / e)
    return total


class QualityMonitor:
    """Intent mix, confidence and feedback-by-intent signals; registers itself on `registry`."""

    def __init__(
        self, registry: CollectorRegistry, *, window: int = 2000, escalation_budget: float = 0.0
    ) -> None:
        self.window_size = window
        self.escalation_budget = escalation_budget
        self.intent_queries = Counter(
            "switchboard_intent_queries",
            "Routed queries by the model's top intent (also when the query fell back).",
            ["intent"],
            registry=registry,
        )
        self.intent_feedback = Counter(
            "switchboard_intent_feedback",
            "New feedback by the intent the router predicted for the request, and verdict.",
            ["intent", "verdict"],
            registry=registry,
        )
        self.labels: tuple[str, ...] = ()
        self.prior: tuple[float, ...] = ()
        self.prior_source = "none"
        self.threshold = 0.0
        self.expected_low: float | None = None
        self.expected_accuracy: float | None = None
        self._index: dict[str, int] = {}
        self._window: deque[tuple[int, bool]] = deque(maxlen=window)
        self._counts: list[int] = []
        self._low = 0
        self._query_children: dict[str, Counter] = {}
        self._feedback_children: dict[tuple[str, bool], Counter] = {}
        registry.register(_WindowCollector(self))

    # -- wiring ----------------------------------------------------------------------------

    def set_model(self, info: ModelInfo, threshold: float) -> None:
        """A model was installed: its labels, its baseline (uniform when the directory has
        none), the threshold it routes with; the window starts empty."""
        baseline: Baseline | None
        try:
            baseline = read_baseline(info.model_dir)
        except ModelDirError as err:
            log.warning("drift baseline not read, comparing with a uniform intent mix: %s", err)
            baseline = None
        if baseline is None:
            log.info(
                "model %s has no drift baseline (exported before it was written): the intent "
                "mix is compared with a uniform prior, confidence drift has no expectation",
                info.version,
            )
            baseline = Baseline({})
        self.install(info.labels, baseline, threshold)  # an empty prior is taken as uniform

    def install(self, labels: Sequence[str], baseline: Baseline, threshold: float) -> None:
        self.labels = tuple(labels)
        self._index = {label: i for i, label in enumerate(self.labels)}
        prior = [baseline.label_prior.get(label, 0.0) for label in self.labels]
        total = sum(prior)
        if total > 0:
            self.prior, self.prior_source = tuple(p / total for p in prior), "trained"
        else:
            self.prior, self.prior_source = tuple(1 / len(self.labels) for _ in self.labels), "uniform"
        self.threshold = threshold
        self.expected_low = baseline.share_below(threshold)
        self.expected_accuracy = baseline.accuracy
        self._window.clear()
        self._counts = [0] * (len(self.labels) + 1)  # the last slot: an intent outside the labels
        self._low = 0
        for label in self.labels:  # pre-create from 0, so rate() sees the first increments
            self._child(label)  # (bounded: the label set is the model's)
            self._feedback_child(label, True)

    # -- per query / per feedback ----------------------------------------------------------

    def observe(self, intent: str, confidence: float) -> None:
        index = self._index.get(intent, len(self.labels))
        low = confidence < self.threshold
        window = self._window
        if len(window) == window.maxlen:
            old, old_low = window[0]
            self._counts[old] -= 1
            self._low -= old_low
        window.append((index, low))
        self._counts[index] += 1
        self._low += low
        self._child(intent).inc()

    def observe_feedback(self, predicted_intent: str, agree: bool) -> None:
        intent = predicted_intent if predicted_intent in self._index else OTHER
        self._feedback_child(intent, agree).inc()

    def _feedback_child(self, intent: str, agree: bool) -> Counter:
        child = self._feedback_children.get((intent, agree))
        if child is None:  # both verdicts at once: an agreeing share over them is then defined
            for verdict in (True, False):
                self._feedback_children[(intent, verdict)] = self.intent_feedback.labels(
                    intent, "agree" if verdict else "disagree"
                )
            child = self._feedback_children[(intent, agree)]
        return child

    def _child(self, intent: str) -> Counter:
        if intent not in self._index:
            intent = OTHER
        child = self._query_children.get(intent)
        if child is None:
            child = self._query_children[intent] = self.intent_queries.labels(intent)
        return child

    # -- read at scrape time ---------------------------------------------------------------

    def shares(self) -> list[float]:
        """The window's share of each label (NaN while it is empty)."""
        n = len(self._window)
        return [c / n if n else NAN for c in self._counts[: len(self.labels)]]

    def divergence(self) -> tuple[float, float]:
        """(Jensen-Shannon divergence in bits, PSI) of the window's intent mix vs the prior;
        NaN while the window is empty. Queries outside the labels count as a bin the prior
        gives nothing."""
        n = len(self._window)
        if not n or not self.labels:
            return NAN, NAN
        live = [c / n for c in self._counts]
        prior = [*self.prior, 0.0]
        return js_divergence(live, prior), psi(live, prior)


class _WindowCollector(Collector):
    """The window's gauges, computed when /metrics is read."""

    def __init__(self, monitor: QualityMonitor) -> None:
        self.m = monitor

    def describe(self) -> Iterable[Metric]:
        return list(self.collect())  # lets the registry refuse a name registered twice

    def collect(self) -> Iterator[Metric]:
        m = self.m
        n = len(m._window)
        jsd, psi_value = m.divergence()
        yield _gauge("switchboard_drift_window_queries", "Routed queries in the drift window.", n)
        yield _gauge(
            "switchboard_drift_window_size",
            "Size of the drift window (setting drift_window); alerts wait for a full window.",
            m.window_size,
        )
        yield _gauge(
            "switchboard_intent_mix_divergence",
            "Jensen-Shannon divergence (bits, 0..1) of the window's top-intent mix from the "
            "training split's (NaN while the window is empty).",
            jsd,
        )
        yield _gauge(
            "switchboard_intent_mix_psi",
            "Population stability index of the window's top-intent mix against the training "
            "split's (NaN while the window is empty).",
            psi_value,
        )
        shares = GaugeMetricFamily(
            "switchboard_intent_share", "Share of each top intent in the drift window.", labels=["intent"]
        )
        prior = GaugeMetricFamily(
            "switchboard_intent_prior",
            "Share of each intent in the training split (uniform for models without a baseline).",
            labels=["intent"],
        )
        for label, share, p in zip(m.labels, m.shares(), m.prior, strict=True):
            shares.add_metric([label], share)
            prior.add_metric([label], p)
        yield shares
        yield prior
        info = GaugeMetricFamily(
            "switchboard_drift_baseline_info",
            "1 for where the intent prior came from: trained (the model's baseline) or uniform.",
            labels=["prior"],
        )
        info.add_metric([m.prior_source], 1)
        yield info
        yield _gauge(
            "switchboard_low_confidence_share",
            "Share of the drift window's queries with top-1 under confidence_threshold.",
            m._low / n if n else NAN,
        )
        yield _gauge(
            "switchboard_low_confidence_expected",
            "Share of validation queries with top-1 under confidence_threshold (NaN: unknown).",
            NAN if m.expected_low is None else m.expected_low,
        )
        yield _gauge(
            "switchboard_expected_accuracy",
            "The served model's validation accuracy, live accuracy's reference (NaN: unknown).",
            NAN if m.expected_accuracy is None else m.expected_accuracy,
        )
        yield _gauge(
            "switchboard_escalation_budget_dollars_per_hour",
            "Cascade mode: the escalation spend per hour the deployment budgets (setting "
            "escalation_budget_usd_per_hour; 0: no budget).",
            m.escalation_budget,
        )


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)
