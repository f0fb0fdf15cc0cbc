"""Dependencies: the app's shared state, one database session per request committed by
the dependency, and the API-key checks."""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from api.errors import ApiError
from api.tokens import session_of
from config import Settings
from db.models import Patient, PatientSession
from db.pii import Pii
from db.repositories import utcnow
from integrations.credit_platform import CreditPlatformClient
from integrations.ebill import EBillClient
from integrations.insurance_bureau import InsuranceBureauClient
from integrations.payments.channels import Channel
from integrations.sms import SmsSender


@dataclass
class AppState:
    settings: Settings
    factory: async_sessionmaker[AsyncSession]
    temporal: Client
    pii: Pii
    sms: SmsSender
    credit: CreditPlatformClient
    channels: dict[str, Channel] = field(default_factory=dict)  # the payment channels offered here
    bureau: InsuranceBureauClient | None = None
    ebill: EBillClient | None = None  # the fiscal e-bill platform (its totals checked on demand)


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.yhf
    return state


StateDep = Annotated[AppState, Depends(get_state)]


async def get_session(state: StateDep) -> AsyncIterator[AsyncSession]:
    """One session a request, committed when the route returns, rolled back when it raises,
    except for a refusal that keeps what the request wrote (`ApiError(keeps_writes=True)`: a
    wrong try counted, a payment left `unknown`). The one earlier commit is `commit_before_call`."""
    async with state.factory() as session:
        try:
            yield session
        except ApiError as err:
            await (session.commit() if err.keeps_writes else session.rollback())
            raise
        except BaseException:
            await session.rollback()
            raise
        await session.commit()


async def commit_before_call(session: AsyncSession) -> None:
    """Commit what the request wrote so far, before a call to Temporal or to another system;
    the request goes on in a new transaction, committed by `get_session`. For two reasons only:
    what the call starts must find its rows (the visit exists before its workflow does; the
    code before the text that carries it), and no lock or transaction is held across the call
    (SQLite would hold its write lock; a patient's payments stay serialised, not blocked)."""
    await session.commit()


# committed when the route returns and before the answer starts (scope="function"): a commit that
# fails is a problem answer, never a 2xx for something that was not stored
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise ApiError(
            401, "unauthorized", "an Authorization: Bearer key is required", headers={"WWW-Authenticate": "Bearer"}
        )
    return token.strip()


def _check(request: Request, expected: str, who: str) -> str:
    if not hmac.compare_digest(_bearer(request).encode(), expected.encode()):
        raise ApiError(401, "unauthorized", f"not a valid {who} key", headers={"WWW-Authenticate": "Bearer"})
    return who


def require_his(request: Request, state: StateDep) -> str:
    return _check(request, state.settings.his_api_key, "his")


def require_ops(request: Request, state: StateDep) -> str:
    return _check(request, state.settings.ops_api_key, "ops")


HisDep = Annotated[str, Depends(require_his)]
OpsDep = Annotated[str, Depends(require_ops)]


async def current_session(request: Request, state: StateDep, session: SessionDep) -> PatientSession:
    """The signed-in patient's session: 401 for a missing, bad, expired or revoked token."""
    sid = session_of(state.settings.data_key, _bearer(request))
    row = await session.get(PatientSession, sid) if sid else None
    if row is None or row.revoked_at is not None or row.expires_at <= utcnow():
        raise ApiError(401, "unauthorized", "sign in again", headers={"WWW-Authenticate": "Bearer"})
    return row


PatientSessionDep = Annotated[PatientSession, Depends(current_session)]


async def current_patient(login: PatientSessionDep, session: SessionDep) -> Patient:
    """The patient record the signed-in phone is linked to (by enrolment or identity)."""
    if login.patient_id is None:
        raise ApiError(
            403, "identity_required", "this phone is not linked to a patient record yet: bind your identity first"
        )
    patient = await session.get(Patient, login.patient_id)
    if patient is None:
        raise ApiError(403, "identity_required", "bind your identity first")
    return patient


PatientDep = Annotated[Patient, Depends(current_patient)]
