"""Daily statements: download a channel's bill and match it against the ledger; and, as the
channel `ebill`, the fiscal e-bill platform's day (checkTotalData): the count and amount of
bills issued and written off that day, ours against the platform's. A mismatch is stored
with the day's run (GET /v1/ops/statements) and logged as a warning, like a channel's. The
channel `nhsa` is the insurance bureau's daily totals check (3201 对总账): activities/nhsa_statement.py."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.nhsa_statement import NHSA, check_totals
from activities.receipts import PLATFORM_AWAY, EBillSync, PendingEBills
from db.models import Payment, Refund, StatementRun
from db.pii import Pii
from db.receipts import ebill_day_totals
from db.repositories import audit, utcnow
from domain.payment import PAID, RefundStatus
from domain.statement import Line, Outcome, day_window, match
from integrations.ebill import DayTotals, EBillClient, EBillRefused, TotalsCheck
from integrations.insurance_bureau import InsuranceBureauClient
from integrations.payments.channels import Channel, StatementLine
from workflows import contracts as c

log = logging.getLogger("yihoufu.statements")
EDGE = timedelta(minutes=10)  # money this close to midnight may be on either day's bill
PAID_STATUSES = [str(s) for s in PAID]
EBILL = "ebill"  # the statement run's name for the fiscal e-bill platform's totals check
PLATFORM_TZ_NAME = "Asia/Shanghai"  # the e-bill platform's day (busDate), whatever the hospital's


def _ref(line: StatementLine) -> Line:
    return Line(
        kind=line.kind,
        ref=line.out_refund_no if line.kind == "refund" else line.out_trade_no,
        amount_fen=line.amount_fen,
    )


def pending_findings(pending: PendingEBills | None) -> list[dict[str, Any]]:
    """The e-bills the sweep could not issue (a write-off refused, or more than one run takes),
    as a finding of the day's run: operators see it in GET /v1/ops/statements."""
    if pending is None or not pending.count:
        return []
    since = pending.oldest_at.isoformat() if pending.oldest_at else "?"
    return [
        {
            "kind": "pending",
            "ref": f"{pending.count} e-bills pending since {since}",
            "problem": "ebill_pending",
            "channel_fen": None,
            "ledger_fen": None,
        }
    ]


def totals_findings(check: TotalsCheck) -> list[dict[str, Any]]:
    """The day's e-bill totals that differ, as statement findings (platform: channel_fen)."""
    theirs, ours = check.platform, check.ours
    findings: list[dict[str, Any]] = []
    for kind, n_platform, n_ours, fen_platform, fen_ours in (
        ("issued", theirs.issued, ours.issued, theirs.issued_fen, ours.issued_fen),
        ("written_off", theirs.written_off, ours.written_off, theirs.written_off_fen, ours.written_off_fen),
    ):
        if (n_platform, fen_platform) != (n_ours, fen_ours):
            findings.append(
                {
                    "kind": kind,
                    "ref": f"bills: platform {n_platform}, ours {n_ours}",
                    "problem": "ebill_totals_mismatch",
                    "channel_fen": fen_platform,
                    "ledger_fen": fen_ours,
                }
            )
    if not check.matched and not findings:  # the platform disagrees though the figures match
        findings.append(
            {
                "kind": "totals",
                "ref": "checkResult 0",
                "problem": "ebill_totals_mismatch",
                "channel_fen": None,
                "ledger_fen": None,
            }
        )
    return findings


async def save_run(
    session: AsyncSession,
    channel: str,
    day: str,
    *,
    matched: int,
    findings: list[dict[str, Any]],
    channel_total_fen: int,
    ledger_total_fen: int,
) -> None:
    """A channel's (or the e-bill platform's) run of a day, replacing an earlier one, audited."""
    run = await session.scalar(select(StatementRun).where(StatementRun.channel == channel, StatementRun.day == day))
    if run is None:
        run = StatementRun(channel=channel, day=day, created_at=utcnow(), matched=0, mismatches=[])
        session.add(run)
    run.matched, run.mismatches = matched, findings
    run.channel_total_fen, run.ledger_total_fen = channel_total_fen, ledger_total_fen
    run.created_at = utcnow()
    audit(
        session,
        actor="reconciliation",
        action="statement_reconciled",
        subject_type="statement",
        subject_id=f"{channel}:{day}",
        matched=matched,
        mismatches=len(findings),
    )


