"""Default reports to the credit platform and their corrections, once per visit each."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from db.models import CreditReport
from db.repositories import audit
from domain.sanctions import CreditReportKind
from integrations.credit_platform import CreditPlatformClient
from integrations.gateway import GatewayError
from workflows import contracts as c


class CreditActivities:
    def __init__(self, factory: async_sessionmaker[AsyncSession], platform: CreditPlatformClient) -> None:
        self._factory = factory
        self._platform = platform

    @activity.defn(name=c.REPORT_CREDIT)
    async def report_credit(self, inp: c.ReportCreditInput) -> c.ReportCreditResult:
        if inp.kind not in tuple(CreditReportKind):
            raise ApplicationError(f"no credit report of kind {inp.kind}", type="invalid_input", non_retryable=True)
        key = f"credit-{inp.kind}:{inp.visit_id}"
        # ask first, record after: the platform deduplicates the request id on a retry
        try:
            record_id = await self._platform.submit(
                kind=inp.kind,
                request_id=key,
                patient_id=inp.patient_id,
                visit_id=inp.visit_id,
                amount_fen=inp.amount_fen,
                at=inp.at,
            )
        except GatewayError as err:
            if err.retryable:
                raise
            raise ApplicationError(str(err), type="credit_platform_rejected", non_retryable=True) from err
        async with self._factory() as session, session.begin():
            if not await session.scalar(select(CreditReport.id).where(CreditReport.idempotency_key == key)):
                session.add(
                    CreditReport(
                        idempotency_key=key,
                        patient_id=inp.patient_id,
                        visit_id=inp.visit_id,
                        kind=inp.kind,
                        amount_fen=inp.amount_fen,
                        at=inp.at,
                    )
                )
                audit(
                    session,
                    actor="workflow",
                    action=f"credit_{inp.kind}",
                    subject_type="patient",
                    subject_id=inp.patient_id,
                    at=inp.at,
                    visit_id=inp.visit_id,
                    amount_fen=inp.amount_fen,
                    record_id=record_id,
                )
        return c.ReportCreditResult(record_id=record_id)
