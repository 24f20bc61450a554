"""`/review`: the review inbox, a server-rendered page where support leads label the queries the
model is unsure about (the queue of `GET /v1/review`), without writing JSON.

Off unless `review_ui` is set (404). Every page needs a session (`router.web.sessions`): a GET
without one is redirected to the sign-in page, a POST without one, or without the session's
CSRF token, is refused (403). Labels are stored through `POST /v1/feedback`'s own path
(`router.routes.feedback.check_intent` / `record_feedback`) with the reviewer as `source`.

*Proposed intents* (`/review/proposals`, `/review/proposals/{id}`) show what intent discovery
found in the queries the router could not route (`switchboard intents discover`), and take the
reviewer's decision on each: name it (a pending intent), confirm or remove its queries, merge it
into an intent, dismiss it. Each is the function `/v1/discover` runs (router.routes.discover).

Customer texts appear only in page bodies: every answer is `Cache-Control: no-store`, forms are
posted (request ids and intent names in bodies, never texts in a URL), so an access log shows
paths and filter values only. The pages work without JavaScript (post, redirect, get); the small
vendored script (`static/review.js`) adds keyboard shortcuts and labels in place, without a reload.
"""

from __future__ import annotations

import asyncio
import re
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs, urlencode

import jinja2
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import ValidationError

from router.errors import ApiError
from router.routes import admin, discover
from router.routes.feedback import check_intent, record_feedback
from router.runtime import Runtime
from router.schemas import (
    AddIntentRequest,
    MembersRequest,
    MembersResponse,
    MergeProposalRequest,
    NameProposalRequest,
)
from router.settings import Settings
from router.store import feedback_item
from router.store.models import NAME_LENGTH
from router.text_rules import storable_problem
from router.web import views
from router.web.sessions import COOKIE, LOGIN_COOKIE, LOGIN_COOKIE_S, Session, SessionKeeper
from router.web.views import MEMBERS_SHOWN, PROPOSAL_FILTERS, Filters
from serving.taxonomy import PENDING_MIN_EXAMPLES

HERE = Path(__file__).parent
SKIPS_KEPT = 5000  # skipped request ids remembered per reviewer (this process)
NO_STORE = {
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'",
}
PROPOSAL_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # a proposal's id (a UUID) in a path
MAX_FIELDS = 100  # fields a form post may have; a proposal's member form adds one a query shown
STATIC = {"review.css": "text/css; charset=utf-8", "review.js": "text/javascript; charset=utf-8"}

router = APIRouter(prefix="/review", include_in_schema=False)


@dataclass
class Inbox:
    """The inbox's state on `app.state.review_inbox`: the session key, each reviewer's skips."""

    sessions: SessionKeeper
    skipped: dict[str, OrderedDict[str, None]] = field(default_factory=dict)
    templates: jinja2.Environment = field(default_factory=lambda: _templates())

    def skips(self, reviewer: str) -> OrderedDict[str, None]:
        return self.skipped.setdefault(reviewer, OrderedDict())

    def skip(self, reviewer: str, request_id: str) -> None:
        skips = self.skips(reviewer)
        skips[request_id] = None
        while len(skips) > SKIPS_KEPT:
            skips.popitem(last=False)


def _templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every text is a customer's: escaped, always
        undefined=jinja2.StrictUndefined,
    )
    env.filters["pct"] = lambda value, digits=0: f"{float(value) * 100:.{digits}f}%"
    return env


def install_review_inbox(app: FastAPI, settings: Settings) -> None:
    """Add `/review` to the app (it answers 404 while `review_ui` is off)."""
    app.state.review_inbox = Inbox(SessionKeeper(settings.session_secret))
    app.include_router(router)


# -- plumbing ---------------------------------------------------------------------------------


async def _inbox(request: Request) -> Inbox:
    rt: Runtime = request.app.state.runtime
    if not rt.settings.review_ui:
        raise ApiError(404, "the review inbox is off: set review_ui (SWITCHBOARD_REVIEW_UI) and a token")
    return cast(Inbox, request.app.state.review_inbox)


InboxDep = Depends(_inbox)


def _rt(request: Request) -> Runtime:
    return cast(Runtime, request.app.state.runtime)


