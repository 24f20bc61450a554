"""What the request-log writer does with a database error: retry it, or isolate the row.

Two kinds of failure reach the writer, and they need opposite treatment:

- The database is unavailable (connection lost or refused, server shutting down, a standby that
  is read-only after a failover, a lock or serialization conflict, disk full): nothing is wrong
  with the rows, so the whole batch is retried with backoff until the database is back.
- The database rejects a row (a value it cannot store: a lone surrogate, a NUL byte in a
  PostgreSQL text column, NaN in a PostgreSQL `json` column, a broken constraint): retrying will
  never help. The writer bisects the batch to find the row, stores a repaired copy of it
  (`repaired`), and spills it only when even that is refused.

The classification errs toward retrying: an error that is not recognisably about the data is
treated as unavailability, because a wrongly retried error only holds the backlog (visible, and
bounded by `log_queue_max`), while a wrongly isolated batch would be spilled row by row.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError

# SQLSTATE classes of PostgreSQL errors that are about the data: 22 data exception (invalid
# text representation, NUL, out of range), 23 integrity constraint violation.
_DATA_SQLSTATE_CLASSES = ("22", "23")
_BAD_CHARS = re.compile("[\x00\ud800-\udfff]")  # NUL and lone surrogates
REPLACEMENT = "\ufffd"


def is_transient(err: BaseException) -> bool:
    """True when `err` says the database is unavailable (retry), False when it rejects the data.

    Transient: every DBAPI error that is not a data or integrity error, e.g. SQLAlchemy's
    `OperationalError` (SQLite "database is locked", psycopg `AdminShutdown`, connection refused
    or lost) and `InternalError` (psycopg `ReadOnlySqlTransaction` on a demoted primary), and any
    error SQLAlchemy flags as an invalidated connection. Not transient: `DataError`,
    `IntegrityError`, SQLSTATE classes 22 / 23, and errors raised while binding a value
    (`UnicodeEncodeError` for a lone surrogate, `TypeError`, `ValueError`).
    """
    if isinstance(err, DBAPIError):
        if err.connection_invalidated:
            return True
        if isinstance(err, DataError | IntegrityError):
            return False
        sqlstate = getattr(err.orig, "sqlstate", None) or ""
        return not sqlstate.startswith(_DATA_SQLSTATE_CLASSES)
    if isinstance(err, StatementError):  # a non-DBAPI error while executing: about a value
        return False
    return isinstance(err, ConnectionError | TimeoutError)  # raw socket trouble, if it leaks


def repaired(item: Any) -> Any:
    """A copy of a log item (`RequestRecord` or `FeedbackItem`) with what databases refuse
    replaced: NUL and lone surrogates in strings become U+FFFD, non-finite floats inside JSON
    values (`meta`, `alternatives`) and in nullable float columns become None. Returns the item
    itself when there is nothing to repair."""
    if dataclasses.is_dataclass(item) and not isinstance(item, type):
        return _repaired_feedback(item)
    if hasattr(item, "_replace"):  # RequestRecord (a NamedTuple)
        return _repaired_record(item)
    return item


def _repaired_feedback(item: Any) -> Any:
    changes = {
        f.name: fixed
        for f in dataclasses.fields(item)
        if isinstance(value := getattr(item, f.name), str) and (fixed := _text(value)) != value
    }
    return dataclasses.replace(item, **changes) if changes else item


def _repaired_record(item: Any) -> Any:
    changes: dict[str, Any] = {}
    for name, value in item._asdict().items():
        fixed: Any
        if name in ("meta", "alternatives"):
            fixed = _json(value)
        elif name == "top2_confidence" and isinstance(value, float) and not math.isfinite(value):
            fixed = None
        elif isinstance(value, str):
            fixed = _text(value)
        else:
            continue
        if not _same(fixed, value):
            changes[name] = fixed
    return item._replace(**changes) if changes else item


def repaired_fields(before: Any, after: Any) -> list[str]:
    """Names of the fields `repaired` changed (for the log line; never the values)."""
    if hasattr(before, "_asdict"):
        old, new = before._asdict(), after._asdict()
    else:
        old, new = vars(before), vars(after)
    return [name for name in old if name != "future" and not _same(old[name], new[name])]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    try:
        return bool(a == b) and _has_nan(a) == _has_nan(b)
    except Exception:
        return False


def _has_nan(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_nan(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_has_nan(v) for v in value)
    return False


def _text(value: str) -> str:
    return _BAD_CHARS.sub(REPLACEMENT, value)


def _json(value: Any) -> Any:
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {_text(k) if isinstance(k, str) else k: _json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json(v) for v in value]
    return value
