"""On-disk cache of LLM responses, so that rerunning a few-shot evaluation costs nothing.

One JSON file per request under `DIR/ab/abcdef...json`, named by the sha256 of everything that
decides the answer (model, the full messages, response_format, sampling parameters). Plain files
because they need no locking: each write goes to a temporary file and is renamed into place,
which is atomic, so concurrent writers and a crash mid-write never leave a torn entry. The entry
keeps the original usage and latency: a cached answer still reports what it cost.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

__all__ = ["CachedResponse", "ResponseCache", "default_cache_dir", "request_key"]


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "switchboard" / "fewshot"


def request_key(request: dict[str, Any]) -> str:
    """sha256 of the request's canonical JSON (sorted keys, no whitespace)."""
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class CachedResponse:
    """What a response left behind: the answer, its token usage and how long it took."""

    content: str | None
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    latency_s: float
    model: str  # the model the server says answered (a dated snapshot for OpenAI)
    attempts: int = 1  # calls spent on it (parse retries count)


class ResponseCache:
    """A directory of cached responses; `None` as directory turns it into a no-op."""

    def __init__(self, directory: str | Path | None) -> None:
        self.directory = Path(directory) if directory is not None else None
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        assert self.directory is not None
        return self.directory / key[:2] / f"{key}.json"

    def get(self, key: str) -> CachedResponse | None:
        if self.directory is None:
            return None
        try:
            raw = json.loads(self._path(key).read_text())
            return CachedResponse(**raw["response"])
        except (OSError, ValueError, KeyError, TypeError):
            return None  # missing or unreadable: ask again

    def put(self, key: str, response: CachedResponse, about: dict[str, Any] | None = None) -> None:
        """Store `response`; `about` (e.g. model and query) is kept beside it for a human reader,
        not the whole prompt, which would make each entry kilobytes of repeated examples."""
        if self.directory is None:
            return
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        entry = {"about": about or {}, "response": asdict(response)}
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(entry, fh, ensure_ascii=False)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