def _base(request: Request) -> str:
    return f"{request.scope.get('root_path', '')}/review"


def _session(request: Request, inbox: Inbox) -> Session | None:
    return inbox.sessions.read(_rt(request).settings, request.cookies.get(COOKIE))


def _render(request: Request, inbox: Inbox, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    html = inbox.templates.get_template(template).render(base=_base(request), **context)
    return HTMLResponse(html, status, headers=NO_STORE)


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, 303, headers=NO_STORE)


def _cookie_args(request: Request) -> dict[str, Any]:
    return {
        "httponly": True,
        "samesite": "strict",
        "secure": request.url.scheme == "https",
        "path": _base(request),
    }


async def _fields(request: Request, max_fields: int = MAX_FIELDS) -> dict[str, list[str]]:
    """An `application/x-www-form-urlencoded` body (the middleware bounds its size): every value
    of each field."""
    body = (await request.body()).decode("utf-8", "replace")
    try:
        return parse_qs(body, keep_blank_values=True, max_num_fields=max_fields)
    except ValueError:  # more fields than the inbox's form has: not one of them
        return {}


async def _form(request: Request, max_fields: int = MAX_FIELDS) -> dict[str, str]:
    """The first value of each field of a form post."""
    return {k: v[0] for k, v in (await _fields(request, max_fields)).items()}


async def _signed_in_form(
    request: Request, inbox: Inbox, max_fields: int = MAX_FIELDS
) -> tuple[Session, dict[str, str]] | Response:
    """(session, form) of a form post by a signed-in reviewer carrying the session's CSRF token;
    else the 403 answer to return."""
    session = _session(request, inbox)
    form = await _form(request, max_fields)
    if session is None or not inbox.sessions.check_csrf(session.csrf, form.get("csrf")):
        return _forbidden(request, inbox, "Not signed in, or the form was not this site's.")
    return session, form


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


def _forbidden(request: Request, inbox: Inbox, why: str) -> Response:
    if _wants_json(request):
        return JSONResponse({"ok": False, "message": why}, 403, headers=NO_STORE)
    return _render(request, inbox, "message.html", 403, title="Not allowed", message=why)


def _back(request: Request, form: Mapping[str, str], **done: str) -> str:
    """Where a form post returns to: the inbox with the same filters (re-parsed: never a URL the
    client chose) and what was done."""
    filters, _ = Filters.parse({k: v[0] for k, v in parse_qs(form.get("back", "")).items()})
    query = "&".join(q for q in (filters.query(), urlencode(done)) if q)
    return f"{_base(request)}{'?' + query if query else ''}"


# -- sign-in, sign-out ----------------------------------------------------------------------------


@router.get("/login")
async def login_page(request: Request, inbox: Inbox = InboxDep) -> Response:
    if _session(request, inbox) is not None:
        return _redirect(_base(request))
    nonce = inbox.sessions.new_login_nonce()
    response = _render(request, inbox, "login.html", csrf=inbox.sessions.login_csrf(nonce), error=None)
    response.set_cookie(LOGIN_COOKIE, nonce, max_age=LOGIN_COOKIE_S, **_cookie_args(request))
    return response


@router.post("/login")
async def login(request: Request, inbox: Inbox = InboxDep) -> Response:
    form = await _form(request)
    nonce = request.cookies.get(LOGIN_COOKIE)
    expected = inbox.sessions.login_csrf(nonce) if nonce else None
    if not inbox.sessions.check_csrf(expected, form.get("csrf")):
        return _forbidden(request, inbox, "The sign-in form expired or was not this site's; load it again.")
    settings = _rt(request).settings
    reviewer = inbox.sessions.reviewer_for(settings, form.get("token", ""))
    if reviewer is None:
        return _render(request, inbox, "login.html", 403, csrf=expected, error="That token signs nobody in.")
    response = _redirect(_base(request))
    response.set_cookie(
        COOKIE,
        inbox.sessions.issue(settings, reviewer),
        max_age=round(settings.review_session_hours * 3600),
        **_cookie_args(request),
    )
    response.delete_cookie(LOGIN_COOKIE, **_cookie_args(request))
    return response


