"""Request and response bodies of the /v1 API (they are also its OpenAPI schema).

Static rules live here (types, required fields, blank text, sizes that never change); limits
that come from settings (text length, batch size) are checked in the handlers against the
running configuration and reported in the same 422 shape (see router.errors).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

from router.escalation import EscalationOutcome
from router.policy import Alternative
from router.store.queries import ReviewStrategy
from router.text_rules import STORABLE_PATTERN, TEXT_PATTERN, number_problem, storable_problem, text_problem

MAX_METADATA_KEYS = 32
MAX_METADATA_KEY_CHARS = 64
MAX_METADATA_VALUE_CHARS = 512


def _text(value: str) -> str:
    problem = text_problem(value)
    if problem is not None:
        kind = "invalid_characters" if storable_problem(value) else "blank_text"
        raise PydanticCustomError(kind, problem)
    return value


def _storable(value: str) -> str:
    problem = storable_problem(value)
    if problem is not None:
        raise PydanticCustomError("invalid_characters", problem)
    return value


Text = Annotated[
    str,
    AfterValidator(_text),
    Field(
        min_length=1,
        description="The customer's message: at least one visible character; no control characters "
        "(tab, newline and carriage return are fine) or lone surrogates. Limit: `max_text_chars` "
        "(default 2000).",
        json_schema_extra={"pattern": TEXT_PATTERN},
    ),
]
# a string the store keeps as given (feedback fields, intent names): no control characters or
# lone surrogates, which SQLite or PostgreSQL cannot store
Stored = Annotated[str, AfterValidator(_storable), Field(json_schema_extra={"pattern": STORABLE_PATTERN})]


def _flat(value: dict[str, Any]) -> dict[str, Any]:
    for key, item in value.items():
        where = {"key": key[:MAX_METADATA_KEY_CHARS]}
        problem = storable_problem(key)
        if problem is not None or not key or len(key) > MAX_METADATA_KEY_CHARS:
            reason = problem or f"must be 1 to {MAX_METADATA_KEY_CHARS} characters"
            raise PydanticCustomError("metadata_key", "key '{key}' " + reason, where)
        if item is not None and not isinstance(item, str | int | float | bool):
            raise PydanticCustomError(
                "metadata_value", "value of '{key}' must be a string, number, boolean or null", where
            )
        if isinstance(item, float) and number_problem(item):
            raise PydanticCustomError("metadata_value", "value of '{key}' must be a finite number", where)
        if isinstance(item, str):
            problem = storable_problem(item)
            if problem is None and len(item) > MAX_METADATA_VALUE_CHARS:
                problem = f"is longer than {MAX_METADATA_VALUE_CHARS} characters"
            if problem is not None:
                raise PydanticCustomError("metadata_value", "value of '{key}' " + problem, where)
    return value


_SCALAR = {"anyOf": [{"type": "string", "maxLength": MAX_METADATA_VALUE_CHARS, "pattern": STORABLE_PATTERN},
                     {"type": "number"}, {"type": "boolean"}, {"type": "null"}]}  # fmt: skip
Metadata = Annotated[
    dict[str, Any],
    AfterValidator(_flat),
    Field(
        json_schema_extra={
            "maxProperties": MAX_METADATA_KEYS,
            "propertyNames": {
                "minLength": 1,
                "maxLength": MAX_METADATA_KEY_CHARS,
                "pattern": STORABLE_PATTERN,
            },
            "additionalProperties": _SCALAR,
        }
    ),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class RouteRequest(_Strict):
    text: Text
    metadata: Metadata | None = Field(
        None,
        max_length=MAX_METADATA_KEYS,
        description="Free-form key -> scalar values stored with the request log (e.g. channel).",
        examples=[{"channel": "chat"}],
    )

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"text": "why is my bill so high this month?"}]},
    )


class BatchRouteRequest(_Strict):
    texts: list[Text] = Field(
        min_length=1, description="Messages to route. Limit: `max_batch` (default 64) texts."
    )


class EscalationInfo(BaseModel):
    model: str = Field(description="The LLM asked.")
    outcome: EscalationOutcome = Field(
        description="agreed / overruled: the LLM's answer is `intent`; invalid / failed: the model's stands."
    )
    latency_ms: float


class RouteResult(BaseModel):
    request_id: str = Field(description="Reference for feedback; logged with the request.")
    intent: str = Field(
        description="The model's top intent (also when falling back), or the escalation LLM's answer."
    )
    route: str = Field(description="Where to send the query: the intent's route or the fallback.")
    confidence: float = Field(description="The tuned model's top-1 probability.")
    fallback: bool = Field(description="True when unsure, ambiguous or out of scope.")
    alternatives: list[Alternative] = Field(description="Top-k intents with their own routes.")
    model_version: str
    escalation: EscalationInfo | None = Field(
        None, description="Cascade mode: set when the query was escalated to the LLM."
    )
    latency_ms: float = Field(description="Time in the router for this request.")


class BatchRouteResponse(BaseModel):
    results: list[RouteResult]


class FeedbackRequest(_Strict):
    request_id: Annotated[Stored, Field(min_length=1, max_length=64)]
    correct_intent: Annotated[
        Stored,
        Field(
            min_length=1,
            max_length=200,
            description="One of the served or pending intents (listed in this schema's enum and by "
            "GET /v1/intents).",
        ),
    ]
    source: Annotated[Stored, Field(max_length=100)] | None = Field(
        None, description="Who says so: agent, customer, qa, ..."
    )
    comment: Annotated[Stored, Field(max_length=2000)] | None = None


IntentStatus = Literal["served", "pending", "retiring", "renaming"]


class IntentInfo(BaseModel):
    intent: str
    route: str
    out_of_scope: bool
    status: IntentStatus = Field(
        "served",
        description="served: the model answers it; pending: added, not trained yet (feedback may "
        "name it); retiring / renaming: the next retrain drops it / gives it `renamed_to`.",
    )
    renamed_to: str | None = None


class IntentsResponse(BaseModel):
    model_version: str
    default_route: str
    fallback_route: str
    confidence_threshold: float
    margin: float
    escalation_model: str | None = Field(None, description="Cascade mode: the LLM for unsure queries.")
    escalation_threshold: float | None = Field(None, description="Cascade mode: escalate when top-1 < this.")
    intents: list[IntentInfo]


IntentName = Annotated[Stored, Field(min_length=1, max_length=200)]


class TaxonomyIntent(BaseModel):
    name: str
    status: IntentStatus
    route: str | None
    description: str
    renamed_to: str | None = Field(None, description="renaming: the name the next retrain gives it.")


class TaxonomyResponse(BaseModel):
    """The registry's intent taxonomy: the champion's intents and the changes recorded since."""

    champion: str | None = Field(description="The champion version whose labels are the served intents.")
    intents: list[TaxonomyIntent]


class AddIntentRequest(_Strict):
    name: IntentName
    route: Annotated[Stored, Field(min_length=1, max_length=200, description="Where its queries go.")]
    description: Annotated[Stored, Field(max_length=2000)] = ""


class RenameIntentRequest(_Strict):
    new_name: IntentName


class ReviewAlternative(BaseModel):
    intent: str
    probability: float


class ReviewItem(BaseModel):
    """A logged request without feedback, and the requests with the same text (normalised)."""

    request_id: str = Field(description="The request shown; feedback on it is what to post.")
    text: str
    predicted_intent: str = Field(description="What the router answered (the LLM's in cascade mode).")
    confidence: float = Field(description="The tuned model's top-1 probability.")
    margin: float | None = Field(
        description="Top-1 minus top-2 probability; null for requests logged before it was kept."
    )
    alternatives: list[ReviewAlternative] = Field(description="The tuned model's top-k intents.")
    route: str
    fallback: bool
    fallback_reason: str | None
    escalation: str | None = Field(description="Cascade mode: agreed, overruled, invalid or failed.")
    model_version: str
    created_at: datetime
    count: int = Field(description="Requests with this text (case, spacing, end punctuation ignored).")
    request_ids: list[str] = Field(description="All of them, the one shown first.")


class ReviewResponse(BaseModel):
    strategy: ReviewStrategy
    items: list[ReviewItem]


# -- intent discovery (router.routes.discover) ---------------------------------------------------

RequestIds = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=36)]], Field(min_length=1, max_length=1000)
]


class ProposalMember(BaseModel):
    request_id: str
    state: Literal["member", "confirmed", "removed"]
    similarity: float = Field(description="Cosine to the proposal's centroid.")
    text: str | None = None
    created_at: datetime | None = None
    predicted_intent: str | None = Field(None, description="What the model answered.")


class ProposalInfo(BaseModel):
    id: str
    status: Literal["open", "named", "merged", "dismissed"]
    intent: str | None = Field(None, description="Named or merged: the intent its members are given.")
    size: int = Field(description="Distinct queries the latest run that found it put in it.")
    previous_size: int | None = Field(None, description="Its size at the run before: the trend.")
    keywords: list[str]
    examples: list[str] = Field(description="Its most representative queries.")
    nearest_intent: str | None = None
    nearest_similarity: float | None = Field(
        None, description="Cosine of its centroid with the nearest intent's: high means an existing intent."
    )
    members: dict[str, int] = Field(description="Members by state: member, confirmed, removed.")
    created_at: datetime
    updated_at: datetime


class ProposalDetail(ProposalInfo):
    member_list: list[ProposalMember]


class DiscoveryRun(BaseModel):
    id: str
    started_at: datetime
    since: datetime
    until: datetime
    model_version: str
    requests: int
    unrouted: int
    unrouted_share: float | None
    candidates: int
    clustered: int
    proposals_open: int


class DiscoverResponse(BaseModel):
    proposals: list[ProposalInfo]
    last_run: DiscoveryRun | None = None


class NameProposalRequest(_Strict):
    name: IntentName
    route: Annotated[Stored, Field(min_length=1, max_length=200, description="Where its queries go.")]
    description: Annotated[Stored, Field(max_length=2000)] = ""
    confirm_members: bool = Field(False, description="Also confirm every current member (one action).")


class MergeProposalRequest(_Strict):
    intent: IntentName
    confirm_members: bool = Field(False, description="Also confirm every current member (one action).")


class MembersRequest(_Strict):
    request_ids: RequestIds | None = Field(None, description="Default: every current member.")


class MembersResponse(BaseModel):
    changed: int = Field(description="Members whose state this call set.")
    feedback_created: int = Field(0, description="Confirm: new feedback rows (repeats store nothing).")
    proposal: ProposalDetail


class FieldError(BaseModel):
    field: str = Field(description="Where: `text`, `texts[3]`, `body`, a header name, ...")
    message: str
    type: str
    allowed: list[Any] | None = Field(None, description="Valid values, where there is a list.")


class ErrorResponse(BaseModel):
    detail: str
    errors: list[FieldError] = Field(default_factory=list)


class Health(BaseModel):
    status: str
    model_version: str | None = None
    reason: str | None = None
