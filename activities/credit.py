"""The credit platform: default reports and their corrections (once per visit each), the
answers to objections, the deletion of expired records.

A report carries the debt only (integrations/credit_platform.py `FIELDS`): the person's name
and ID number (decrypted here, from our PII store: the workflow carries ids only), the creditor
(a setting), the amount, the visit day and the deadline, the status; a negative report the
evidence of the pre-default notice (the SMS we recorded: the provider's id of it, Aliyun's BizId,
or our outbox row's when the transport gave none, and which of the two it is). Nothing of the bill's items, the
department or the doctor is read."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from db.models import CreditObjection, CreditReport, LedgerEntry, Patient, SmsMessage, Visit
from db.oversight import Dispute
from db.pii import Pii
from db.repositories import audit
from domain.bill import SIGN, EntryKind
from domain.sanctions import CreditReportKind, DisputeOutcome, DisputeStatus
from integrations.credit_platform import (
    OBJECTION_OPENER_VISIT_CLOSED,
    CreditPlatformClient,
    CreditRecord,
    MessageIdKind,
    Notice,
    ObjectionAnswer,
    RecordStatus,
)
from integrations.gateway import GatewayError
from workflows import contracts as c, contracts_credit as k

NOTICE_TEMPLATE = "pre_default"  # the text that warns of the lock and the report (workflows/sanctions.py)
SWEEP_LIMIT = 200  # records or objections one sweep handles; the next run takes the rest


def rejected(err: GatewayError) -> ApplicationError:
    return ApplicationError(str(err), type="credit_platform_rejected", non_retryable=True)


class CreditActivities:
    def __init__(
        self,
        factory: async_sessionmaker[AsyncSession],
        platform: CreditPlatformClient,
        pii: Pii,
        *,
        creditor: tuple[str, str],
        timezone: str,
    ) -> None:
        self._factory = factory
        self._platform = platform
        self._pii = pii
        self._creditor = creditor
        self._zone = ZoneInfo(timezone)

    @activity.defn(name=c.REPORT_CREDIT)
    async def report_credit(self, inp: c.ReportCreditInput) -> c.ReportCreditResult:
        if inp.kind not in tuple(CreditReportKind):
            raise ApplicationError(f"no credit report of kind {inp.kind}", type="invalid_input", non_retryable=True)
        key = f"credit-{inp.kind}:{inp.visit_id}"
        record = await self._record(inp, key)
        # ask first, record after: the platform deduplicates the request id on a retry
        try:
            record_id = await self._platform.submit(record)
        except GatewayError as err:
            if err.retryable:
                raise
            raise rejected(err) from err
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
                        record_id=record_id,
                        status=str(record.status),
                    )
                )
                notice = record.notice
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
                    status=str(record.status),
                    **(
                        {
                            "notice_sent_at": notice.sent_at.isoformat(),
                            "notice_channel": notice.channel,
                            "notice_message_id": notice.message_id,
                            "notice_message_id_kind": str(notice.message_id_kind),
                        }
                        if notice
                        else {}
                    ),
                )
        return c.ReportCreditResult(record_id=record_id)

    async def _record(self, inp: c.ReportCreditInput, key: str) -> CreditRecord:
        """The report as it goes out, from our records: identity, creditor, amount, dates, status."""
        async with self._factory() as session:
            patient = await session.get(Patient, inp.patient_id)
            visit = await session.get(Visit, inp.visit_id)
            if patient is None or visit is None:
                raise ApplicationError(
                    f"no patient {inp.patient_id} or visit {inp.visit_id}", type="invalid_input", non_retryable=True
                )
            if inp.kind == CreditReportKind.report:
                status, notice = RecordStatus.reported, await self._notice(session, inp)
            else:
                status, notice = await self._correction_status(session, visit), None
        code, name = self._creditor
        return CreditRecord(
            kind=inp.kind,
            request_id=key,
            customer_ref=inp.patient_id,
            account_no=inp.visit_id,
            subject_name=self._pii.decrypt(patient.name_cipher),
            subject_id_number=self._pii.decrypt(patient.id_number_cipher) if patient.id_number_cipher else None,
            creditor_code=code,
            creditor_name=name,
            amount_owed_fen=inp.amount_fen,
            visit_date=visit.created_at.astimezone(self._zone).date(),
            due_date=visit.due_at.astimezone(self._zone).date() if visit.due_at else None,
            reported_at=inp.at,
            status=status,
            notice=notice,
        )

    async def _notice(self, session: AsyncSession, inp: c.ReportCreditInput) -> Notice:
        """§15: the pre-default text we recorded for the visit (the one the workflow sent, at or
        before `notice_sent_at`). With no text on record as sent (no phone, or the gateway or the
        carrier failed it: the notice reached the app's inbox only) the app is the channel; with
        neither, no report goes out."""
        query = select(SmsMessage).where(
            SmsMessage.visit_id == inp.visit_id, SmsMessage.template == NOTICE_TEMPLATE, SmsMessage.status == "sent"
        )
        if inp.notice_sent_at is not None:
            query = query.where(SmsMessage.created_at <= inp.notice_sent_at)
        sms = (await session.scalars(query.order_by(SmsMessage.created_at.desc(), SmsMessage.id.desc()))).first()
        if sms is not None:  # the provider's receipt (Aliyun's BizId); none (the log transport): our row's
            return Notice(
                sent_at=inp.notice_sent_at or sms.created_at,
                channel="sms",
                message_id=sms.provider_message_id or str(sms.id),
                message_id_kind=MessageIdKind.provider if sms.provider_message_id else MessageIdKind.outbox,
                template=sms.template,
            )
        if inp.notice_sent_at is not None:
            return Notice(
                sent_at=inp.notice_sent_at,
                channel="app",
                message_id=f"visit-{inp.visit_id}:sms:{NOTICE_TEMPLATE}",
                message_id_kind=MessageIdKind.inbox,
                template=NOTICE_TEMPLATE,
            )
        raise ApplicationError(
            f"no pre-default notice on record for visit {inp.visit_id}: no report without one",
            type="notice_missing",
            non_retryable=True,
        )

    async def _correction_status(self, session: AsyncSession, visit: Visit) -> RecordStatus:
        """Why the default is withdrawn, from the ledger (the visit's status is recorded after
        the correction): waived (a waiver, a write-off), paid (nothing owed), or withdrawn (a
        hold or an upheld dispute took the report back with the bill still open)."""
        entries = (
            await session.execute(
                select(LedgerEntry.kind, func.sum(LedgerEntry.amount_fen))
                .where(LedgerEntry.visit_id == visit.id)
                .group_by(LedgerEntry.kind)
            )
        ).all()
        sums = {str(kind): int(total or 0) for kind, total in entries}
        if sums.get(EntryKind.waiver) or visit.payment_status == "written_off":
            return RecordStatus.corrected_waived
        balance = sum(SIGN[EntryKind(kind)] * total for kind, total in sums.items())
        return RecordStatus.corrected_paid if balance <= 0 else RecordStatus.corrected_withdrawn

    @activity.defn(name=k.ANSWER_CREDIT_OBJECTIONS)
    async def answer_credit_objections(self, inp: k.CreditSweepInput) -> k.CreditSweepResult:
        """Each objection whose dispute is resolved: upheld, the platform is told the record is
        corrected (once the correction went, which the visit sends when it undoes the report; on
        a visit whose workflow has closed, once its records are deleted there); rejected, that
        it is confirmed. The audit names the operator who decided."""
        async with self._factory() as session:
            rows = (
                await session.execute(
                    select(CreditObjection, Dispute)
                    .join(Dispute, Dispute.id == CreditObjection.dispute_id)
                    .where(CreditObjection.answered_at.is_(None), Dispute.status == str(DisputeStatus.resolved))
                    .order_by(CreditObjection.received_at)
                    .limit(SWEEP_LIMIT)
                )
            ).all()
            pending = [(o.id, o.visit_id, d.outcome, d.opened_by, d.resolved_by) for o, d in rows]
        done = []
        for objection_id, visit_id, outcome, opened_by, decided_by in pending:
            decided = await self._answer_of(objection_id, visit_id, outcome, opened_by, decided_by, inp.at)
            if decided is None:
                continue  # not ready: the next run answers
            answer, correction = decided
            try:
                await self._platform.answer_objection(
                    request_id=f"credit-objection:{objection_id}",
                    objection_id=objection_id,
                    answer=answer,
                    record_id=correction,
                    at=inp.at,
                )
            except GatewayError as err:
                if err.retryable:
                    raise
                # refused for good (an objection the platform does not know): the others go on
                activity.logger.warning("objection %s not answered: %s", objection_id, err)
                continue
            async with self._factory() as session, session.begin():
                row = await session.get(CreditObjection, objection_id)
                assert row is not None
                if row.answered_at is None:
                    row.answer, row.answered_at = str(answer), inp.at
                    audit(
                        session,
                        actor="credit_upkeep",
                        action=f"credit_objection_{answer}",
                        subject_type="visit",
                        subject_id=visit_id,
                        at=inp.at,
                        objection_id=objection_id,
                        record_id=row.record_id,
                        correction_record_id=correction,
                        decided_by=decided_by,
                    )
            done.append(objection_id)
        return k.CreditSweepResult(done=done)

    async def _answer_of(
        self,
        objection_id: str,
        visit_id: str,
        outcome: str | None,
        opened_by: str,
        decided_by: str | None,
        at: datetime,
    ) -> tuple[ObjectionAnswer, str | None] | None:
        """The answer to an objection whose dispute is resolved, and the correction it names;
        None while it cannot be given yet."""
        if outcome != DisputeOutcome.upheld:
            return ObjectionAnswer.confirmed, None
        if opened_by == OBJECTION_OPENER_VISIT_CLOSED:
            # the visit's workflow has closed: no correction will come; the records go
            if not await self._delete_records(visit_id, f"objection {objection_id} upheld by {decided_by}", at):
                return None  # a deletion refused (logged): answered once the records are gone
            return ObjectionAnswer.corrected, None
        correction = await self._correction_of(visit_id)
        if correction is None and await self._reported(visit_id):
            return None  # the visit has not sent its correction yet
        return ObjectionAnswer.corrected, correction

    async def _delete_records(self, visit_id: str, why: str, at: datetime) -> bool:
        """Every record of the visit still at the platform deleted there (an upheld objection on
        a closed visit), each recorded (`expired_at`) and audited (`credit_record_deleted`);
        False when the platform refused one for good."""
        async with self._factory() as session:
            reports = (
                await session.execute(
                    select(CreditReport.id, CreditReport.record_id).where(
                        CreditReport.visit_id == visit_id,
                        CreditReport.expired_at.is_(None),
                        CreditReport.record_id.is_not(None),
                    )
                )
            ).all()
        deleted = [
            await self._delete(
                row_id, record_id, key="credit-objection-delete", reason="objection_upheld", why=why, at=at
            )
            for row_id, record_id in reports
            if record_id is not None
        ]
        return all(deleted)

    async def _delete(self, row_id: int, record_id: str, *, key: str, reason: str, why: str, at: datetime) -> bool:
        """One record deleted at the platform (one it holds none of: gone all the same), then
        recorded and audited; False when the platform refused it for good."""
        try:
            await self._platform.delete(request_id=f"{key}:{record_id}", record_id=record_id, reason=reason, at=at)
        except GatewayError as err:
            if err.retryable:
                raise
            if err.code != "NoSuchRecord":
                activity.logger.warning("credit record %s not deleted: %s", record_id, err)
                return False
        async with self._factory() as session, session.begin():
            report = await session.get(CreditReport, row_id)
            assert report is not None
            if report.expired_at is None:
                report.expired_at = at
                audit(
                    session,
                    actor="credit_upkeep",
                    action="credit_record_deleted",
                    subject_type="patient",
                    subject_id=report.patient_id,
                    reason=why,
                    at=at,
                    visit_id=report.visit_id,
                    record_id=record_id,
                    kind=report.kind,
                )
        return True

    async def _correction_of(self, visit_id: str) -> str | None:
        async with self._factory() as session:
            return await session.scalar(
                select(CreditReport.record_id).where(
                    CreditReport.visit_id == visit_id, CreditReport.kind == CreditReportKind.correction
                )
            )

    async def _reported(self, visit_id: str) -> bool:
        async with self._factory() as session:
            found = await session.scalar(
                select(CreditReport.id).where(
                    CreditReport.visit_id == visit_id, CreditReport.kind == CreditReportKind.report
                )
            )
            return found is not None

    @activity.defn(name=k.EXPIRE_CREDIT_RECORDS)
    async def expire_credit_records(self, inp: k.CreditSweepInput) -> k.CreditSweepResult:
        """The visits whose debt ended (their correction) more than `retention_days` before
        `at`: each of their records at the platform is deleted there, and that is recorded
        (the row's `expired_at`, an audit entry `credit_record_deleted` on the patient)."""
        cutoff = inp.at - timedelta(days=inp.retention_days)
        ended = (
            select(CreditReport.visit_id, func.max(CreditReport.at).label("ended_at"))
            .where(CreditReport.kind == CreditReportKind.correction)
            .group_by(CreditReport.visit_id)
            .subquery()
        )
        async with self._factory() as session:
            rows = (
                await session.execute(
                    select(CreditReport.id, CreditReport.record_id, ended.c.ended_at)
                    .join(ended, ended.c.visit_id == CreditReport.visit_id)
                    .where(
                        ended.c.ended_at <= cutoff,
                        CreditReport.expired_at.is_(None),
                        CreditReport.record_id.is_not(None),
                    )
                    .order_by(CreditReport.id)
                    .limit(SWEEP_LIMIT)
                )
            ).all()
        done = []
        for row_id, record_id, ended_at in rows:
            why = f"the debt ended {as_text(ended_at)}: kept {inp.retention_days} days"
            expired = await self._delete(
                row_id, record_id, key="credit-expire", reason="retention_expired", why=why, at=inp.at
            )
            if expired:
                done.append(record_id)
        return k.CreditSweepResult(done=done)


def as_text(at: datetime) -> str:
    return at.isoformat()