@router.post("/logout")
async def logout(request: Request, inbox: Inbox = InboxDep) -> Response:
    signed_in = await _signed_in_form(request, inbox)
    if isinstance(signed_in, Response):
        return signed_in
    session, _ = signed_in
    inbox.sessions.revoke(session)
    response = _redirect(f"{_base(request)}/login")
    response.delete_cookie(COOKIE, **_cookie_args(request))
    return response


# -- the inbox --------------------------------------------------------------------------------------


@router.get("")
async def inbox_page(request: Request, inbox: Inbox = InboxDep) -> Response:
    session = _session(request, inbox)
    if session is None:
        return _redirect(f"{_base(request)}/login")
    rt = _rt(request)
    params = dict(request.query_params)
    filters, errors = Filters.parse(params)
    queue, stats, live, open_proposals = await asyncio.gather(
        views.queue(rt, filters, inbox.skips(session.reviewer)),
        views.stats(rt, session.reviewer),
        views.live_accuracy(rt),
        views.open_proposals(rt),
    )
    choices = views.choices(rt)
    routes = {c.name: c.route for c in choices}
    model = rt.model
    pending = [
        {
            "name": i.name,
            "route": i.route or "",
            "examples": stats.examples.get(i.name, 0) if stats else 0,
        }
        for i in rt.taxonomy.pending
    ]
    return _render(
        request,
        inbox,
        "inbox.html",
        session=session,
        filters=filters,
        strategies=views.STRATEGIES,
        back=filters.query(),
        errors=errors,
        done=views.done_message(params),
        items=queue[: views.PAGE_ITEMS],
        left=views.left(queue),
        stats=stats,
        live=live,
        pending=pending,
        needed=PENDING_MIN_EXAMPLES,
        choices=choices,
        routes=routes,
        route_names=sorted({c.route for c in choices if c.route}),
        oos_label=views.out_of_scope_label(rt),
        oos_setting=rt.settings.oos_labels[0] if rt.settings.oos_labels else "oos",
        model_version=model.info.version if model else None,
        model_state="serving" if model else ("failed to load" if rt.load_error else "loading"),
        has_registry=rt.settings.registry_dir is not None,
        skipped=len(inbox.skips(session.reviewer)),
        open_proposals=open_proposals,
    )


@router.post("/label")
async def label(request: Request, inbox: Inbox = InboxDep) -> Response:
    """One reviewer decision on one queue item: confirm, pick an alternative, correct to another
    intent, out of scope, or skip."""
    signed_in = await _signed_in_form(request, inbox)
    if isinstance(signed_in, Response):
        return signed_in
    session, form = signed_in
    rt = _rt(request)
    request_id = form.get("request_id", "").strip()
    choice = form.get("choice", "")
    if not request_id or len(request_id) > 64 or storable_problem(request_id):
        return await _answer(request, inbox, rt, session, form, 422, "No valid request id was sent.")
    if choice == "skip":
        inbox.skip(session.reviewer, request_id)
        return await _answer(request, inbox, rt, session, form, 200, "Skipped.", done="skipped")
    if choice == "confirm":
        intent = form.get("predicted", "").strip()
    elif choice.startswith("pick:"):
        intent = choice.removeprefix("pick:")
    elif choice == "correct":
        intent = form.get("intent", "").strip()
    elif choice == "oos":
        intent = views.out_of_scope_label(rt) or ""
        if not intent:
            why = "This model has no out-of-scope label; see the note under the intents."
            return await _answer(request, inbox, rt, session, form, 422, why)
    else:
        return await _answer(request, inbox, rt, session, form, 422, "Unknown action.")
    if not intent:
        return await _answer(request, inbox, rt, session, form, 422, "Choose an intent first.")
    if len(intent) > NAME_LENGTH or storable_problem(intent):
        return await _answer(request, inbox, rt, session, form, 422, "Not a valid intent name.")
    try:
        model = rt.require_model()
        check_intent(rt, model, intent)
        item = feedback_item(request_id, intent, session.reviewer)
        await record_feedback(rt, item)
    except ApiError as err:
        message = _plain_error(err, intent)
        return await _answer(request, inbox, rt, session, form, err.status, message)
    return await _answer(
        request, inbox, rt, session, form, 200, f"Saved: {intent}.", done="labelled", name=intent
    )


