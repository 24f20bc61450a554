"""`/v1/discover`: the intents the discovery job proposes (`switchboard intents discover`,
router.discovery), and what a reviewer does with them.

Admin only (the bearer token of `/v1/admin/*`), as proposals hold customer texts. The router
only reads what the job wrote and records the reviewer's decisions:
- `name`: the proposal becomes a pending intent (the taxonomy's `add`; a name that exists is 409
  naming it), optionally confirming every member in the same call;
- `confirm`: members become feedback for the proposal's intent (source `discovery`, one
  idempotency key per member and intent, so a repeat stores nothing);
- `remove`: members that do not belong (a later run never adds them back);
- `merge`: the proposal's queries belong to an existing intent, optionally confirmed at once;
- `dismiss`: not an intent; it stays dismissed unless a run finds it grown by the job's factor.
Unknown ids are 404; an empty store answers an empty list. The review inbox's "Proposed intents"
pages (router.web.inbox) call these same functions (`read_proposals`, `read_proposal` and each
action's handler), so a decision taken there is the one taken here.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response
from sqlalchemy import Engine

from router.deps import ModelDep, RuntimeDep, require_admin
from router.errors import ApiError, field_error, unavailable
from router.routes.admin import add_intent
from router.routes.feedback import check_intent, record_feedback
from router.runtime import Runtime
from router.schemas import (
    AddIntentRequest,
    DiscoverResponse,
    DiscoveryRun,
    ErrorResponse,
    MembersRequest,
    MembersResponse,
    MergeProposalRequest,
    NameProposalRequest,
    ProposalDetail,
    ProposalInfo,
    ProposalMember,
)
from router.store import feedback_item
from router.store.discovery import (
    PROPOSAL_STATUSES,
    Proposal,
    ProposalNotFound,
    get_proposal,
    last_run,
    load_proposals,
    set_member_state,
    set_status,
)

router = APIRouter(prefix="/v1/discover", tags=["discovery"], dependencies=[Depends(require_admin)])

ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorResponse, "description": why}
    for code, why in {
        401: "No admin token sent.",
        403: "Wrong admin token.",
        404: "Admin endpoints are off, or no proposal with this id.",
        409: "The name is an existing intent, or the proposal has no intent to confirm into yet.",
        422: "A field is invalid; it is named.",
        503: "The store is not open (starting or shutting down).",
    }.items()
}


def _db(rt: Runtime) -> Engine:
    if rt.db is None:
        raise unavailable("the store is not open", rt.settings.retry_after_s)
    return rt.db


def _info(p: Proposal) -> ProposalInfo:
    return ProposalInfo(
        id=p.id, status=p.status, intent=p.intent, size=p.size, previous_size=p.previous_size,
        keywords=p.keywords, examples=p.examples, nearest_intent=p.nearest_intent,
        nearest_similarity=p.nearest_similarity, members=p.counts(), created_at=p.created_at,
        updated_at=p.updated_at,
    )  # fmt: skip


def _detail(p: Proposal) -> ProposalDetail:
    return ProposalDetail(
        **_info(p).model_dump(),
        member_list=[
            ProposalMember(
                request_id=m.request_id,
                state=m.state,
                similarity=m.similarity,
                text=m.text,
                created_at=m.created_at,
                predicted_intent=m.predicted_intent,
            )
            for m in p.members
        ],
    )


async def _proposal(rt: Runtime, proposal_id: str) -> Proposal:
    try:
        return await asyncio.to_thread(get_proposal, _db(rt), proposal_id)
    except ProposalNotFound:
        raise field_error(
            "proposal_id", f"no proposal with id {proposal_id!r}", "not_found", status=404
        ) from None


async def read_proposals(rt: Runtime, status: str = "open") -> DiscoverResponse:
    """The proposals of `status` (open, named, merged, dismissed, or all), largest first, and the
    latest run: what `GET /v1/discover` answers and the inbox's list shows."""
    db = _db(rt)
    statuses = PROPOSAL_STATUSES if status == "all" else (status,)
    found = await asyncio.to_thread(load_proposals, db, statuses)
    run = await asyncio.to_thread(last_run, db)
    return DiscoverResponse(
        proposals=[_info(p) for p in found],
        last_run=None
        if run is None
        else DiscoveryRun(**{**run.__dict__, "unrouted_share": run.unrouted_share}),
    )


async def read_proposal(rt: Runtime, proposal_id: str) -> ProposalDetail:
    """One proposal with its members (404 for an unknown id)."""
    return _detail(await _proposal(rt, proposal_id))


@router.get("", response_model=DiscoverResponse, responses=ERRORS)
async def list_proposals(
    rt: RuntimeDep,
    response: Response,
    status: Annotated[
        str,
        Query(
            description="open, named, merged, dismissed, or all.",
            pattern="^(open|named|merged|dismissed|all)$",
        ),
    ] = "open",
) -> DiscoverResponse:
    """Stored proposals, largest first, and the latest discovery run (its unrouted share)."""
    response.headers["Cache-Control"] = "no-store"
    return await read_proposals(rt, status)


