"""``POST /feedback``: a user's verdict on one answer, named by its request id
(``rag.feedback``)."""

from __future__ import annotations

from fastapi import APIRouter

from services.api.deps import TenantDep
from services.schemas import FeedbackCreate, FeedbackPublic

router = APIRouter(tags=["ask"])


@router.post(
    "/feedback",
    response_model=FeedbackPublic,
    responses={
        404: {"description": "Not a request id of this key's answers, or expired."},
        409: {"description": "A verdict on this request id was already recorded."},
    },
)
async def feedback(body: FeedbackCreate, tenant: TenantDep) -> FeedbackPublic:
    outcome = await tenant.feedback.give(body.request_id, correct=body.correct)
    return FeedbackPublic(request_id=body.request_id, correct=body.correct, outcome=outcome)
