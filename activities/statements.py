"""Daily statements: download a channel's bill and match it against the ledger."""

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

from db.models import Payment, Refund, StatementRun
from db.repositories import audit, utcnow
from domain.payment import PAID, RefundStatus
from domain.statement import Line, Outcome, day_window, match
from integrations.payments.channels import Channel, StatementLine
from workflows import contracts as c

log = logging.getLogger("yihoufu.statements")
EDGE = timedelta(minutes=10)  # money this close to midnight may be on either day's bill
PAID_STATUSES = [str(s) for s in PAID]


def _ref(line: StatementLine) -> Line:
    return Line(
        kind=line.kind,
        ref=line.out_refund_no if line.kind == "refund" else line.out_trade_no,
        amount_fen=line.amount_fen,
    )


class StatementActivities:
    def __init__(self, factory: async_sessionmaker[AsyncSession], channels: Mapping[str, Channel]) -> None:
        self._factory = factory
        self._channels = channels

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
        run = await session.scalar(
            select(StatementRun).where(StatementRun.channel == inp.channel, StatementRun.day == inp.day)
        )
        if run is None:
            run = StatementRun(
                channel=inp.channel,
                day=inp.day,
                created_at=utcnow(),
                matched=0,
                mismatches=[],
                channel_total_fen=0,
                ledger_total_fen=0,
            )
            session.add(run)
        run.matched, run.mismatches = outcome.matched, findings
        run.channel_total_fen, run.ledger_total_fen = outcome.channel_total_fen, outcome.ledger_total_fen
        run.created_at = utcnow()
        audit(
            session,
            actor="reconciliation",
            action="statement_reconciled",
            subject_type="statement",
            subject_id=f"{inp.channel}:{inp.day}",
            matched=outcome.matched,
            mismatches=len(findings),
        )
        return findings

    @activity.defn(name=c.RECONCILE_STATEMENT)
    async def reconcile_statement(self, inp: c.ReconcileStatementInput) -> c.StatementResult:
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
