"""Daily statements: download a channel's bill and match it against the ledger."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import activity
from temporalio.exceptions import ApplicationError

from db.models import Payment, Refund, StatementRun
from db.repositories import audit, utcnow
from domain.payment import PAID, RefundStatus
from domain.statement import Line, day_window, match
from integrations.payments.channels import Channel
from integrations.payments.wechat import StatementLine
from workflows import contracts as c

log = logging.getLogger("yihoufu.statements")
EDGE = timedelta(minutes=10)  # money this close to midnight may be on either day's bill
PAID_STATUSES = [str(s) for s in PAID]


def _ref(line: StatementLine) -> Line:
    return Line(kind=line.kind, ref=line.out_refund_no if line.kind == "refund" else line.out_trade_no,
                amount_fen=line.amount_fen)


class StatementActivities:
    def __init__(self, factory: async_sessionmaker[AsyncSession], channels: Mapping[str, Channel]) -> None:
        self._factory = factory
        self._channels = channels

    @activity.defn(name=c.RECONCILE_STATEMENT)
    async def reconcile_statement(self, inp: c.ReconcileStatementInput) -> c.StatementResult:
        source = self._channels.get(inp.channel)
        if source is None or not source.keeps_statements:
            raise ApplicationError(f"channel {inp.channel} has no statements here", type="invalid_input",
                                   non_retryable=True)
        channel = [_ref(line) for line in await source.statement(inp.day)]
        start, end = day_window(inp.day, inp.timezone)
        async with self._factory() as session, session.begin():
            payments = (await session.scalars(select(Payment).where(
                Payment.method == inp.channel, Payment.status.in_(PAID_STATUSES),
                Payment.completed_at >= start, Payment.completed_at < end))).all()
            refunds = (await session.scalars(select(Refund).where(
                Refund.method == inp.channel, Refund.status == RefundStatus.succeeded,
                Refund.completed_at >= start, Refund.completed_at < end))).all()
            ours = [Line(kind="payment", ref=p.id, amount_fen=p.amount_fen,
                         inside_day=start + EDGE <= p.completed_at < end - EDGE) for p in payments]
            ours += [Line(kind="refund", ref=r.id, amount_fen=r.amount_fen,
                          inside_day=start + EDGE <= r.completed_at < end - EDGE) for r in refunds]
            known = {}
            other_payments = [x.ref for x in channel if x.kind == "payment"]
            other_refunds = [x.ref for x in channel if x.kind == "refund"]
            for p in (await session.scalars(select(Payment).where(
                    Payment.id.in_(other_payments), Payment.status.in_(PAID_STATUSES)))).all():
                known[("payment", p.id)] = p.amount_fen
            for r in (await session.scalars(select(Refund).where(
                    Refund.id.in_(other_refunds), Refund.status == RefundStatus.succeeded))).all():
                known[("refund", r.id)] = r.amount_fen
            outcome = match(channel, ours, known=known)
            findings = [{**asdict(f), "problem": str(f.problem)} for f in outcome.findings]
            run = await session.scalar(select(StatementRun).where(StatementRun.channel == inp.channel,
                                                                  StatementRun.day == inp.day))
            if run is None:
                run = StatementRun(channel=inp.channel, day=inp.day, created_at=utcnow(), matched=0, mismatches=[],
                                   channel_total_fen=0, ledger_total_fen=0)
                session.add(run)
            run.matched, run.mismatches = outcome.matched, findings
            run.channel_total_fen, run.ledger_total_fen = outcome.channel_total_fen, outcome.ledger_total_fen
            run.created_at = utcnow()
            audit(session, actor="reconciliation", action="statement_reconciled", subject_type="statement",
                  subject_id=f"{inp.channel}:{inp.day}", matched=outcome.matched, mismatches=len(findings))
        for f in findings:
            log.warning("statement %s %s: %s %s (channel %s fen, ledger %s fen)", inp.channel, inp.day,
                        f["problem"], f["ref"], f["channel_fen"], f["ledger_fen"])
        return c.StatementResult(channel=inp.channel, day=inp.day, matched=outcome.matched,
                                 mismatches=len(findings))