@router.get("/{proposal_id}", response_model=ProposalDetail, responses=ERRORS)
async def show_proposal(rt: RuntimeDep, response: Response, proposal_id: str) -> ProposalDetail:
    """One proposal with its members (text, answer, similarity, state)."""
    response.headers["Cache-Control"] = "no-store"
    return await read_proposal(rt, proposal_id)


@router.post("/{proposal_id}/name", response_model=MembersResponse, responses=ERRORS)
async def name_proposal(
    rt: RuntimeDep, model: ModelDep, proposal_id: str, body: NameProposalRequest
) -> MembersResponse:
    """The proposal becomes a pending intent with this name and route."""
    proposal = await _proposal(rt, proposal_id)
    if proposal.status in ("named", "merged") and proposal.intent:
        raise field_error(
            "proposal_id", f"already {proposal.status} as {proposal.intent!r}", "already_decided", status=409
        )
    try:
        await add_intent(rt, AddIntentRequest(name=body.name, route=body.route, description=body.description))
    except ApiError as err:
        if any(e.get("type") == "exists" for e in err.errors):
            raise field_error("name", f"intent {body.name!r} already exists", "exists", status=409) from None
        raise
    await asyncio.to_thread(set_status, _db(rt), proposal_id, "named", intent=body.name)
    return await _confirm(rt, model, proposal_id, None if body.confirm_members else [])


@router.post("/{proposal_id}/merge", response_model=MembersResponse, responses=ERRORS)
async def merge_proposal(
    rt: RuntimeDep, model: ModelDep, proposal_id: str, body: MergeProposalRequest
) -> MembersResponse:
    """The proposal's queries belong to an existing intent (served or pending)."""
    await _proposal(rt, proposal_id)
    check_intent(rt, model, body.intent)  # 422 naming the valid ones
    await asyncio.to_thread(set_status, _db(rt), proposal_id, "merged", intent=body.intent)
    return await _confirm(rt, model, proposal_id, None if body.confirm_members else [])


@router.post("/{proposal_id}/confirm", response_model=MembersResponse, responses=ERRORS)
async def confirm_members(
    rt: RuntimeDep, model: ModelDep, proposal_id: str, body: MembersRequest | None = None
) -> MembersResponse:
    """Give members (default: every current one) to the proposal's intent, as feedback."""
    return await _confirm(rt, model, proposal_id, body.request_ids if body else None)


@router.post("/{proposal_id}/remove", response_model=MembersResponse, responses=ERRORS)
async def remove_members(rt: RuntimeDep, proposal_id: str, body: MembersRequest) -> MembersResponse:
    """Members that do not belong: out of the proposal, and never added back by a later run."""
    proposal = await _proposal(rt, proposal_id)
    ids = body.request_ids or [m.request_id for m in proposal.members if m.state == "member"]
    _known(proposal, ids)
    changed = await asyncio.to_thread(set_member_state, _db(rt), proposal_id, ids, "removed")
    return MembersResponse(
        changed=changed, feedback_created=0, proposal=_detail(await _proposal(rt, proposal_id))
    )


@router.post("/{proposal_id}/dismiss", response_model=ProposalDetail, responses=ERRORS)
async def dismiss_proposal(rt: RuntimeDep, proposal_id: str) -> ProposalDetail:
    """Not an intent: hidden from the open list until it grows by the job's factor."""
    proposal = await _proposal(rt, proposal_id)
    await asyncio.to_thread(
        set_status, _db(rt), proposal_id, "dismissed", dismissed_size=max(proposal.size, 1)
    )
    return _detail(await _proposal(rt, proposal_id))


def _known(proposal: Proposal, ids: list[str]) -> None:
    members = {m.request_id for m in proposal.members}
    unknown = [i for i in ids if i not in members]
    if unknown:
        raise field_error(
            "request_ids", f"not members of proposal {proposal.id}: {', '.join(unknown[:5])}", "not_a_member"
        )


async def _confirm(rt: Runtime, model: ModelDep, proposal_id: str, ids: list[str] | None) -> MembersResponse:
    """Feedback for each member in `ids` (None: every current member; []: none)."""
    proposal = await _proposal(rt, proposal_id)
    if ids is None:
        ids = [m.request_id for m in proposal.members if m.state == "member"]
    _known(proposal, ids)
    if ids and not proposal.intent:
        raise field_error(
            "proposal_id", "name the proposal or merge it into an intent first", "no_intent", status=409
        )
    created = 0
    if ids:
        assert proposal.intent is not None
        check_intent(rt, model, proposal.intent)
        for request_id in ids:
            item = feedback_item(
                request_id, proposal.intent, "discovery",
                idempotency_key=f"discovery:{proposal_id}:{request_id}:{proposal.intent}",
            )  # fmt: skip
            _, new = await record_feedback(rt, item)
            created += new
    changed = await asyncio.to_thread(set_member_state, _db(rt), proposal_id, ids, "confirmed")
    return MembersResponse(
        changed=changed, feedback_created=created, proposal=_detail(await _proposal(rt, proposal_id))
    )
