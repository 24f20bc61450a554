"""A challenger's way to the champion seat on live traffic, kept in the registry beside the aliases.

```
REGISTRY/rollout.json    {"stage": "shadow" | "canary", "challenger": "v0003", "champion": "v0002",
                          "share": 0.1, "shadow_share": 1.0, "since": "...", "started": "..."}
REGISTRY/history.jsonl   one line per transition: registered, shadow, canary, promoted,
                          rolled_back, rejected, stopped; with who, why and the evidence
```

- shadow: the champion answers every request; the challenger classifies `shadow_share` of them
  after the answer is sent (off the request path) and its answers are logged beside the champion's.
- canary: `share` of requests is answered by the challenger (sticky by a caller's key), the champion
  classifies those in shadow, so the evidence stays paired.

Every replica reads this file (`router.rollout_watch`) and converges on its state; transitions are
written under the registry lock and only from the state the writer saw (`expect`), so two replicas
(or a person and the controller) that decide at once cannot apply two transitions: the second
finds the state changed and does nothing. The history is append-only and fsynced.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from serving.files import write_json_atomic
from serving.registry import Registry, RegistryCorrupt, RegistryError

ROLLOUT_FILE = "rollout.json"
HISTORY_FILE = "history.jsonl"
Stage = Literal["shadow", "canary"]


class RolloutConflict(RegistryError):
    """The transition does not fit the rollout's state (the message says what is running)."""


@dataclass(frozen=True)
class Rollout:
    stage: Stage
    challenger: str
    champion: str
    share: float = 0.0  # canary: share of requests the challenger answers
    shadow_share: float = 1.0  # shadow: share of requests the challenger also classifies
    started: str = ""  # when the challenger entered shadow
    since: str = ""  # when this stage began

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _now() -> str:
    """UTC, whatever the host's zone: the request log's times are UTC, and stages are compared with them."""
    return time.strftime("%Y-%m-%dT%H:%M:%S+0000", time.gmtime())


def read_rollout(registry: Registry) -> Rollout | None:
    path = registry.root / ROLLOUT_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        # no rollout, or one that ended between a reader's look and its read: readers (every
        # replica's watcher) read without the registry lock, and a transition may remove the file
        return None
    except OSError as err:
        raise RegistryCorrupt(f"rollout file {path} is unreadable: {err}") from None
    try:
        data = json.loads(text)
        rollout = Rollout(**data)
    except (ValueError, TypeError) as err:
        raise RegistryCorrupt(f"rollout file {path} is corrupt: {err}") from None
    if rollout.stage not in ("shadow", "canary"):
        raise RegistryCorrupt(f"rollout file {path} is corrupt: unknown stage {rollout.stage!r}")
    return rollout


def history(registry: Registry) -> list[dict[str, Any]]:
    path = registry.root / HISTORY_FILE
    if not path.is_file():
        return []
    entries = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            raise RegistryCorrupt(f"history file {path} line {number} is corrupt") from None
    return entries


def _append_history(registry: Registry, entry: dict[str, Any]) -> None:
    path = registry.root / HISTORY_FILE
    with path.open("a") as fh:
        fh.write(json.dumps({"at": _now(), **entry}, default=str) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def record_event(registry: Registry, event: str, **entry: Any) -> None:
    """An event outside a stage change (a challenger registered, a shadow that failed to load)."""
    with registry.locked():
        _append_history(registry, {"event": event, **entry})


def _write(registry: Registry, rollout: Rollout | None) -> None:
    path = registry.root / ROLLOUT_FILE
    if rollout is None:
        path.unlink(missing_ok=True)
    else:
        write_json_atomic(path, rollout.to_json())


def _check_expected(current: Rollout | None, expect: Rollout | Literal["any"] | None) -> None:
    if expect != "any" and current != expect:
        now = "nothing" if current is None else f"{current.challenger} in {current.stage}"
        raise RolloutConflict(f"the rollout changed meanwhile (now: {now}); nothing done")


def _check_share(share: float, name: str) -> None:
    """A canary's share is in (0, 1) (all of it would be a promotion); a shadow's in (0, 1]."""
    ok = 0.0 < share < 1.0 if name == "share" else 0.0 < share <= 1.0
    if not ok:
        bounds = "between 0 and 1 (exclusive)" if name == "share" else "in (0, 1]"
        raise RegistryError(f"{name} must be {bounds}, not {share}")


def start_shadow(
    registry: Registry,
    ref: str = "challenger",
    *,
    shadow_share: float = 1.0,
    by: str,
    reason: str = "",
    evidence: dict[str, Any] | None = None,
) -> Rollout:
    """The challenger (or `ref`) goes to shadow beside the champion."""
    _check_share(shadow_share, "shadow_share")
    with registry.locked():
        current = read_rollout(registry)
        if current is not None:
            raise RolloutConflict(
                f"a rollout is running: {current.challenger} in {current.stage}; stop it first"
            )
        target = registry.get(ref)
        champion = registry.aliases().get("champion")
        if champion is None:
            raise RolloutConflict("no champion to shadow")
        if target.version == champion:
            raise RolloutConflict(f"{target.version} is the champion already")
        now = _now()
        rollout = Rollout("shadow", target.version, champion, 0.0, shadow_share, now, now)
        _write(registry, rollout)
        _append_history(
            registry,
            {"event": "shadow", "challenger": target.version, "champion": champion, "by": by,
             "reason": reason, "evidence": evidence or {}},
        )  # fmt: skip
    return rollout


def start_canary(
    registry: Registry,
    share: float,
    *,
    by: str,
    reason: str = "",
    evidence: dict[str, Any] | None = None,
    expect: Rollout | Literal["any"] | None = "any",
) -> Rollout:
    """The shadowed challenger answers `share` of requests (a canary)."""
    _check_share(share, "share")
    with registry.locked():
        current = read_rollout(registry)
        _check_expected(current, expect)
        if current is None:
            raise RolloutConflict("no challenger in shadow: start a shadow first (models shadow start)")
        if current.stage == "canary":
            raise RolloutConflict(f"a canary is running already: {current.challenger} at {current.share:.0%}")
        rollout = replace(current, stage="canary", share=share, since=_now())
        _write(registry, rollout)
        _append_history(
            registry,
            {"event": "canary", "challenger": rollout.challenger, "champion": rollout.champion,
             "share": share, "by": by, "reason": reason, "evidence": evidence or {}},
        )  # fmt: skip
    return rollout


def finish(
    registry: Registry,
    outcome: Literal["promoted", "rolled_back", "rejected", "stopped"],
    *,
    by: str,
    reason: str = "",
    evidence: dict[str, Any] | None = None,
    expect: Rollout | Literal["any"] | None = "any",
) -> Rollout:
    """End the rollout: `promoted` makes the challenger champion (if the champion is still the one
    it was compared with), the others leave the champion as it is."""
    with registry.locked():
        current = read_rollout(registry)
        _check_expected(current, expect)
        if current is None:
            raise RolloutConflict("no rollout is running")
        if outcome == "promoted":
            if registry.aliases().get("champion") != current.champion:
                raise RolloutConflict(
                    f"the champion changed to {registry.aliases().get('champion')} during the rollout "
                    f"(it was compared with {current.champion}): not promoted"
                )
            registry.set_alias_locked("champion", current.challenger)
        _write(registry, None)
        _append_history(
            registry,
            {"event": outcome, "challenger": current.challenger, "champion": current.champion,
             "stage": current.stage, "by": by, "reason": reason, "evidence": evidence or {}},
        )  # fmt: skip
    return current