class StatementActivities:
    def __init__(
        self,
        factory: async_sessionmaker[AsyncSession],
        channels: Mapping[str, Channel],
        ebill: EBillClient | None = None,
        pii: Pii | None = None,
        bureau: InsuranceBureauClient | None = None,  # the channel `nhsa`: 3201 对总账 (activities/nhsa_statement.py)
    ) -> None:
        self._factory = factory
        self._channels = channels
        self._ebill = ebill
        self._bureau = bureau
        if ebill is not None and pii is None:
            raise ValueError("the e-bill sweep decrypts the payer's name: give the Pii")
        self._ebills = EBillSync(factory, pii, ebill) if ebill is not None and pii is not None else None

    @staticmethod
    async def _ours(session: AsyncSession, channel: str, start: datetime, end: datetime) -> list[Line]:
        """The ledger's side of the day: payments and refunds of `channel` completed in it."""
        payments = (
            await session.scalars(
                select(Payment).where(
                    Payment.method == channel,
                    Payment.status.in_(PAID_STATUSES),
                    Payment.completed_at >= start,
                    Payment.completed_at < end,
                )
            )
        ).all()
        refunds = (
            await session.scalars(
                select(Refund).where(
                    Refund.method == channel,
                    Refund.status == RefundStatus.succeeded,
                    Refund.completed_at >= start,
                    Refund.completed_at < end,
                )
            )
        ).all()

        def inside(at: datetime | None) -> bool:
            return at is not None and start + EDGE <= at < end - EDGE

        return [
            *(
                Line(kind="payment", ref=p.id, amount_fen=p.amount_fen, inside_day=inside(p.completed_at))
                for p in payments
            ),
            *(
                Line(kind="refund", ref=r.id, amount_fen=r.amount_fen, inside_day=inside(r.completed_at))
                for r in refunds
            ),
        ]

    @staticmethod
    async def _known(session: AsyncSession, lines: list[Line]) -> dict[tuple[str, str], int]:
        """What the ledger knows, on any day, of the channel's lines: their amounts by (kind, ref)."""
        known = {}
        payment_ids = [x.ref for x in lines if x.kind == "payment"]
        refund_ids = [x.ref for x in lines if x.kind == "refund"]
        for p in (
            await session.scalars(select(Payment).where(Payment.id.in_(payment_ids), Payment.status.in_(PAID_STATUSES)))
        ).all():
            known[("payment", p.id)] = p.amount_fen
        for r in (
            await session.scalars(
                select(Refund).where(Refund.id.in_(refund_ids), Refund.status == RefundStatus.succeeded)
            )
        ).all():
            known[("refund", r.id)] = r.amount_fen
        return known

    @staticmethod
    async def _store(session: AsyncSession, inp: c.ReconcileStatementInput, outcome: Outcome) -> list[dict[str, Any]]:
        """The day's run (replacing an earlier one of the same day), audited; answers its findings."""
        findings = [{**asdict(f), "problem": str(f.problem)} for f in outcome.findings]
        await save_run(
            session,
            inp.channel,
            inp.day,
            matched=outcome.matched,
            findings=findings,
            channel_total_fen=outcome.channel_total_fen,
            ledger_total_fen=outcome.ledger_total_fen,
        )
        return findings

    async def _check_ebills(self, client: EBillClient, inp: c.ReconcileStatementInput) -> c.StatementResult:
        """The sweep of the e-bills left pending (a platform away at settlement), then
        checkTotalData: our day's bills against the platform's; the findings stored as a run,
        with the e-bills still pending after the sweep (`ebill_pending`)."""
        start, end = day_window(inp.day, PLATFORM_TZ_NAME)  # busDate is the platform's (Beijing) day
        try:
            swept = await self._ebills.sweep() if self._ebills is not None else None
            async with self._factory() as session:
                issued, issued_fen, off, off_fen = await ebill_day_totals(session, start, end)
            ours = DayTotals(issued=issued, issued_fen=issued_fen, written_off=off, written_off_fen=off_fen)
            check = await client.check_totals(datetime.fromisoformat(inp.day).date(), ours)
        except PLATFORM_AWAY as e:
            raise ApplicationError(f"the e-bill platform did not answer: {e}", type="ebill_unavailable") from e
        except EBillRefused as e:  # the same figures are refused again: for a person to look at
            raise ApplicationError(
                f"the e-bill platform refused the totals check: {e}", type="ebill_refused", non_retryable=True
            ) from e
        theirs, findings = check.platform, totals_findings(check)
        matched = 0 if findings else ours.issued + ours.written_off
        findings += pending_findings(swept.pending if swept is not None else None)
        async with self._factory() as session, session.begin():
            await save_run(
                session,
                EBILL,
                inp.day,
                matched=matched,
                findings=findings,
                channel_total_fen=theirs.issued_fen - theirs.written_off_fen,
                ledger_total_fen=ours.issued_fen - ours.written_off_fen,
            )
        for f in findings:
            log.warning(
                "e-bill totals %s: %s %s (platform %s fen, ours %s fen)",
                inp.day,
                f["kind"],
                f["ref"],
                f["channel_fen"],
                f["ledger_fen"],
            )
        return c.StatementResult(channel=EBILL, day=inp.day, matched=matched, mismatches=len(findings))

    @activity.defn(name=c.RECONCILE_STATEMENT)
    async def reconcile_statement(self, inp: c.ReconcileStatementInput) -> c.StatementResult:
        if inp.channel == NHSA and self._bureau is not None:
            return await check_totals(self._factory, self._bureau, inp)
        if inp.channel == EBILL and self._ebill is not None:
            return await self._check_ebills(self._ebill, inp)
        source = self._channels.get(inp.channel)
        if source is None or not source.keeps_statements:
            raise ApplicationError(
                f"channel {inp.channel} has no statements here", type="invalid_input", non_retryable=True
            )
        channel = [_ref(line) for line in await source.statement(inp.day)]
        start, end = day_window(inp.day, inp.timezone)
        async with self._factory() as session, session.begin():
            ours = await self._ours(session, inp.channel, start, end)
            outcome = match(channel, ours, known=await self._known(session, channel))
            findings = await self._store(session, inp, outcome)
        for f in findings:
            log.warning(
                "statement %s %s: %s %s (channel %s fen, ledger %s fen)",
                inp.channel,
                inp.day,
                f["problem"],
                f["ref"],
                f["channel_fen"],
                f["ledger_fen"],
            )
        return c.StatementResult(channel=inp.channel, day=inp.day, matched=outcome.matched, mismatches=len(findings))
