"""Model registry: a directory of numbered, immutable model versions plus movable aliases.

```
REGISTRY/
  versions/v0001/   a merged model dir (as `switchboard train` exports it) + switchboard-version.json
  versions/v0002/
  aliases.json      {"champion": "v0002", "challenger": "v0003", "history": ["v0001", "v0002"]}
  .lock             serialises writers (fcntl)
```

Crash safety: a version is copied into a temporary directory and appears by an atomic rename;
`aliases.json` is replaced atomically. A registration or promotion killed at any point leaves the
registry as it was (at worst a `.tmp-*` directory, ignored and swept by the next writer).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serving.files import write_json_atomic
from serving.model_dir import FEWSHOT_FILE, VERSION_FILE, read_fewshot, read_model_info
from serving.taxonomy import TAXONOMY_FILE, Changes, Taxonomy

ALIASES = ("champion", "challenger")
_VERSION_RE = re.compile(r"^v(\d{4,})$")


class RegistryError(ValueError):
    """A registry operation that cannot be done, with a one-line reason."""


@dataclass(frozen=True)
class ModelVersion:
    version: str
    path: Path
    meta: dict[str, Any]

    @property
    def metrics(self) -> dict[str, Any]:
        return dict(self.meta.get("metrics", {}))


def _check_alias(alias: str | None) -> None:
    if alias is not None and alias not in ALIASES:
        raise RegistryError(f"unknown alias {alias!r} (use one of {', '.join(ALIASES)})")


def _summary(metrics: dict[str, Any]) -> dict[str, Any]:
    """Headline numbers of a model dir's metrics.json, for listings and the gate."""
    out: dict[str, Any] = {}
    for split in ("validation", "test"):
        if split in metrics:
            out[split] = {k: metrics[split].get(k) for k in ("accuracy", "macro_f1", "n")}
    if "oos_threshold" in metrics:
        out["oos_threshold"] = metrics["oos_threshold"]["threshold"]
    return out