def _plain_error(err: ApiError, intent: str) -> str:
    kind = err.errors[0]["type"] if err.errors else ""
    if kind == "unknown_intent":
        return f"{intent!r} is not one of our intents: pick one from the list, or add it as a pending intent."
    if kind == "not_found":
        return "That request is not in the log (yet); reload the page."
    return err.detail


async def _answer(
    request: Request,
    inbox: Inbox,
    rt: Runtime,
    session: Session,
    form: Mapping[str, str],
    status: int,
    message: str,
    **done: str,
) -> Response:
    """JSON for the page's script (with the counts to show), else back to the inbox: a redirect
    after success, the message on a page after a failure."""
    if _wants_json(request):
        filters, _ = Filters.parse({k: v[0] for k, v in parse_qs(form.get("back", "")).items()})
        queue, stats = await asyncio.gather(
            views.queue(rt, filters, inbox.skips(session.reviewer)), views.stats(rt, session.reviewer)
        )
        body = {
            "ok": status < 400,
            "message": message,
            "left": views.left(queue),
            "today": stats.reviewer_today if stats else None,
        }
        return JSONResponse(body, status, headers=NO_STORE)
    if status < 400:
        return _redirect(_back(request, form, **done))
    return _render(
        request, inbox, "message.html", status, title="Not saved", message=message, back=_back(request, form)
    )


@router.post("/unskip")
async def unskip(request: Request, inbox: Inbox = InboxDep) -> Response:
    signed_in = await _signed_in_form(request, inbox)
    if isinstance(signed_in, Response):
        return signed_in
    session, form = signed_in
    inbox.skips(session.reviewer).clear()
    return _redirect(_back(request, form, done="unskipped"))


@router.post("/intents")
async def add_pending_intent(request: Request, inbox: Inbox = InboxDep) -> Response:
    """Add a pending intent (the admin API's `POST /v1/admin/intents`): feedback may name it at once."""
    signed_in = await _signed_in_form(request, inbox)
    if isinstance(signed_in, Response):
        return signed_in
    _, form = signed_in
    rt = _rt(request)
    try:
        body = AddIntentRequest(
            name=form.get("name", "").strip(),
            route=form.get("route", "").strip(),
            description=form.get("description", "").strip(),
        )
        await admin.add_intent(rt, body)
    except ValidationError as err:
        status, message = 422, _invalid(err)
    except ApiError as err:
        status, message = err.status, err.detail
    else:
        return _redirect(_back(request, form, done="added", name=body.name))
    return _render(
        request, inbox, "message.html", status, title="Not added", message=message, back=_back(request, form)
    )


def _invalid(err: ValidationError) -> str:
    """A form's first invalid field, in a line."""
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    return f"{where}: {str(first['msg']).removeprefix('Value error, ')}"


# -- proposed intents (intent discovery) -------------------------------------------------------------


def _proposals_url(request: Request, proposal_id: str | None = None, **done: str) -> str:
    path = f"{_base(request)}/proposals{'/' + proposal_id if proposal_id else ''}"
    return f"{path}{'?' + urlencode(done) if done else ''}"


@router.get("/proposals")
async def proposals_page(request: Request, inbox: Inbox = InboxDep) -> Response:
    """The open proposals (or those of `status`), largest first, and the last run's unrouted share."""
    session = _session(request, inbox)
    if session is None:
        return _redirect(f"{_base(request)}/login")
    rt = _rt(request)
    params = dict(request.query_params)
    status, errors = params.get("status") or "open", []
    if status not in PROPOSAL_FILTERS:
        errors.append(f"unknown status {status!r}; showing open")
        status = "open"
    try:
        found, open_proposals = await asyncio.gather(
            discover.read_proposals(rt, status), views.open_proposals(rt)
        )
    except ApiError as err:
        return _render(request, inbox, "message.html", err.status, title="Not available", message=err.detail)
    return _render(
        request,
        inbox,
        "proposals.html",
        session=session,
        shown=status,
        statuses=PROPOSAL_FILTERS,
        proposals=found.proposals,
        run=found.last_run,
        errors=errors,
        done=views.proposal_done_message(params),
        open_proposals=open_proposals,
    )


