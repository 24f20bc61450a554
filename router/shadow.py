"""A challenger beside the champion on live traffic: shadow and canary (`serving.rollout`).

`LiveRollout` (on `Runtime.rollout`) holds the registry's rollout state as this replica follows it
and the challenger's loaded model:

- `pick(metadata)`: which model answers a request, and which one classifies it in shadow after
  the answer is sent. Shadow stage: the champion answers, the challenger shadows `shadow_share`.
  Canary stage: `share` of requests is answered by the challenger (sticky by the hash of the
  caller's `metadata[canary_key]` when there is one), and the champion shadows those, so every
  answered pair stays comparable; the rest as in shadow.
- `shadow(...)`: the second model's call, as a task off the request path. It never makes a customer
  wait: with `shadow_max_pending` calls in flight, or `shadow_shed_in_flight` customer requests,
  the shadow work is dropped and counted (`switchboard_shadow_shed_total`). Its answers go to the
  request log's `shadow_answers` beside the request (`router.store.evidence` reads the pairs).
- `follow(state)`: called by the registry watch (under the runtime's change lock) with the state
  read from the registry: loads the challenger (a failure is logged, counted and recorded in the
  history; the champion keeps serving), drops it when the rollout ends, and when the rollout ended
  in its promotion installs the already-loaded challenger as the champion (no second load).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
from collections import Counter, deque
from collections.abc import Sequence
from time import monotonic, perf_counter, time
from typing import TYPE_CHECKING, Any, Protocol

from router.loaded_model import LoadedModel
from router.store.records import ShadowRecord
from serving.registry import Registry
from serving.rollout import Rollout, record_event

if TYPE_CHECKING:
    from router.metrics import RouterMetrics
    from router.settings import Settings
    from router.store import RequestLog


class Host(Protocol):
    """What a rollout needs of the runtime it lives in (router.runtime.Runtime)."""

    settings: Settings
    metrics: RouterMetrics
    log: RequestLog | None
    model: LoadedModel | None
    in_flight: int

    def require_model(self) -> LoadedModel: ...

    async def open_model(self, s: Settings) -> LoadedModel: ...

    async def adopt(self, new: LoadedModel) -> Any: ...


log = logging.getLogger(__name__)

LATENCY_SAMPLES = 2000  # the newest engine-call times kept per version during a rollout
# a challenger that failed to load is tried again while its rollout runs: after RETRY_MIN_S, then
# twice as long each time, at most RETRY_MAX_S apart (a remote engine may be starting or busy)
RETRY_MIN_S = 2.0
RETRY_MAX_S = 60.0


def canary_slot(key: Any, share: float) -> bool:
    """Is a caller with this key in the canary's share? The same key always gets the same answer
    for one share (a conversation is answered by one model), and a larger share keeps everyone
    a smaller one had."""
    digest = hashlib.sha256(str(key).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


class LiveRollout:
    def __init__(self, rt: Host) -> None:
        self.rt = rt
        self.state: Rollout | None = None
        self.second: LoadedModel | None = None  # the challenger, loaded
        self.pending = 0  # shadow calls in flight
        self._tasks: set[asyncio.Task[None]] = set()
        # shadow texts waiting for a batch, per shadowing version, and the timers that send them
        self._batches: dict[str, tuple[LoadedModel, list[str], list[Any]]] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._failed: str | None = None  # the challenger version that failed to load
        self._failed_at = 0.0
        self._failures = 0  # consecutive failed loads of `_failed`
        # queries sent to each version's engine here, and how many failed (the canary's error rate)
        self.calls: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        # engine seconds per call of each version during a rollout (the canary's latency guard)
        self.latencies: dict[str, deque[float]] = {}

    def count(self, version: str, queries: int, *, failed: bool, seconds: float | None = None) -> None:
        """One engine call of `version` (live or shadow): its queries, whether it failed, its time."""
        self.calls[version] += queries
        if failed:
            self.failures[version] += queries
        if seconds is not None and self.state is not None:
            self.latencies.setdefault(version, deque(maxlen=LATENCY_SAMPLES)).append(seconds)

    # -- per request ------------------------------------------------------------------------

    def pick(self, metadata: dict[str, Any] | None) -> tuple[LoadedModel, LoadedModel | None]:
        """(the model that answers, the model that shadows it or None)."""
        model = self.rt.require_model()
        state, second = self.state, self.second
        if state is None or second is None or model.info.version != state.champion:
            return model, None
        if state.stage == "canary":
            key = (metadata or {}).get(self.rt.settings.canary_key)
            in_canary = canary_slot(key, state.share) if key is not None else random.random() < state.share
            if in_canary:
                return second, model
        if state.shadow_share >= 1.0 or random.random() < state.shadow_share:
            return model, second
        return model, None

    def shadow(self, other: LoadedModel, texts: Sequence[str], results: Sequence[Any]) -> None:
        """Classify `texts` with `other` after the answers (`results`) are sent; shed when busy.

        Shadow texts are batched: they wait up to `shadow_batch_wait_s` for others, and go to the
        engine together (at most `shadow_batch_max`): one engine call for many requests costs the
        champion far less CPU or GPU time than one call each."""
        s, metrics = self.rt.settings, self.rt.metrics
        if self.pending >= s.shadow_max_pending or self.rt.in_flight > s.shadow_shed_in_flight:
            metrics.shadow_shed.inc(len(texts))
            return
        batch = self._batches.setdefault(other.info.version, (other, [], []))
        batch[1].extend(texts)
        batch[2].extend(results)
        if len(batch[1]) >= s.shadow_batch_max:
            self._flush(other.info.version)
        elif other.info.version not in self._timers:
            loop = asyncio.get_running_loop()
            self._timers[other.info.version] = loop.call_later(
                s.shadow_batch_wait_s, self._flush, other.info.version
            )

    def _flush(self, version: str) -> None:
        """Send one version's waiting shadow texts to its engine, as one call (off the request path)."""
        timer = self._timers.pop(version, None)
        if timer is not None:
            timer.cancel()
        other, texts, results = self._batches.pop(version, (None, [], []))
        if other is None or not texts:
            return
        if other is not self.second and other is not self.rt.model:  # its rollout ended meanwhile
            return
        self.pending += 1
        other.usage.acquire()  # a swap waits for this call before closing the engine
        task = asyncio.get_running_loop().create_task(self._classify(other, texts, results))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _classify(self, other: LoadedModel, texts: list[str], results: list[Any]) -> None:
        version = other.info.version
        metrics = self.rt.metrics
        try:
            started = perf_counter()
            async with asyncio.timeout(self.rt.settings.request_timeout_s):
                probs = await other.engine.classify(texts)
            seconds = perf_counter() - started
            self.count(version, len(texts), failed=False, seconds=seconds)
            metrics.version_engine_latency.labels(version).observe(seconds)
            decisions = other.policy.decide_batch(probs)
            now = time()
            for decision, result in zip(decisions, results, strict=True):
                agree = decision.intent == result.intent
                metrics.shadow_answers.labels(version, "agree" if agree else "disagree").inc()
                if self.rt.log is not None and not self.rt.log.log_shadow(
                    ShadowRecord(
                        result.request_id, now, version, decision.intent, decision.confidence,
                        decision.fallback, round(seconds * 1000, 3),
                    )
                ):  # fmt: skip
                    metrics.shadow_shed.inc()
        except Exception as err:
            self.count(version, len(texts), failed=True)
            metrics.version_errors.labels(version).inc(len(texts))
            log.warning("shadow classify with %s failed: %s: %s", version, type(err).__name__, err)
        finally:
            other.usage.release()
            self.pending -= 1

    # -- following the registry -----------------------------------------------------------

    async def follow(self, state: Rollout | None, registry: Registry) -> None:
        """Bring this replica to `state` (read from the registry); see the module docstring."""
        second = self.second
        if state is None:
            self._failed = None
            if second is None:
                self.state = None
                return
            champion = (await asyncio.to_thread(registry.aliases)).get("champion")
            model = self.rt.model
            # in-process engines (local, onnx, auto) are adopted; remote: the champion's own server follows
            adoptable = self.rt.settings.engine != "remote"
            if (
                adoptable
                and champion == second.info.version
                and (model is None or model.info.version != champion)
            ):
                # promoted: the loaded challenger serves, no reload. The canary stage holds until
                # it does, so a conversation the challenger answered never falls back meanwhile.
                await self.rt.adopt(second)
                self.state = self.second = None
                log.info("rollout: the challenger %s is the champion now", champion)
            else:
                self.state = self.second = None
                await self._close(second)
                self.rt.metrics.clear_version(second.info.version)
            self.rt.metrics.set_rollout(None)
            return
        if second is not None and second.info.version != state.challenger:
            self.second = None
            await self._close(second)
            second = None
        if second is None:
            if self._failed == state.challenger and monotonic() - self._failed_at < self._retry_after():
                return  # failed to load: tried again with a doubling back-off
            try:
                target = await asyncio.to_thread(registry.get, state.challenger)
                settings = self.rt.settings.model_copy(update={"model_dir": target.path})
                if settings.engine == "remote":  # the challenger's own `vllm serve`, serving it
                    if not settings.challenger_engine_url:
                        raise ValueError("the remote engine needs challenger_engine_url for a rollout")
                    settings = settings.model_copy(
                        update={
                            "engine_url": settings.challenger_engine_url,
                            "engine_served_model": state.challenger,
                        }
                    )
                second = await self.rt.open_model(settings)
            except Exception as err:
                retried = self._failed == state.challenger
                self._failures = self._failures + 1 if retried else 1
                self._failed, self._failed_at = state.challenger, monotonic()
                if retried:  # recorded the first time
                    log.warning(
                        "rollout: challenger %s still fails to load (try %d; next in %.0f s): %s: %s",
                        state.challenger, self._failures, self._retry_after(), type(err).__name__, err,
                    )  # fmt: skip
                    return
                self.rt.metrics.rollout_load_failures.inc()
                reason = f"{type(err).__name__}: {err}"
                log.error("rollout: challenger %s failed to load, the champion serves alone: %s",
                          state.challenger, reason)  # fmt: skip
                await asyncio.to_thread(
                    record_event, registry, "load_failed", challenger=state.challenger, by="router",
                    reason=reason,
                )  # fmt: skip
                return
            self.second, self._failed, self._failures = second, None, 0
            log.info("rollout: %s loaded beside the champion (%s)", state.challenger, state.stage)
        if self.state is None or (self.state.stage, self.state.challenger) != (state.stage, state.challenger):
            self.latencies.clear()  # compared within one stage only
        self.state = state
        self.rt.metrics.set_rollout(state)

    def _retry_after(self) -> float:
        return float(min(RETRY_MIN_S * 2 ** max(self._failures - 1, 0), RETRY_MAX_S))

    def take(self, version: str) -> LoadedModel | None:
        """Hand over the loaded challenger when it is `version` (it became the champion); the
        rollout here ends with it. In-process engines only: a remote challenger's server is the
        rollout's, and the champion's own server is rolled to the new version instead."""
        second = self.second
        if second is None or second.info.version != version or self.rt.settings.engine == "remote":
            return None
        self.second = self.state = None
        self.rt.metrics.set_rollout(None)
        return second

    async def _close(self, model: LoadedModel) -> None:
        await model.close_when_drained(self.rt.settings.request_timeout_s + 5.0)

    async def close(self) -> None:
        """At shutdown: wait briefly for shadow calls, then free the challenger."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._batches.clear()
        for task in list(self._tasks):
            task.cancel()
        second, self.second, self.state = self.second, None, None
        if second is not None:
            await second.close()
