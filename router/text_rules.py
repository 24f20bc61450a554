"""What a string the router stores may contain, and what a query text must contain.

Every string that reaches the request log or the feedback table must be storable by both
stores: SQLite cannot encode a lone surrogate (`UnicodeEncodeError` in the driver), PostgreSQL
rejects NUL bytes in text and in JSON. Control characters other than tab, newline and carriage
return are never part of a customer's message either. So:

- *storable*: no C0/C1 control character except `\\t \\n \\r`, no NUL, no lone surrogate;
- *a query text*: storable, and at least one visible character (not only whitespace, soft
  hyphens, zero-width or bidi formatting characters).

The rules are published in the OpenAPI schema as regular expressions (`STORABLE_PATTERN`,
`TEXT_PATTERN`, which a client or a fuzzer can generate from) and checked here with two linear
scans, not with the published pattern: `^A*VA*$` backtracks quadratically on hostile input.
"""

from __future__ import annotations

import math
import re

# code points no stored string may contain (regex class bodies, JSON-Schema/ECMA compatible)
_CONTROL = r"\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f"
_FORBIDDEN = _CONTROL + r"\ud800-\udfff"
# characters that show nothing: whitespace, soft hyphen, zero-width, joiners, bidi controls, BOM
_INVISIBLE = (
    r"\s\u00ad\u034f\u061c\u115f\u1160\u180e\u200b-\u200f\u2028-\u202f\u205f-\u2064"
    r"\u2066-\u206f\u3000\u3164\ufeff\uffa0"
)

# Published without the surrogate range: a lone surrogate cannot be written in UTF-8, JSON
# Schema tools reject the range, and a JSON text carries one only as an escape (refused all the same).
STORABLE_PATTERN = f"^[^{_CONTROL}]*$"
TEXT_PATTERN = f"^[^{_CONTROL}]*[^{_CONTROL}{_INVISIBLE}][^{_CONTROL}]*$"

_FORBIDDEN_RE = re.compile(f"[{_FORBIDDEN}]")
_VISIBLE_RE = re.compile(f"[^{_FORBIDDEN}{_INVISIBLE}]")


def storable_problem(value: str) -> str | None:
    """Why `value` cannot be stored (one phrase), or None."""
    bad = _FORBIDDEN_RE.search(value)
    if bad is None:
        return None
    char = bad.group()
    what = "a lone surrogate" if 0xD800 <= ord(char) <= 0xDFFF else "a control character"
    return f"contains {what} (U+{ord(char):04X}) at position {bad.start()}"


def text_problem(value: str) -> str | None:
    """Why `value` is not a routable query text (one phrase), or None."""
    problem = storable_problem(value)
    if problem is not None:
        return problem
    if _VISIBLE_RE.search(value) is None:
        return "must contain a visible character (not only whitespace or invisible characters)"
    return None


def number_problem(value: float) -> str | None:
    """JSON has no NaN or Infinity, and PostgreSQL's json type refuses them."""
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number (not NaN or Infinity)"
    return None