@router.get("/proposals/{proposal_id}")
async def proposal_page(request: Request, proposal_id: str, inbox: Inbox = InboxDep) -> Response:
    """One proposal: its queries (to confirm or remove) and the forms to decide what it is."""
    session = _session(request, inbox)
    if session is None:
        return _redirect(f"{_base(request)}/login")
    done = views.proposal_done_message(dict(request.query_params))
    return await _proposal_page(request, inbox, session, proposal_id, done=done)


async def _proposal_page(
    request: Request,
    inbox: Inbox,
    session: Session,
    proposal_id: str,
    status: int = 200,
    *,
    error: str | None = None,
    done: str | None = None,
    form: Mapping[str, str] | None = None,
) -> Response:
    rt = _rt(request)
    try:
        if not PROPOSAL_ID.fullmatch(proposal_id):
            raise ApiError(404, "no such proposal")
        proposal, open_proposals = await asyncio.gather(
            discover.read_proposal(rt, proposal_id), views.open_proposals(rt)
        )
    except ApiError as err:
        message = _proposal_error(err, {}) if err.status == 404 else err.detail
        return _render(
            request, inbox, "message.html", err.status, title="Not available", message=message,
            back=_proposals_url(request), back_label="Back to the proposed intents",
        )  # fmt: skip
    members = [m for m in proposal.member_list if m.state == "member"]
    decided = [m for m in proposal.member_list if m.state != "member"]
    choices = views.choices(rt)
    return _render(
        request,
        inbox,
        "proposal.html",
        status,
        session=session,
        p=proposal,
        url=_proposals_url(request, proposal.id),
        members=members[:MEMBERS_SHOWN],
        members_total=len(members),
        decided=decided[:MEMBERS_SHOWN],
        decided_total=len(decided),
        choices=choices,
        route_names=sorted({c.route for c in choices if c.route}),
        has_registry=rt.settings.registry_dir is not None,
        needed=PENDING_MIN_EXAMPLES,
        error=error,
        done=done,
        form=form or {},
        open_proposals=open_proposals,
    )


Decision = Callable[[Runtime, dict[str, str], list[str]], Awaitable[dict[str, str]]]


async def _decide(request: Request, inbox: Inbox, proposal_id: str, decision: Decision) -> Response:
    """A reviewer's decision on a proposal, by a form post: `decision(rt, form, selected request
    ids)` takes it and says what it did (the redirect's `done`); back to the proposal's page, or
    to it with the reason when it was refused (its status code, the form as it was sent)."""
    signed_in = await _signed_in_form(request, inbox, MAX_FIELDS + MEMBERS_SHOWN)
    if isinstance(signed_in, Response):
        return signed_in
    session, form = signed_in
    if not PROPOSAL_ID.fullmatch(proposal_id):
        return await _proposal_page(request, inbox, session, proposal_id)  # its 404 page
    selected = [i.strip() for i in (await _fields(request, MAX_FIELDS + MEMBERS_SHOWN)).get("request_id", [])]
    try:
        done = await decision(_rt(request), form, [i for i in selected if i])
    except ValidationError as err:
        status, message = 422, _invalid(err)
    except ApiError as err:
        status, message = err.status, _proposal_error(err, form)
    else:
        where = None if done.get("done") == "dismissed" else proposal_id
        return _redirect(_proposals_url(request, where, **done))
    return await _proposal_page(request, inbox, session, proposal_id, status, error=message, form=form)


def _proposal_error(err: ApiError, form: Mapping[str, str]) -> str:
    """What a refused decision means, for the reviewer (never a traceback, nor a field path)."""
    first = err.errors[0] if err.errors else {}
    kind, field = first.get("type", ""), first.get("field", "")
    if kind == "exists":
        name = form.get("name", "").strip()
        return (
            f"There is already an intent named {name!r}: choose another name, or merge the proposal into it."
        )
    if kind == "unknown_intent":
        intent = form.get("intent", "").strip()
        return f"{intent!r} is not one of our intents (any more): pick one from the list."
    if kind == "no_intent":
        return "Name this proposal or merge it into an intent before confirming its queries."
    if kind == "already_decided":
        return f"This proposal is {first.get('message', 'decided')} already; reload the page."
    if kind == "not_a_member":
        return "Some selected queries are not in this proposal (any more); reload the page."
    if (kind == "not_found" and field == "proposal_id") or (err.status == 404 and not field):
        return "There is no proposal with this id (any more); go back to the list."
    if kind == "not_found":
        return "A selected query is not in the request log (any more); reload the page."
    return err.detail


