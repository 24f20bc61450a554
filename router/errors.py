"""Every error the API returns is JSON `{detail, errors: [{field, message, type, allowed?}]}`.

`detail` is one line a person can read; `errors` names each offending field (`text`,
`texts[3]`, `body` for unparseable JSON, `Idempotency-Key` for a header). Unexpected
exceptions are logged with their traceback here and answered with a bare 500, so no
traceback or internal message ever reaches a client.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An answer other than success, raised from handlers and dependencies."""

    def __init__(
        self,
        status: int,
        detail: str,
        errors: Sequence[dict[str, Any]] = (),
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = list(errors)
        self.headers = headers


def field_error(
    field: str, message: str, type_: str, *, status: int = 422, allowed: list[Any] | None = None
) -> ApiError:
    entry: dict[str, Any] = {"field": field, "message": message, "type": type_}
    if allowed is not None:
        entry["allowed"] = allowed
    return ApiError(status, f"{field}: {message}", [entry])


def unavailable(detail: str, retry_after_s: int) -> ApiError:
    return ApiError(503, detail, headers={"Retry-After": str(retry_after_s)})


def timed_out(seconds: float) -> ApiError:
    return ApiError(504, f"request timed out after {seconds:g} s")


def error_body(detail: str, errors: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    return {"detail": detail, "errors": list(errors)}


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _unexpected)


async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
    return JSONResponse(error_body(exc.detail, exc.errors), exc.status, headers=exc.headers)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    if exc.status_code == 400 and exc.detail == _FASTAPI_BODY_ERROR:
        # a body json cannot read although it is JSON text: nested deeper than the parser's
        # recursion limit, or a number too long to convert; a 422 naming the body, like bad JSON
        cause = exc.__cause__
        message = (
            "JSON nested too deeply"
            if isinstance(cause, RecursionError)
            else f"unreadable JSON ({type(cause).__name__ if cause else 'parse error'})"
        )
        errors = [{"field": "body", "message": message, "type": "json_invalid"}]
        return JSONResponse(error_body(f"body: {message}", errors), 422)
    if exc.status_code == 405:  # Allow names every method of the path, not one route's
        allowed = _methods_for(request)
        detail = f"method {request.method} not allowed here; allowed: {', '.join(allowed)}"
        return JSONResponse(error_body(detail), 405, headers={"Allow": ", ".join(allowed)})
    return JSONResponse(error_body(str(exc.detail)), exc.status_code, headers=exc.headers)


def _methods_for(request: Request) -> list[str]:
    """The methods some route of the app answers at this request's path."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        if match != Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


_FASTAPI_BODY_ERROR = "There was an error parsing the body"


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(error_body("internal server error"), 500)


async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    errors = [_field_error(e) for e in exc.errors()]
    first = errors[0] if errors else {"field": "body", "message": "invalid request"}
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return JSONResponse(error_body(f"{first['field']}: {first['message']}{more}", errors), 422)


def _field_error(error: Any) -> dict[str, Any]:
    """Pydantic/FastAPI error -> {field, message, type}, in words a client developer expects."""
    loc = tuple(error.get("loc") or ())
    kind = str(error.get("type", "invalid"))
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    if kind == "json_invalid":
        position = loc[1] if len(loc) > 1 else "?"
        reason = (error.get("ctx") or {}).get("error", "not valid JSON")
        return {
            "field": "body",
            "message": f"invalid JSON at position {position}: {reason}",
            "type": kind,
        }
    if loc[:1] == ("body",) and len(loc) == 1:
        if kind == "missing":
            message = "a JSON object body is required"
        return {"field": "body", "message": message, "type": kind}
    if loc[:1] == ("header",) and len(loc) > 1:
        field = "-".join(p.capitalize() for p in str(loc[1]).replace("_", "-").split("-"))
        return {"field": field, "message": message, "type": kind}
    if kind == "extra_forbidden":
        message = "unknown field"
    elif kind == "missing":
        message = "field required"
    where = loc[1:] if loc[:1] in {("body",), ("query",), ("path",)} else loc
    return {"field": _dotted(where), "message": message, "type": kind}


def _dotted(loc: Sequence[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"
