"""The hand-off of money to the workflows, after its commit.

`Deliverer` delivers the outbox of visit notifications (ledger/outbox.py): the API tells a
payment's visits right after its commit, and the worker's loop retries whatever Temporal did
not accept until it does. A signal only wakes the visit, which re-reads the ledger, so telling
it twice is harmless; a visit whose workflow has ended waits for nothing (delivered).
`Handoff` is what the API does after a commit of money: tell the visits, start or wake the
refunds' workflows, tell an insurance saga its self-pay part landed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError, RPCStatusCode

from db.models import Refund, Visit, VisitNotification
from db.repositories import totals_by_visit
from db.session import transaction
from domain.money import format_fen
from domain.policy import settling
from ledger import outbox
from ledger.payments import Landed
from ledger.refunds import refund_input
from workflows import contracts as c
from workflows.insurance import InsurancePaymentWorkflow
from workflows.refund import RefundWorkflow
from workflows.visit import VisitWorkflow

log = logging.getLogger("yihoufu.outbox")

SIGNAL_TIMEOUT = timedelta(seconds=5)
SETTLED_POLL = timedelta(milliseconds=100)  # how often a payment's answer looks for its visits settled


class Deliverer:
    def __init__(
        self,
        client: Client,
        factory: async_sessionmaker[AsyncSession],
        *,
        every: timedelta = timedelta(seconds=1),
        max_backoff: timedelta = timedelta(seconds=10),
    ) -> None:
        self._client, self._factory = client, factory
        self._every, self._max_backoff = every, max_backoff

    async def _signal(self, row: VisitNotification) -> str | None:
        """None when Temporal took it (or the visit's workflow has ended); else why not."""
        try:
            await self._client.get_workflow_handle(c.workflow_id(row.visit_id)).signal(
                VisitWorkflow.payment_received,
                c.PaymentReceivedInput(payment_id=row.payment_id, amount_fen=row.amount_fen),
                rpc_timeout=SIGNAL_TIMEOUT,
            )
        except RPCError as err:
            return None if err.status == RPCStatusCode.NOT_FOUND else f"{err.status.name}: {err.message}"
        except Exception as err:
            return f"{type(err).__name__}: {err}"
        return None

    async def deliver(self, rows: Sequence[VisitNotification], retry_in: timedelta) -> list[VisitNotification]:
        """Signal every row at once, then record the outcome; answers the rows not accepted."""
        errors = await asyncio.gather(*(self._signal(r) for r in rows))
        ok = [r.id for r, e in zip(rows, errors, strict=True) if e is None]
        bad = [(r, e) for r, e in zip(rows, errors, strict=True) if e is not None]
        async with transaction(self._factory) as session:
            await outbox.attempted(session, ok)
            for row, error in bad:
                await outbox.attempted(session, [row.id], error=error, retry_in=retry_in)
        if bad:
            log.warning(
                "%d visit notification(s) not accepted yet, e.g. payment %s to visit %s: %s",
                len(bad),
                bad[0][0].payment_id,
                bad[0][0].visit_id,
                bad[0][1],
            )
        return [r for r, _ in bad]

    async def tell(self, payment_id: str) -> list[str]:
        """Tell the visits a payment touched (again, on a retried request); answers the visits
        whose workflows took it."""
        async with self._factory() as session:
            rows = await outbox.of_payment(session, payment_id)
        bad = {r.id for r in await self.deliver(rows, retry_in=timedelta(seconds=1))} if rows else set()
        return [r.visit_id for r in rows if r.id not in bad]

    async def run(self, stop: asyncio.Event) -> None:
        """The worker's loop: every `every`, deliver what is due; back off while Temporal refuses."""
        wait = self._every
        while not stop.is_set():
            try:
                async with transaction(self._factory) as session:
                    rows = await outbox.claim(session)
                failures = len(await self.deliver(rows, retry_in=min(wait * 2, self._max_backoff))) if rows else 0
            except Exception:
                log.exception("outbox delivery round failed")
                failures = 1
            wait = min(wait * 2, self._max_backoff) if failures else self._every
            try:
                await asyncio.wait_for(stop.wait(), timeout=wait.total_seconds())
            except TimeoutError:
                pass


class Handoff:
    """What follows a commit of money, from the API: tell the visits (through the outbox),
    start the refunds' workflows, wake a refund or an insurance saga. Never raises for
    Temporal being away: the outbox's deliverer and the reconciliation pick up what is left."""

    def __init__(self, client: Client, factory: async_sessionmaker[AsyncSession], task_queue: str) -> None:
        self._client, self._factory, self._task_queue = client, factory, task_queue

    async def tell_visits(self, payment_id: str, *, settled_within: timedelta = timedelta(0)) -> None:
        """Signal every visit the payment touched, all at once, from its notifications in the
        outbox: what Temporal does not take now, the deliverer retries. Told again on a retry.
        With `settled_within`, wait that long at most for the visits that took the signal and
        are paid to record `settled`, their sanctions undone: the answer to the payment is then
        read-your-writes (a visit whose workflow is away is left to the outbox, not waited for)."""
        try:
            told = await Deliverer(self._client, self._factory).tell(payment_id)
        except Exception:
            log.exception("payment %s: its visits are left to the outbox's deliverer", payment_id)
            return
        if not told or settled_within <= timedelta(0):
            return
        if waiting := await self.until_settled(told, settled_within):
            log.warning("payment %s: visits %s not settled within %s", payment_id, waiting, settled_within)

    async def until_settled(self, visit_ids: Sequence[str], within: timedelta) -> list[str]:
        """Wait until none of the visits is paid but not yet recorded settled, at most `within`;
        answers those still settling."""
        deadline = asyncio.get_running_loop().time() + within.total_seconds()
        while True:
            async with self._factory() as session:
                sums = await totals_by_visit(session, visit_ids)
                statuses = (
                    await session.execute(select(Visit.id, Visit.payment_status).where(Visit.id.in_(visit_ids)))
                ).all()
            waiting = [v for v, status in statuses if settling(status, sums[v].balance_fen)]
            if not waiting or asyncio.get_running_loop().time() >= deadline:
                return waiting
            await asyncio.sleep(SETTLED_POLL.total_seconds())

    async def start_refund(self, refund: Refund) -> WorkflowHandle[Any, Any]:
        return await self._client.start_workflow(
            RefundWorkflow.run,
            refund_input(refund),
            id=c.refund_workflow_id(refund.id),
            task_queue=self._task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            static_summary=f"Refund {format_fen(refund.amount_fen)} · visit {refund.visit_id}",
        )

    async def start_refunds(self, refunds: Sequence[Refund]) -> None:
        """Each refund's workflow (a crash before this is picked up by the reconciliation,
        which starts refunds left waiting)."""
        for refund in refunds:
            try:
                await self.start_refund(refund)
            except RPCError as err:
                log.warning("refund %s: workflow not started (the reconciliation will): %s", refund.id, err.message)

    async def wake_refund(self, refund_id: str) -> None:
        try:
            await self._client.get_workflow_handle(c.refund_workflow_id(refund_id)).signal(
                RefundWorkflow.refund_updated
            )
        except RPCError as err:  # finished already, or not started: the reconciliation looks after it
            log.info("refund %s: workflow not told: %s", refund_id, err.message)

    async def landed(self, money: Landed) -> None:
        """Tell the visits (and the insurance saga a self-pay part belongs to), start the refunds."""
        await self.tell_visits(money.payment.id)  # told again on a repeat: harmless
        await self.start_refunds(money.refunds)
        settlement_id = money.payment.insurance_settlement_id
        if settlement_id:
            try:
                await self._client.get_workflow_handle(c.insurance_workflow_id(settlement_id)).signal(
                    InsurancePaymentWorkflow.self_pay_received
                )
            except RPCError as err:  # finished (reversed): the money stays booked as a payment of the bill
                log.info("settlement %s: not told of its self-pay: %s", settlement_id, err.message)
