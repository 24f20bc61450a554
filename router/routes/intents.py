"""`GET /v1/intents`: what the loaded model can answer and where each intent is routed, and the
intents added since (pending: feedback may name them, the next retrain trains them)."""

from __future__ import annotations

from fastapi import APIRouter

from router.deps import ModelDep, RuntimeDep
from router.policy import escalation_cutoff
from router.schemas import ErrorResponse, IntentInfo, IntentsResponse

router = APIRouter(prefix="/v1", tags=["routing"])


@router.get(
    "/intents",
    response_model=IntentsResponse,
    responses={503: {"model": ErrorResponse, "description": "The model is loading or failed."}},
)
async def list_intents(model: ModelDep, rt: RuntimeDep) -> IntentsResponse:
    policy = model.policy
    oos = set(policy.oos_labels)
    taxonomy = rt.taxonomy  # the served model's labels with the registry's recorded changes
    status = {i.name: i.status for i in taxonomy.intents}
    renamed = {i.name: i.renamed_to for i in taxonomy.intents if i.renamed_to}
    return IntentsResponse(
        model_version=model.info.version,
        default_route=policy.default_route,
        fallback_route=policy.fallback_route,
        confidence_threshold=policy.threshold,
        margin=policy.margin,
        escalation_model=model.escalator.model if model.escalator else None,
        escalation_threshold=escalation_cutoff(rt.settings, policy) if model.escalator else None,
        intents=[
            IntentInfo(
                intent=label,
                route=policy.routes[label],
                out_of_scope=label in oos,
                status=status.get(label, "served"),
                renamed_to=renamed.get(label),
            )
            for label in policy.labels
        ]
        + [  # added in the registry, not trained yet: feedback may name them
            IntentInfo(
                intent=i.name, route=i.route or policy.default_route, out_of_scope=False, status="pending"
            )
            for i in taxonomy.pending
        ],
    )