def _confirm_all(form: Mapping[str, str]) -> bool:
    return form.get("confirm_members") == "on"


def _members_done(done: str, answer: MembersResponse, **more: str) -> dict[str, str]:
    """The redirect's `done`: what was decided, and how many queries it changed."""
    return {"done": done, **more, "n": str(answer.changed)}


@router.post("/proposals/{proposal_id}/name")
async def name_proposal(request: Request, proposal_id: str, inbox: Inbox = InboxDep) -> Response:
    """It is a new intent: a pending one with this name and route (and, ticked, every query of
    the proposal confirmed as its examples)."""

    async def name(rt: Runtime, form: dict[str, str], _: list[str]) -> dict[str, str]:
        body = NameProposalRequest(
            name=form.get("name", "").strip(),
            route=form.get("route", "").strip(),
            description=form.get("description", "").strip(),
            confirm_members=_confirm_all(form),
        )
        answer = await discover.name_proposal(rt, rt.require_model(), proposal_id, body)
        return _members_done("named", answer, name=body.name)

    return await _decide(request, inbox, proposal_id, name)


@router.post("/proposals/{proposal_id}/merge")
async def merge_proposal(request: Request, proposal_id: str, inbox: Inbox = InboxDep) -> Response:
    """Its queries belong to an intent we have (served or pending)."""

    async def merge(rt: Runtime, form: dict[str, str], _: list[str]) -> dict[str, str]:
        intent = form.get("intent", "").strip()
        if not intent:
            raise ApiError(422, "Choose the intent to merge it into.")
        body = MergeProposalRequest(intent=intent, confirm_members=_confirm_all(form))
        answer = await discover.merge_proposal(rt, rt.require_model(), proposal_id, body)
        return _members_done("merged", answer, name=intent)

    return await _decide(request, inbox, proposal_id, merge)


@router.post("/proposals/{proposal_id}/confirm")
async def confirm_members(request: Request, proposal_id: str, inbox: Inbox = InboxDep) -> Response:
    """The ticked queries (or, with `all`, every one still to review) become examples of the
    proposal's intent."""

    async def confirm(rt: Runtime, form: dict[str, str], selected: list[str]) -> dict[str, str]:
        if not selected and form.get("all") != "1":
            raise ApiError(422, "Tick the queries to confirm first (or confirm them all).")
        body = MembersRequest(request_ids=None if form.get("all") == "1" else selected)
        answer = await discover.confirm_members(rt, rt.require_model(), proposal_id, body)
        return _members_done("confirmed", answer, name=answer.proposal.intent or "")

    return await _decide(request, inbox, proposal_id, confirm)


@router.post("/proposals/{proposal_id}/remove")
async def remove_members(request: Request, proposal_id: str, inbox: Inbox = InboxDep) -> Response:
    """The ticked queries do not belong: out of the proposal, and no later run adds them back."""

    async def remove(rt: Runtime, form: dict[str, str], selected: list[str]) -> dict[str, str]:
        if not selected:
            raise ApiError(422, "Tick the queries to remove first.")
        answer = await discover.remove_members(rt, proposal_id, MembersRequest(request_ids=selected))
        return _members_done("removed", answer)

    return await _decide(request, inbox, proposal_id, remove)


@router.post("/proposals/{proposal_id}/dismiss")
async def dismiss_proposal(request: Request, proposal_id: str, inbox: Inbox = InboxDep) -> Response:
    """Not an intent: hidden until a later run finds it grown by the job's factor."""

    async def dismiss(rt: Runtime, form: dict[str, str], _: list[str]) -> dict[str, str]:
        await discover.dismiss_proposal(rt, proposal_id)
        return {"done": "dismissed"}

    return await _decide(request, inbox, proposal_id, dismiss)


@router.get("/static/{name}")
async def static(name: str, inbox: Inbox = InboxDep) -> Response:
    """The page's own stylesheet and script (vendored: no CDN, no build step)."""
    if name not in STATIC:
        raise ApiError(404, "not found")
    return Response(
        (HERE / "static" / name).read_bytes(),
        media_type=STATIC[name],
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )
