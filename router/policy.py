"""Routing policy as data: probabilities -> intent, route, and whether to fall back.

The route map is a YAML file (`routes:` intent -> route, `default_route`, `fallback_route`),
shipped with the model or named in settings. A query goes to the fallback route when the model
is unsure (top-1 probability under the threshold), torn (top-1 minus top-2 under the margin) or
sure that the query is out of scope (an `oos` label). Everything that can be precomputed is
computed once in `Policy.__init__`, so deciding is a few numpy calls per query.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from router.settings import Settings
from serving.files import read_yaml_mapping
from serving.model_dir import ModelInfo

log = logging.getLogger(__name__)

DEFAULT_ROUTE = "general"
DEFAULT_THRESHOLD = 0.5  # top-1 under this: fallback (low confidence), unless the model has its own
DEFAULT_MARGIN = 0.1  # top-1 minus top-2 under this: fallback (ambiguous)
FALLBACK_ROUTE = "human_review"

FallbackReason = Literal["out_of_scope", "low_confidence", "ambiguous"]
FALLBACK_REASONS: tuple[FallbackReason, ...] = ("out_of_scope", "low_confidence", "ambiguous")


class PolicyError(ValueError):
    """A route map or policy setting that cannot work, with the file or field named."""


@dataclass(frozen=True)
class RouteMap:
    """intent -> route, plus where unmapped intents and unsure answers go."""

    routes: dict[str, str] = field(default_factory=dict)
    default_route: str | None = None
    fallback_route: str | None = None

    @classmethod
    def load(cls, path: str | Path) -> RouteMap:
        data = read_yaml_mapping(
            path, PolicyError, what="route map", expected="a mapping with a `routes:` key"
        )
        return cls.from_mapping(data, source=str(path))

    @classmethod
    def from_mapping(cls, data: Any, *, source: str = "route map") -> RouteMap:
        if not isinstance(data, Mapping):
            raise PolicyError(f"{source}: the top level must be a mapping with a `routes:` key")
        unknown = sorted(set(data) - {"routes", "default_route", "fallback_route"})
        if unknown:
            raise PolicyError(f"{source}: unknown key {unknown[0]!r}")
        routes = data.get("routes") or {}
        if not isinstance(routes, Mapping):
            raise PolicyError(f"{source}: `routes` must map intent -> route")
        for intent, route in routes.items():
            if not isinstance(route, str) or not route.strip():
                raise PolicyError(f"{source}: route for intent {intent!r} must be a non-empty string")
        for key in ("default_route", "fallback_route"):
            value = data.get(key)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise PolicyError(f"{source}: `{key}` must be a non-empty string")
        return cls(
            routes={str(k): str(v) for k, v in routes.items()},
            default_route=data.get("default_route"),
            fallback_route=data.get("fallback_route"),
        )


@dataclass(frozen=True, slots=True)
class Alternative:
    intent: str
    route: str
    probability: float


@dataclass(frozen=True, slots=True)
class Decision:
    """What the router answers for one query."""

    intent: str  # the model's top intent, also when falling back
    route: str  # the intent's route, or the fallback route
    confidence: float  # top-1 probability
    fallback: bool
    reason: FallbackReason | None  # why it fell back
    alternatives: tuple[Alternative, ...]  # top-k intents with their own routes
    runner_up: float | None = None  # top-2 probability, whatever top_k is; None: a one-label model


class Policy:
    """Turns a (C,) or (N, C) probability array into decisions; immutable once built."""

    def __init__(
        self,
        labels: Iterable[str],
        route_map: RouteMap,
        *,
        threshold: float = DEFAULT_THRESHOLD,
        margin: float = DEFAULT_MARGIN,
        oos_labels: Iterable[str] = ("oos",),
        top_k: int = 3,
        default_route: str | None = None,
        fallback_route: str | None = None,
    ) -> None:
        self.labels = tuple(labels)
        if not self.labels:
            raise PolicyError("the model has no labels")
        if not 0.0 <= threshold <= 1.0:
            raise PolicyError(f"confidence_threshold must be in [0, 1], got {threshold}")
        if not 0.0 <= margin <= 1.0:
            raise PolicyError(f"margin must be in [0, 1], got {margin}")
        self.threshold = float(threshold)
        self.margin = float(margin)
        self.top_k = max(1, min(int(top_k), len(self.labels)))
        self.default_route = default_route or route_map.default_route or DEFAULT_ROUTE
        self.fallback_route = fallback_route or route_map.fallback_route or FALLBACK_ROUTE
        oos = set(oos_labels)
        self.routes = {  # out-of-scope labels always go to the fallback route
            label: self.fallback_route if label in oos else route_map.routes.get(label, self.default_route)
            for label in self.labels
        }
        unknown = sorted(set(route_map.routes) - set(self.labels))
        if unknown:
            log.warning("route map names intents the model does not know: %s", ", ".join(unknown))
        self.oos_labels = tuple(label for label in self.labels if label in oos)
        self._oos = np.array([label in oos for label in self.labels], dtype=bool)
        self._route_of = tuple(self.routes[label] for label in self.labels)
        self._has_runner_up = len(self.labels) > 1

    @property
    def route_names(self) -> tuple[str, ...]:
        """Every route a decision can name (bounds the metrics' `route` label)."""
        return tuple(sorted({*self._route_of, self.fallback_route}))

    def decide(self, probs: np.ndarray) -> Decision:
        """Decision for one query's (C,) probabilities."""
        return self.decide_batch(np.asarray(probs).reshape(1, -1))[0]

    def decide_batch(self, probs: np.ndarray) -> list[Decision]:
        """Decisions for (N, C) probabilities, in row order."""
        probs = np.asarray(probs, dtype=np.float32)
        if probs.ndim != 2 or probs.shape[1] != len(self.labels):
            raise PolicyError(f"expected probabilities of shape (N, {len(self.labels)}), got {probs.shape}")
        k = self.top_k
        need = max(k, 2) if self._has_runner_up else 1
        # stable argsort of the negated rows: descending, ties keep label order
        order = np.argsort(-probs, axis=1, kind="stable")[:, :need]
        top = probs[np.arange(len(probs))[:, None], order]
        decisions = []
        for idx, p in zip(order.tolist(), top.tolist(), strict=True):
            best = p[0]
            reason: FallbackReason | None = None
            if self._oos[idx[0]]:
                reason = "out_of_scope"
            elif best < self.threshold:
                reason = "low_confidence"
            elif self._has_runner_up and best - p[1] < self.margin:
                reason = "ambiguous"
            decisions.append(
                Decision(
                    intent=self.labels[idx[0]],
                    route=self.fallback_route if reason else self._route_of[idx[0]],
                    confidence=best,
                    fallback=reason is not None,
                    reason=reason,
                    alternatives=tuple(
                        Alternative(self.labels[i], self._route_of[i], q)
                        for i, q in zip(idx[:k], p[:k], strict=True)
                    ),
                    runner_up=p[1] if self._has_runner_up else None,
                )
            )
        return decisions

    def answered(self, decision: Decision, intent: str) -> Decision:
        """`decision` with another source's answer (an escalation): `intent` and its route; the
        tuned model's confidence and alternatives stay as they were. An out-of-scope answer goes
        to the fallback route like the model's own."""
        route = self.routes[intent]  # KeyError: not a label of this model
        oos = intent in self.oos_labels
        return replace(
            decision,
            intent=intent,
            route=self.fallback_route if oos else route,
            fallback=oos,
            reason="out_of_scope" if oos else None,
        )


def build_policy(
    labels: Iterable[str],
    *,
    routes_file: str | Path | None,
    model_routes: Mapping[str, str] | None = None,
    model_default_route: str | None = None,
    model_fallback_route: str | None = None,
    **options: Any,
) -> Policy:
    """The policy for a model: `routes_file` (settings) wins over the route map the model ships.

    `options` are Policy keywords (threshold, margin, oos_labels, top_k, default_route,
    fallback_route); explicit default/fallback routes win over the map's.
    """
    if routes_file is not None:
        route_map = RouteMap.load(routes_file)
    else:
        route_map = RouteMap(
            routes=dict(model_routes or {}),
            default_route=model_default_route,
            fallback_route=model_fallback_route,
        )
    return Policy(labels, route_map, **options)


def operating_point(info: ModelInfo, settings: Settings) -> tuple[float, float]:
    """(confidence threshold, margin) for a model. Set in settings: those. Unset, for a model with
    an out-of-scope label and a threshold chosen for it on validation (training.thresholds): that
    threshold and no margin, the operating point its validation numbers were measured at (CLINC150:
    a 0.5 threshold and 0.1 margin sent in-scope queries to the fallback that the model answered
    right, docs/BENCHMARKS.md). Otherwise the generic 0.5 and 0.1."""
    own = info.oos_threshold is not None and any(label in settings.oos_labels for label in info.labels)
    threshold = settings.confidence_threshold
    if threshold is None:
        threshold = info.oos_threshold if own and info.oos_threshold is not None else DEFAULT_THRESHOLD
    margin = settings.margin
    if margin is None:
        margin = 0.0 if own else DEFAULT_MARGIN
    return threshold, margin


def escalation_cutoff(settings: Settings, policy: Policy) -> float:
    """Top-1 probability under which a query is escalated (cascade mode): the setting, else the
    policy's fallback threshold."""
    if settings.escalation_threshold is not None:
        return settings.escalation_threshold
    return policy.threshold


def policy_for(info: ModelInfo, settings: Settings) -> Policy:
    """The policy the router applies to a model: its labels and route map, the settings' rules.
    One place, so the startup check and the serving runtime build the same policy."""
    threshold, margin = operating_point(info, settings)
    return build_policy(
        info.labels,
        routes_file=settings.routes_file,
        model_routes=info.routes,
        model_default_route=info.default_route,
        model_fallback_route=info.fallback_route,
        threshold=threshold,
        margin=margin,
        oos_labels=settings.oos_labels,
        top_k=settings.top_k,
        default_route=settings.default_route,
        fallback_route=settings.fallback_route,
    )