class Registry:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.versions_dir = self.root / "versions"
        self.aliases_file = self.root / "aliases.json"

    # -- reading ---------------------------------------------------------------------------
    def versions(self) -> list[ModelVersion]:
        if not self.versions_dir.is_dir():
            return []
        found = []
        for path in sorted(self.versions_dir.iterdir()):
            if _VERSION_RE.match(path.name) and (path / VERSION_FILE).is_file():
                found.append(ModelVersion(path.name, path, json.loads((path / VERSION_FILE).read_text())))
        return found

    def get(self, ref: str) -> ModelVersion:
        """A version by name (`v0003`), number (`3`) or alias (`champion`)."""
        name = self.aliases().get(ref) if ref in ALIASES else ref
        if name is None:
            raise RegistryError(f"no model is aliased {ref!r} in {self.root}")
        if name.isdigit():
            name = f"v{int(name):04d}"
        path = self.versions_dir / name
        if not (path / VERSION_FILE).is_file():
            raise RegistryError(f"no model version {ref!r} in {self.root}")
        return ModelVersion(name, path, json.loads((path / VERSION_FILE).read_text()))

    def aliases(self) -> dict[str, Any]:
        if not self.aliases_file.is_file():
            return {}
        return dict(json.loads(self.aliases_file.read_text()))

    def champion_path(self) -> Path:
        return self.get("champion").path

    def taxonomy(self) -> Taxonomy:
        """The champion's intents (served) merged with the changes recorded since (pending,
        retiring, renaming). Without a champion, every recorded intent is pending."""
        labels: tuple[str, ...] = ()
        routes: dict[str, str] = {}
        descriptions: dict[str, str] = {}
        if self.aliases().get("champion"):
            path = self.champion_path()
            info = read_model_info(path)
            labels, routes = info.labels, dict(info.routes)
            if (path / FEWSHOT_FILE).is_file():
                descriptions = read_fewshot(path / FEWSHOT_FILE).descriptions
        return Taxonomy(labels, routes, descriptions, Changes.read(self.root / TAXONOMY_FILE))

    def change_taxonomy(self, change: Callable[[Changes, Taxonomy], None]) -> Taxonomy:
        """Apply `change(changes, current)` under the registry lock and save it atomically;
        returns the new taxonomy. `change` raises `TaxonomyError` to refuse."""
        with self._locked():
            current = self.taxonomy()
            changes = current.changes.copy()  # `current` keeps describing the state before
            change(changes, current)
            changes.write(self.root / TAXONOMY_FILE)
        return self.taxonomy()

    # -- writing ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _next_version(self) -> str:
        numbers = [int(m.group(1)) for p in self.versions_dir.iterdir() if (m := _VERSION_RE.match(p.name))]
        return f"v{max(numbers, default=0) + 1:04d}"

    def register(
        self, model_dir: str | Path, *, parent: str | None = None, alias: str | None = None, note: str = ""
    ) -> ModelVersion:
        """Copy an exported model dir in as the next version (atomically); optionally alias it."""
        src = Path(model_dir)
        if not (src / "config.json").is_file():
            raise RegistryError(f"not a model directory (no config.json): {src}")
        _check_alias(alias)
        metrics = json.loads((src / "metrics.json").read_text()) if (src / "metrics.json").is_file() else {}
        with self._locked():
            for stale in self.versions_dir.glob(".tmp-*"):
                shutil.rmtree(stale, ignore_errors=True)
            version = self._next_version()
            tmp = Path(tempfile.mkdtemp(dir=self.versions_dir, prefix=".tmp-"))
            shutil.copytree(src, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns("checkpoints"))
            meta = {
                "version": version,
                "parent": parent,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "source": str(src.resolve()),
                "dataset": metrics.get("training", {}).get("dataset"),
                "dataset_fingerprint": metrics.get("training", {}).get("dataset_fingerprint"),
                "metrics": _summary(metrics),
                "note": note,
            }
            write_json_atomic(tmp / VERSION_FILE, meta)
            os.rename(tmp, self.versions_dir / version)
            if alias is not None:
                self._set_alias(alias, version)
        return self.get(version)

    def _set_alias(self, alias: str, version: str) -> None:
        _check_alias(alias)
        aliases = self.aliases()
        history: list[str] = list(aliases.get("history", []))
        if alias == "champion" and aliases.get("champion") not in (None, version):
            history.append(aliases["champion"])
        aliases[alias] = version
        aliases["history"] = history
        if alias == "champion" and aliases.get("challenger") == version:
            aliases.pop("challenger")
        write_json_atomic(self.aliases_file, aliases)

    def promote(self, ref: str) -> ModelVersion:
        """Make a version (or the challenger) the champion; the old champion goes to history."""
        target = self.get(ref)
        with self._locked():
            self._set_alias("champion", target.version)
        return target

    def promote_if_champion(self, ref: str, expected_champion: str) -> bool:
        """Promote `ref` only if the champion is still `expected_champion` (checked and changed
        under the lock): a retrain must not replace a champion its gate never compared against."""
        target = self.get(ref)
        with self._locked():
            if self.aliases().get("champion") != expected_champion:
                return False
            self._set_alias("champion", target.version)
        return True

    @contextlib.contextmanager
    def retrain_lock(self) -> Iterator[None]:
        """Held for a whole retrain; a second one refuses to start instead of waiting (it would
        train against a champion that is about to change)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".retrain.lock", "a+") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.seek(0)
                holder = lock.read().strip() or "another process"
                raise RegistryError(f"a retrain is already running on {self.root} ({holder})") from None
            lock.seek(0)
            lock.truncate()
            lock.write(f"pid {os.getpid()}, started {time.strftime('%Y-%m-%dT%H:%M:%S')}")
            lock.flush()
            try:
                yield
            finally:
                lock.truncate(0)
                fcntl.flock(lock, fcntl.LOCK_UN)

    def rollback(self) -> ModelVersion:
        """The previous champion becomes champion again."""
        with self._locked():
            aliases = self.aliases()
            history: list[str] = list(aliases.get("history", []))
            if not history:
                raise RegistryError("nothing to roll back to: the champion has no predecessor")
            previous = history.pop()
            aliases["champion"] = previous
            aliases["history"] = history
            write_json_atomic(self.aliases_file, aliases)
        return self.get(previous)
