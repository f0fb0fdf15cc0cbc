"""The worker: wires the Temporal client, the database and the integrations into one Worker.

`python worker.py` runs it with the settings from the environment."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Sequence
from contextlib import AsyncExitStack
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import (
    Client, Schedule, ScheduleActionStartWorkflow, ScheduleAlreadyRunningError, ScheduleIntervalSpec,
    ScheduleOverlapPolicy, SchedulePolicy, ScheduleSpec, ScheduleUpdate,
)
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.credit import CreditActivities
from activities.insurance import InsuranceActivities, SettlementActivities
from activities.ledger import LedgerActivities
from activities.notify import NotifyActivities
from activities.payments import PaymentActivities
from activities.receipts import ReceiptActivities
from activities.refunds import RefundActivities
from activities.statements import StatementActivities
from config import Settings, get_settings
from db.pii import Pii
from db.session import create_engine, session_factory
from integrations.factory import Integrations, build_integrations
from workflows import contracts as c
from workflows.insurance import InsurancePaymentWorkflow
from workflows.reconcile import ReconcileWorkflow
from workflows.refund import RefundWorkflow
from workflows.statement import StatementWorkflow
from workflows.visit import VisitWorkflow

log = logging.getLogger("yihoufu.worker")

# The pure domain and the payload types are shared with the sandbox rather than re-imported
# in it, so payload types (datetime above all) are the same classes on both sides.
WORKFLOW_RUNNER = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_modules("domain", "workflows.contracts")
)


def activity_functions(settings: Settings, factory: async_sessionmaker[AsyncSession],
                       integrations: Integrations) -> Sequence[object]:
    channels = integrations.channels
    payments = PaymentActivities(factory, channels)
    refunds = RefundActivities(factory, channels)
    statements = StatementActivities(factory, channels)
    ledger = LedgerActivities(factory)
    notify = NotifyActivities(factory, integrations.sms, Pii(settings.data_key))
    receipts = ReceiptActivities(factory, Pii(settings.data_key), settings.hospital_name)
    insurance = InsuranceActivities(factory, integrations.bureau)
    settlements = SettlementActivities(factory, integrations.bureau)
    credit = CreditActivities(factory, integrations.credit)
    return [ledger.book_registration, ledger.apply_visit_event, ledger.get_balance,
            ledger.record_payment_status, notify.send_sms, insurance.lock_card, insurance.unlock_card,
            credit.report_credit, payments.find_stale_payments, payments.reconcile_payment, payments.close_payment,
            refunds.refund_credit, refunds.submit_refund, refunds.check_refund, refunds.find_stale_refunds,
            receipts.issue_receipt, statements.reconcile_statement, settlements.settle_insurance,
            settlements.reverse_insurance, settlements.book_insurance]


def create_worker(client: Client, settings: Settings, factory: async_sessionmaker[AsyncSession],
                  stack: AsyncExitStack, *, task_queue: str | None = None,
                  integrations: Integrations | None = None) -> Worker:
    integrations = integrations or build_integrations(settings, factory, stack)
    return Worker(
        client,
        task_queue=task_queue or settings.task_queue,
        workflows=[VisitWorkflow, ReconcileWorkflow, RefundWorkflow, StatementWorkflow, InsurancePaymentWorkflow],
        workflow_runner=WORKFLOW_RUNNER,
        activities=activity_functions(settings, factory, integrations),
    )


async def connect(settings: Settings, stop: asyncio.Event) -> Client | None:
    """Connect to Temporal, waiting for it if it is not up yet (or restarting)."""
    delay = 0.5
    while not stop.is_set():
        try:
            return await Client.connect(settings.temporal_address, namespace=settings.temporal_namespace)
        except RuntimeError as err:
            log.warning("Temporal at %s not reachable (%s); retrying in %.1fs", settings.temporal_address,
                        str(err).split(":")[0], delay)
        try:
            await asyncio.wait_for(stop.wait(), timeout=delay)
        except asyncio.TimeoutError:
            delay = min(delay * 2, 10)
    return None


async def ensure_reconcile_schedule(client: Client, settings: Settings) -> None:
    """The schedule that runs ReconcileWorkflow; created once, its interval kept up to date."""
    schedule = Schedule(
        action=ScheduleActionStartWorkflow(
            ReconcileWorkflow.run, c.ReconcileInput(older_than_seconds=settings.reconcile_after.total_seconds(),
                                                    expire_after_seconds=settings.order_expires_after.total_seconds()),
            id="reconcile-payments-run", task_queue=settings.task_queue),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=settings.reconcile_every)]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP))
    try:
        await client.create_schedule(c.RECONCILE_SCHEDULE_ID, schedule)
    except ScheduleAlreadyRunningError:
        await client.get_schedule_handle(c.RECONCILE_SCHEDULE_ID).update(
            lambda _: ScheduleUpdate(schedule=schedule))


async def ensure_statement_schedule(client: Client, settings: Settings, integrations: Integrations) -> None:
    """Each morning, match yesterday's statements of the configured channels (none: no schedule)."""
    channels = [name for name, channel in integrations.channels.items() if channel.keeps_statements]
    if not channels:
        return
    schedule = Schedule(
        action=ScheduleActionStartWorkflow(
            StatementWorkflow.run, c.StatementInput(channels=channels, timezone=settings.timezone),
            id="daily-statements-run", task_queue=settings.task_queue),
        spec=ScheduleSpec(cron_expressions=[settings.statement_cron], time_zone_name=settings.timezone),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP))
    try:
        await client.create_schedule(c.STATEMENT_SCHEDULE_ID, schedule)
    except ScheduleAlreadyRunningError:
        await client.get_schedule_handle(c.STATEMENT_SCHEDULE_ID).update(lambda _: ScheduleUpdate(schedule=schedule))


async def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = get_settings()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    client = await connect(settings, stop)
    if client is None:
        return
    engine = create_engine(settings.database_url)
    async with AsyncExitStack() as stack:
        stack.push_async_callback(engine.dispose)
        factory = session_factory(engine)
        integrations = build_integrations(settings, factory, stack)
        worker = create_worker(client, settings, factory, stack, integrations=integrations)
        await ensure_reconcile_schedule(client, settings)
        await ensure_statement_schedule(client, settings, integrations)
        async with worker:
            log.info("worker polling %s on %s", settings.task_queue, settings.temporal_address)
            await stop.wait()
    log.info("worker stopped")


if __name__ == "__main__":
    asyncio.run(main())
    # The Temporal core runtime's threads can trip CPython's finalizer ("PyGILState_Release");
    # everything is shut down and flushed by now, so leave without finalizing.
    logging.shutdown()
    os._exit(0)
