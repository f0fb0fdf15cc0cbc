"""The credit platform's calls to us, signed as our calls to it are (HMAC-SHA256 with the
secret issued with our app id): an objection (异议) to a record we reported."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from api import credit
from api.deps import SessionDep, StateDep
from api.errors import ApiError, responses
from api.schemas.credit import CreditObjectionIn, CreditObjectionOut
from integrations.credit_platform import CallbackRejected, CallbackVerifier

router = APIRouter(prefix="/v1/credit", tags=["credit platform"])


async def signed_by_platform(request: Request, state: StateDep) -> str:
    """The platform's signature, checked before the body is read as JSON: 401 `signature_missing`,
    `request_stale` or `invalid_signature`; 403 `unknown_app` for another app id."""
    settings = state.settings
    verifier = CallbackVerifier(app_id=settings.credit_platform_app_id, secret=settings.credit_platform_secret)
    try:
        verifier.verify(request.headers, request.method, request.url.path, await request.body())
    except CallbackRejected as err:
        raise ApiError(err.status, err.code, str(err)) from None
    return settings.credit_platform_app_id


PlatformDep = Annotated[str, Depends(signed_by_platform)]


@router.post(
    "/objections",
    status_code=201,
    response_model=CreditObjectionOut,
    responses={
        200: {"model": CreditObjectionOut, "description": "this objection was received before"},
        **responses(401, 403, 404, 409, 422, 503),
    },
)
async def objection(_: PlatformDep, body: CreditObjectionIn, state: StateDep, session: SessionDep) -> Any:
    """A person objected (异议) to a record we reported: a dispute opens on the visit (its
    sanctions held, the operators' queue `GET /v1/ops/disputes`). Resolved upheld, the record
    is corrected; rejected, the platform is told it stands. Idempotent by `objection_id`.
    On a visit whose workflow has closed (written off, settled) the dispute is kept outside it,
    in the same queue, and decided there. 404 `record_not_found`; 409 `dispute_open` when the
    visit's open dispute was resolved meanwhile (the platform sends it again)."""
    data, status = await credit.objection(state, session, body)
    return JSONResponse(data, status_code=status)
