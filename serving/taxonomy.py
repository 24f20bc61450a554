"""The intent taxonomy beside the registry's versions: which intents exist, where each goes, and
which are waiting to be trained.

The champion's label map says which intents are *served*; `REGISTRY/taxonomy.json` records the
changes people asked for since, which the next retrain carries out:

```
{"pending": {"card_swallowed": {"route": "cards", "description": "...", "added": "2026-11-30T..."}},
 "retired": {"old_intent": {"retired": "2026-11-30T..."}},
 "renames": {"old_name": "new_name"}}
```

- *pending*: added (with its route and description), not in the champion yet. Feedback may name
  it; `switchboard retrain` trains it once it has enough examples, growing the head.
- *retired*: still in the champion until the next retrain, which drops it from the head and its
  examples from the data. Feedback may no longer name it.
- *renames*: the next retrain relabels the old name's examples and keeps its head row under the
  new name. Feedback names the new name.

Statuses are derived from the champion on every read, so promoting or rolling back a version
(which changes the champion) never leaves the file out of step: an intent the champion now
serves is *served*, whatever the file says.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from serving.files import write_json_atomic

Status = Literal["served", "pending", "retiring", "renaming"]
TAXONOMY_FILE = "taxonomy.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$")


class TaxonomyError(ValueError):
    """A taxonomy change that cannot be made (name clash, unknown intent, bad name), in one line."""


@dataclass(frozen=True)
class Intent:
    name: str
    route: str | None
    description: str
    status: Status
    renamed_to: str | None = None  # status renaming: the name the next retrain gives it


@dataclass
class Changes:
    """The contents of `taxonomy.json`."""

    pending: dict[str, dict[str, Any]] = field(default_factory=dict)
    retired: dict[str, dict[str, Any]] = field(default_factory=dict)
    renames: dict[str, str] = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path) -> Changes:
        if not path.is_file():
            return cls()
        data = json.loads(path.read_text())
        return cls(
            pending=dict(data.get("pending") or {}),
            retired=dict(data.get("retired") or {}),
            renames=dict(data.get("renames") or {}),
        )

    def write(self, path: Path) -> None:
        write_json_atomic(path, {"pending": self.pending, "retired": self.retired, "renames": self.renames})


@dataclass(frozen=True)
class Taxonomy:
    """The champion's intents merged with the recorded changes."""

    served_labels: tuple[str, ...]  # the champion's labels, in head order
    routes: dict[str, str]  # the champion's route map (intent -> route)
    descriptions: dict[str, str]
    changes: Changes

    @property
    def intents(self) -> list[Intent]:
        out = []
        for label in self.served_labels:
            if label in self.changes.retired:
                status: Status = "retiring"
            elif label in self.changes.renames:
                status = "renaming"
            else:
                status = "served"
            out.append(
                Intent(
                    label,
                    self.routes.get(label),
                    self.descriptions.get(label, ""),
                    status,
                    self.changes.renames.get(label),
                )
            )
        for name, entry in sorted(self.changes.pending.items()):
            if name not in self.served_labels:
                out.append(Intent(name, entry.get("route"), entry.get("description", ""), "pending"))
        return out

    @property
    def pending(self) -> list[Intent]:
        return [i for i in self.intents if i.status == "pending"]

    def feedback_labels(self) -> list[str]:
        """The intents feedback may name: served ones (under their new names when renamed) and
        pending ones; not those being retired."""
        names = []
        for intent in self.intents:
            if intent.status == "retiring":
                continue
            names.append(intent.renamed_to or intent.name)
        return names

    def target_labels(self, trainable: set[str]) -> list[str]:
        """The next model's labels: served ones kept in head order (renamed, retired left out), then
        the pending intents in `trainable`, in name order."""
        kept = [
            self.changes.renames.get(label, label)
            for label in self.served_labels
            if label not in self.changes.retired
        ]
        return kept + [i.name for i in self.pending if i.name in trainable]

    def route_of(self, name: str) -> str | None:
        if name in self.changes.pending:
            return self.changes.pending[name].get("route")
        old = next((o for o, n in self.changes.renames.items() if n == name), name)
        return self.routes.get(old)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise TaxonomyError(
            f"invalid intent name {name!r}: letters, digits and _ . : - only, starting with a letter "
            "or digit, at most 200 characters"
        )
    return name


def add(changes: Changes, taxonomy: Taxonomy, name: str, route: str, description: str = "") -> None:
    check_name(name)
    if not route.strip():
        raise TaxonomyError("an intent needs a route (the department its queries go to)")
    if name in taxonomy.feedback_labels() or name in taxonomy.served_labels:
        raise TaxonomyError(f"intent {name!r} already exists")
    changes.pending[name] = {"route": route.strip(), "description": description.strip(), "added": now()}


def rename(changes: Changes, taxonomy: Taxonomy, old: str, new: str) -> None:
    check_name(new)
    if new in taxonomy.feedback_labels() or new in taxonomy.served_labels:
        raise TaxonomyError(f"intent {new!r} already exists")
    if old in changes.pending:
        changes.pending[new] = changes.pending.pop(old)
        return
    if old not in taxonomy.served_labels or old in changes.retired:
        raise TaxonomyError(f"no intent {old!r} to rename")
    changes.renames[old] = new


def retire(changes: Changes, taxonomy: Taxonomy, name: str) -> None:
    if name in changes.pending:
        del changes.pending[name]
        return
    served_name = next((o for o, n in changes.renames.items() if n == name), name)
    if served_name not in taxonomy.served_labels or served_name in changes.retired:
        raise TaxonomyError(f"no intent {name!r} to retire")
    changes.renames.pop(served_name, None)
    changes.retired[served_name] = {"retired": now()}
