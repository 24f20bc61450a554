"""The request log's on-disk spool: every answered row is in a file before its answer leaves.

The writer keeps rows in memory until the database commits them; a process that is killed
(SIGKILL, the OOM killer, a crash) while the database is slow or down would lose them. So
`RequestLog.log` first appends the row to an append-only segment file here (one `write()` of one
JSON line, a few microseconds) and the writer marks rows done once committed. At the next
start, segments that no live process holds are replayed into the database and deleted; replay
is idempotent because inserts are ON CONFLICT DO NOTHING on the request id.

fsync policy: each row is written to the kernel before the answer is sent, so it survives the
death of the process. The segment is fsynced (`fdatasync`) by the writer at most every
`fsync_interval_s` (default 1 s), when a segment is closed and at shutdown; an OS crash or power
loss can therefore lose up to that interval of answered rows (like SQLite's `synchronous=NORMAL`).
`fsync_interval_s=0` syncs on every writer cycle (every batch), not per row.

Layout: `<directory>/seg-<start ns>-<pid>-<n>.jsonl`, each line a JSON array of the
`RequestRecord` fields in order. A process holds an exclusive `flock` on each segment it writes,
so router processes sharing a directory never replay (or delete) one another's live segments;
the kernel drops the lock when the process dies. When every row is committed the live segment
is truncated, so an idle spool is empty; during an outage a new segment starts every
`segment_rows` rows and each is deleted once all of its rows are committed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from router.store.db import StoreError
from router.store.records import RequestRecord

log = logging.getLogger(__name__)

SUFFIX = ".jsonl"


class SpoolError(StoreError):
    """The spool directory cannot be created or written."""


@dataclass
class _Segment:
    path: Path
    fd: int
    first: int  # sequence number of its first row
    end: int  # one past its last row


class Spool:
    """Append-only segment files for one database; owned by one `RequestLog`."""

    def __init__(self, directory: Path, *, fsync_interval_s: float = 1.0, segment_rows: int = 10_000) -> None:
        self.directory = Path(directory)
        self.fsync_interval_s = fsync_interval_s
        self.segment_rows = segment_rows
        self.failed = False  # a write failed: stop spooling, keep what is there
        self._segments: list[_Segment] = []
        self._appended = 0
        self._done = 0
        self._made = 0
        self._dirty = False
        self._last_sync = time.monotonic()
        self._orphan_fds: dict[Path, int] = {}
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            probe = self.directory / f".probe-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as err:
            raise SpoolError(f"request log spool {self.directory} is not writable: {err}") from err

    @property
    def pending_rows(self) -> int:
        """Rows appended and not yet marked done."""
        return self._appended - self._done

    # -- the router's own rows (event loop) ------------------------------------------------

    def append(self, records: Sequence[RequestRecord]) -> None:
        """Write rows to the live segment (to the kernel: safe once this returns, short of an
        OS crash). Raises OSError (disk full...); the caller then stops spooling."""
        if not records:
            return
        segment = self._live()
        data = "".join(json.dumps(list(r), separators=(",", ":")) + "\n" for r in records).encode()
        written = os.write(segment.fd, data)
        while written < len(data):  # short writes are rare on regular files, but legal
            written += os.write(segment.fd, data[written:])
        self._appended += len(records)
        segment.end = self._appended
        self._dirty = True

    def done(self, rows: int) -> None:
        """`rows` more rows (the oldest not done yet) are committed or settled: delete the
        segments that hold only such rows, and empty the live one when everything is done."""
        self._done = min(self._done + rows, self._appended)
        while len(self._segments) > 1 and self._segments[0].end <= self._done:
            self._drop(self._segments.pop(0))
        if (
            self._segments
            and self._done == self._appended
            and self._segments[-1].end > self._segments[-1].first
        ):
            live = self._segments[-1]
            os.ftruncate(live.fd, 0)  # O_APPEND: the next row goes to offset 0
            live.first = live.end = self._appended

    def sync_due(self) -> bool:
        """True (once) when rows were written since the last sync and the interval has passed;
        the caller then runs `sync()`, in a worker thread."""
        if not self._dirty or time.monotonic() - self._last_sync < self.fsync_interval_s:
            return False
        self._dirty = False
        self._last_sync = time.monotonic()
        return True

    def sync(self) -> None:
        """fdatasync the segments (it can take milliseconds: call it from a worker thread)."""
        for segment in list(self._segments):
            with contextlib.suppress(OSError, ValueError):  # closed meanwhile: deleted as done
                os.fdatasync(segment.fd)

    def close(self, *, keep: bool) -> int:
        """Sync and close; delete the segments unless `keep` (rows not committed: they are
        replayed at the next start). Returns the rows kept."""
        kept = self.pending_rows if keep else 0
        for segment in self._segments:
            if keep:
                os.fdatasync(segment.fd)
                os.close(segment.fd)  # releases the lock: the next start replays it
            else:
                self._drop(segment)
        self._segments = []
        return kept

    def _live(self) -> _Segment:
        if not self._segments or self._segments[-1].end - self._segments[-1].first >= self.segment_rows:
            if self._segments:
                os.fdatasync(self._segments[-1].fd)
            self._made += 1
            path = self.directory / f"seg-{time.time_ns()}-{os.getpid()}-{self._made}{SUFFIX}"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: nobody else holds it
            _sync_dir(self.directory)
            self._segments.append(_Segment(path, fd, self._appended, self._appended))
        return self._segments[-1]

    def _drop(self, segment: _Segment) -> None:
        segment.path.unlink(missing_ok=True)  # while locked: no replay can be reading it
        os.close(segment.fd)

    # -- segments left by processes that died (startup) -------------------------------------

    def orphans(self) -> Iterator[tuple[Path, list[RequestRecord]]]:
        """Segments no live process holds, oldest first, each with its rows; the caller
        stores the rows, then calls `release(path)`. A line that does not parse (a torn
        write at an OS crash) is skipped with a warning."""
        for path in sorted(self.directory.glob(f"seg-*{SUFFIX}"), key=_age):
            try:
                fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:  # another process replayed it meanwhile
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # a live router writes it
                os.close(fd)
                continue
            if not path.exists():  # replayed and deleted by another process before our lock
                os.close(fd)
                continue
            self._orphan_fds[path] = fd
            yield path, _read(path)

    def release(self, path: Path) -> None:
        """Delete a replayed orphan segment (its rows are in the database)."""
        fd = self._orphan_fds.pop(path)
        path.unlink(missing_ok=True)
        os.close(fd)
        _sync_dir(self.directory)

    def abandon(self, path: Path) -> None:
        """Keep an orphan segment for a later start (its replay did not finish)."""
        os.close(self._orphan_fds.pop(path))


def _age(path: Path) -> tuple[int, str]:
    parts = path.stem.split("-")
    try:
        return int(parts[1]), path.name
    except (IndexError, ValueError):
        return 0, path.name


def _read(path: Path) -> list[RequestRecord]:
    rows: list[RequestRecord] = []
    with path.open("rb") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(RequestRecord(*json.loads(line)))
            except (ValueError, TypeError) as err:
                log.warning("request log spool: %s line %d unreadable, skipped (%s)", path.name, number, err)
    return rows


def _sync_dir(directory: Path) -> None:
    """Make a created or deleted file name durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def spool_dir_for(database_url: str, configured: Path | None = None) -> Path | None:
    """Where the spool for `database_url` lives: `configured/<12 hex of the URL's hash>` (one
    directory per database, so rows are never replayed into another one), by default the
    SQLite file's name + `.spool` beside it, or ~/.local/state/switchboard/spool/<hash> for
    other databases. None for an in-memory SQLite database (nothing outlives the process)."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and configured is None:
        database = url.database or ""
        if not database or database == ":memory:" or database.startswith("file:"):
            return None
        path = Path(database).expanduser().absolute()
        return path.with_name(f"{path.name}.spool")
    root = (
        configured if configured is not None else Path.home() / ".local" / "state" / "switchboard" / "spool"
    )
    key = hashlib.sha256(url.render_as_string(hide_password=True).encode()).hexdigest()[:12]
    return Path(root).expanduser() / key
