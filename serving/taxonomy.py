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
# feedback examples a pending intent needs before `switchboard retrain` trains it (the default of
# its `--min-examples`; the review inbox shows progress towards it)
PENDING_MIN_EXAMPLES = 10
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$")


class TaxonomyError(ValueError):
    """A taxonomy change that cannot be made (name clash, unknown intent, bad name), in one line.

    `code` says which kind (`invalid_name`, `exists`, `unknown_intent`, `no_route`, `bad_file`) and
    `field` which input was wrong (`name`, `new_name`, `route`), for the admin API's errors."""

    def __init__(self, message: str, *, code: str = "invalid", field: str = "name") -> None:
        super().__init__(message)
        self.code = code
        self.field = field


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
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise TaxonomyError(f"{path}: not valid JSON ({err})", code="bad_file") from None
        if not isinstance(data, dict):
            raise TaxonomyError(f"{path}: expected a JSON object", code="bad_file")
        return cls(
            pending=dict(data.get("pending") or {}),
            retired=dict(data.get("retired") or {}),
            renames=dict(data.get("renames") or {}),
        )

    def copy(self) -> Changes:
        return Changes(
            {k: dict(v) for k, v in self.pending.items()},
            {k: dict(v) for k, v in self.retired.items()},
            dict(self.renames),
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
        """The route of an intent under the name feedback and the next model use for it."""
        served = self.served_name(name)
        if served is not None:
            return self.routes.get(served)
        if name in self.changes.pending:
            return self.changes.pending[name].get("route")
        return None

    def description_of(self, name: str) -> str:
        served = self.served_name(name)
        if served is not None:
            return self.descriptions.get(served, "")
        return str(self.changes.pending.get(name, {}).get("description", ""))

    def served_name(self, name: str) -> str | None:
        """The champion label `name` refers to: itself, or the label being renamed to it."""
        for old, new in self.changes.renames.items():
            if new == name and old in self.served_labels:
                return old
        return name if name in self.served_labels else None

    def is_pending(self, name: str) -> bool:
        return name in self.changes.pending and name not in self.served_labels

    def relabel(self) -> dict[str, str]:
        """Old name -> the name its examples carry in the next training data (renames of served
        intents and of pending ones), chains followed (a -> b -> c gives a -> c)."""
        out = {}
        for old in self.changes.renames:
            new, seen = old, {old}
            while new in self.changes.renames and self.changes.renames[new] not in seen:
                new = self.changes.renames[new]
                seen.add(new)
            if new != old:
                out[old] = new
        return out

    def dropped(self) -> set[str]:
        """Names whose examples the next training data leaves out: retired intents."""
        return set(self.changes.retired)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def check_name(name: str, field: str = "name") -> str:
    if not _NAME.match(name):
        raise TaxonomyError(
            f"invalid intent name {name!r}: letters, digits and _ . : - only, starting with a letter "
            "or digit, at most 200 characters",
            code="invalid_name",
            field=field,
        )
    return name


def _check_free(taxonomy: Taxonomy, name: str, field: str) -> None:
    if name in taxonomy.feedback_labels() or name in taxonomy.served_labels:
        status = next((i.status for i in taxonomy.intents if name in (i.name, i.renamed_to)), "served")
        raise TaxonomyError(f"intent {name!r} already exists ({status})", code="exists", field=field)


def add(changes: Changes, taxonomy: Taxonomy, name: str, route: str, description: str = "") -> None:
    """A new intent, pending until a retrain has enough examples of it."""
    check_name(name)
    if not route.strip():
        raise TaxonomyError(
            "an intent needs a route (the department its queries go to)", code="no_route", field="route"
        )
    _check_free(taxonomy, name, "name")
    # left over from an earlier retirement or rename of this name, already carried out: forget it
    changes.retired.pop(name, None)
    changes.renames.pop(name, None)
    for old in [o for o, n in changes.renames.items() if n == name]:
        del changes.renames[old]
    changes.pending[name] = {"route": route.strip(), "description": description.strip(), "added": now()}


def rename(changes: Changes, taxonomy: Taxonomy, old: str, new: str) -> None:
    """A pending intent is renamed at once; a served one when the next retrain relabels its
    examples and keeps its head row under the new name. Renaming back cancels a rename."""
    check_name(new, "new_name")
    if taxonomy.is_pending(old):
        _check_free(taxonomy, new, "new_name")
        changes.pending[new] = changes.pending.pop(old)
        # feedback already given under the old name is relabelled by the next retrain
        for o, n in list(changes.renames.items()):
            if n == old:
                changes.renames[o] = new
        changes.renames[old] = new
        return
    served = taxonomy.served_name(old)
    if served is None or served in changes.retired:
        raise TaxonomyError(f"no intent {old!r} to rename", code="unknown_intent")
    if new == served:  # back to the champion's name
        changes.renames.pop(served, None)
        return
    if new == old or changes.renames.get(served) == new:
        return
    _check_free(taxonomy, new, "new_name")
    changes.renames[served] = new


def retire(changes: Changes, taxonomy: Taxonomy, name: str) -> None:
    """A pending intent is dropped at once; a served one by the next retrain (its head row and
    examples go). Feedback may no longer name it."""
    if taxonomy.is_pending(name):
        del changes.pending[name]
        for o in [o for o, n in changes.renames.items() if n == name]:
            del changes.renames[o]
        return
    served = taxonomy.served_name(name)
    if served is None or served in changes.retired:
        raise TaxonomyError(f"no intent {name!r} to retire", code="unknown_intent")
    changes.renames.pop(served, None)
    changes.retired[served] = {"retired": now()}
