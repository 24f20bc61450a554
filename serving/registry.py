"""Model registry: a directory of numbered, immutable model versions plus movable aliases.

```
REGISTRY/
  versions/v0001/   a merged model dir (as `switchboard train` exports it) + switchboard-version.json
  versions/v0002/
  aliases.json      {"champion": "v0002", "challenger": "v0003", "history": ["v0001", "v0002"]}
  .lock             serialises writers (fcntl)
```

Crash safety: a version is copied into a temporary directory, its files and directories are
fsynced, and it appears by an atomic rename (the versions directory fsynced after it); `aliases.json`
is replaced atomically. A registration or promotion killed at any point, power loss included,
leaves the registry as it was (at worst a `.tmp-*` directory, ignored and swept by the next writer).

A version's files do not change once registered, with two additions that say how to serve it,
never what it serves: its lineage (`serving.lineage`) and its ONNX export (`model.onnx`,
`model.int8.onnx`, `onnx.json`: `switchboard models export-onnx VERSION`, each file replaced
atomically).

Integrity: a version is named only as `v0003`, `3`, `champion` or `challenger` (never a path, so
nobody reaches a directory outside `versions/` through the registry); an alias is moved only to a
version that exists (rollback checks the previous champion is still there before writing); a
corrupt `aliases.json` or version file is a `RegistryCorrupt` error naming the file, never a crash
or a silent reset.
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

from serving.files import fsync_dir as _fsync_dir
from serving.files import fsync_tree as _fsync_tree
from serving.files import write_json_atomic
from serving.model_dir import FEWSHOT_FILE, VERSION_FILE, read_fewshot, read_model_info
from serving.taxonomy import TAXONOMY_FILE, Changes, Taxonomy

ALIASES = ("champion", "challenger")
_VERSION_RE = re.compile(r"^v(\d{4,})$")


class RegistryError(ValueError):
    """A registry operation that cannot be done, with a one-line reason."""


class RegistryCorrupt(RegistryError):
    """A registry file that cannot be read as the registry wrote it (named in the message)."""


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


def _read_json_object(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except OSError as err:
        raise RegistryCorrupt(f"cannot read {what} {path}: {err.strerror or err}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RegistryCorrupt(f"{what} {path} is corrupt (not valid JSON: {err})") from None
    if not isinstance(data, dict):
        raise RegistryCorrupt(f"{what} {path} is corrupt (a JSON object expected, not {type(data).__name__})")
    return data


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
                found.append(self._version(path.name))
        return found

    def get(self, ref: str) -> ModelVersion:
        """A version by name (`v0003`), number (`3`) or alias (`champion`); never a path."""
        if ref in ALIASES:
            name = self.aliases().get(ref)
            if name is None:
                raise RegistryError(f"no model is aliased {ref!r} in {self.root}")
        elif ref.isascii() and ref.isdigit():
            name = f"v{int(ref):04d}"
        elif _VERSION_RE.match(ref):
            name = ref
        else:
            raise RegistryError(
                f"not a model version: {ref!r} (use a version name like v0003, its number, "
                f"or {' / '.join(ALIASES)}; paths are not accepted)"
            )
        if not (self.versions_dir / name / VERSION_FILE).is_file():
            shown = repr(ref) if name == ref else f"{ref!r} ({name})"
            raise RegistryError(f"no model version {shown} in {self.root}")
        return self._version(name)

    def _version(self, name: str) -> ModelVersion:
        path = self.versions_dir / name
        return ModelVersion(name, path, _read_json_object(path / VERSION_FILE, "version file"))

    def aliases(self) -> dict[str, Any]:
        """`aliases.json` as written; `RegistryCorrupt` when it is not (an alias that names no
        well-formed version included), so no reader follows it and no writer overwrites it."""
        if not self.aliases_file.exists():
            return {}
        aliases = _read_json_object(self.aliases_file, "aliases file")
        for alias in ALIASES:
            value = aliases.get(alias)
            if value is not None and not (isinstance(value, str) and _VERSION_RE.match(value)):
                raise RegistryCorrupt(
                    f"aliases file {self.aliases_file} is corrupt "
                    f"({alias!r} is {value!r}, not a version name)"
                )
        history = aliases.get("history", [])
        if not isinstance(history, list) or not all(
            isinstance(v, str) and _VERSION_RE.match(v) for v in history
        ):
            raise RegistryCorrupt(
                f"aliases file {self.aliases_file} is corrupt ('history' must be a list of version names)"
            )
        return aliases

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

    def locked(self) -> contextlib.AbstractContextManager[None]:
        """The writers' lock, for a change that spans files (`serving.rollout`)."""
        return self._locked()

    def set_alias_locked(self, alias: str, version: str) -> None:
        """Move an alias while the caller holds `locked()` (the version must exist)."""
        self.get(version)
        self._set_alias(alias, version)

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
            _fsync_tree(tmp)  # the weights are on disk before the version can appear
            os.rename(tmp, self.versions_dir / version)
            _fsync_dir(self.versions_dir)  # and the rename itself survives a power loss
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
        self._write_aliases(aliases)

    def _write_aliases(self, aliases: dict[str, Any]) -> None:
        write_json_atomic(self.aliases_file, aliases)
        _fsync_dir(self.root)

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

    def rollback_target(self) -> tuple[str | None, ModelVersion]:
        """(the champion now, the version a rollback would make champion), without changing
        anything; `RegistryError` when there is no predecessor or it is no longer there."""
        aliases = self.aliases()
        history: list[str] = list(aliases.get("history", []))
        if not history:
            raise RegistryError("nothing to roll back to: the champion has no predecessor")
        previous = history[-1]
        if not (self.versions_dir / previous / VERSION_FILE).is_file():
            raise RegistryError(
                f"cannot roll back: the previous champion {previous} is missing from {self.versions_dir} "
                f"(deleted?); the champion stays {aliases.get('champion')}"
            )
        return aliases.get("champion"), self._version(previous)

    def rollback(self, *, expected_champion: str | None = None) -> ModelVersion:
        """The previous champion becomes champion again. Checked before anything is written:
        the previous version must still exist, and with `expected_champion` the champion must
        still be that one (a router that loaded the target first commits only what it loaded)."""
        with self._locked():
            champion, target = self.rollback_target()
            if expected_champion is not None and champion != expected_champion:
                raise RegistryError(
                    f"the champion changed to {champion} meanwhile (expected {expected_champion}); "
                    "nothing rolled back"
                )
            aliases = self.aliases()
            history: list[str] = list(aliases.get("history", []))
            history.pop()
            aliases["champion"] = target.version
            aliases["history"] = history
            self._write_aliases(aliases)
        return target
