"""The worker: wires the Temporal client, the database and the integrations into one Worker.

`python worker.py` runs it with the settings from the environment."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
)
from temporalio.runtime import Runtime
from temporalio.worker import Interceptor, Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

import observability
from activities.credit import CreditActivities
from activities.insurance import InsuranceActivities, SettlementActivities
from activities.insurance_mobile import MobileActivities
from activities.insurance_refunds import InsuranceRefunds
from activities.ledger import LedgerActivities
from activities.nhsa_statement import NHSA
from activities.notify import NotifyActivities
from activities.oversight import OversightActivities
from activities.payments import PaymentActivities
from activities.receipts import ReceiptActivities
from activities.refunds import RefundActivities
from activities.statements import EBILL, StatementActivities
from config import Settings, get_settings
from db.pii import Pii
from db.session import create_engine, session_factory
from db.sms import OutboxSender
from integrations.factory import Integrations, build_integrations
from integrations.temporal import connect as connect_temporal
from ledger.handoff import Deliverer
from workflows import contracts as c, contracts_credit as k
from workflows.credit_upkeep import CreditUpkeepWorkflow
from workflows.insurance import InsurancePaymentWorkflow
from workflows.insurance_mobile import MobileInsurancePaymentWorkflow
from workflows.reconcile import ReconcileWorkflow
from workflows.refund import RefundWorkflow
from workflows.statement import StatementWorkflow
from workflows.visit import VisitWorkflow

log = logging.getLogger("yihoufu.worker")

# The pure domain and the payload types are shared with the sandbox rather than re-imported
# in it, so payload types (datetime above all) are the same classes on both sides.
WORKFLOW_RUNNER = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_modules(
        "domain",
        "workflows.contracts",
        "workflows.contracts_oversight",
        "workflows.contracts_credit",
        "workflows.contracts_mobile",
    )
)


def activity_functions(
    settings: Settings, factory: async_sessionmaker[AsyncSession], integrations: Integrations
) -> Sequence[Callable[..., Any]]:
    channels = integrations.channels
    payments = PaymentActivities(factory, channels)
    refunds = RefundActivities(factory, channels, insurance=InsuranceRefunds(factory, integrations.bureau))
    statements = StatementActivities(factory, channels, integrations.ebill, Pii(settings.data_key), integrations.bureau)
    ledger = LedgerActivities(factory)
    notify = NotifyActivities(
        factory, OutboxSender(factory, Pii(settings.data_key), integrations.sms), Pii(settings.data_key)
    )
    receipts = ReceiptActivities(factory, Pii(settings.data_key), settings.hospital_name, integrations.ebill)
    insurance = InsuranceActivities(factory, integrations.bureau)
    settlements = SettlementActivities(factory, integrations.bureau)
    mobile = MobileActivities(factory, integrations.bureau, settings.insurance_self_pay_timeout)
    credit = CreditActivities(
        factory,
        integrations.credit,
        Pii(settings.data_key),
        creditor=settings.credit_creditor(),
        timezone=settings.timezone,
    )
    oversight = OversightActivities(factory)
    return [
        ledger.book_registration,
        ledger.apply_visit_event,
        ledger.get_balance,
        ledger.record_payment_status,
        oversight.record_operator_action,
        notify.send_sms,
        insurance.lock_card,
        insurance.unlock_card,
        credit.report_credit,
        credit.answer_credit_objections,
        credit.expire_credit_records,
        payments.find_stale_payments,
        payments.reconcile_payment,
        payments.close_payment,
        refunds.refund_credit,
        refunds.submit_refund,
        refunds.check_refund,
        refunds.find_stale_refunds,
        receipts.issue_receipt,
        statements.reconcile_statement,
        settlements.settle_insurance,
        settlements.reverse_insurance,
        settlements.book_insurance,
        mobile.settle_mobile_order,
        mobile.revoke_mobile_order,
        mobile.find_orphaned_mobile_orders,
    ]


def create_worker(
    client: Client,
    settings: Settings,
    factory: async_sessionmaker[AsyncSession],
    stack: AsyncExitStack,
    *,
    task_queue: str | None = None,
    integrations: Integrations | None = None,
    interceptors: Sequence[Interceptor] | None = None,
) -> Worker:
    """`interceptors`: unset, tracing's when it is on (none twice: the client's are inherited)."""
    integrations = integrations or build_integrations(settings, stack)
    given = observability.temporal_interceptors() if interceptors is None else interceptors
    return Worker(
        client,
        task_queue=task_queue or settings.task_queue,
        workflows=[
            VisitWorkflow,
            ReconcileWorkflow,
            RefundWorkflow,
            StatementWorkflow,
            InsurancePaymentWorkflow,
            MobileInsurancePaymentWorkflow,
            CreditUpkeepWorkflow,
        ],
        workflow_runner=WORKFLOW_RUNNER,
        activities=activity_functions(settings, factory, integrations),
        graceful_shutdown_timeout=settings.worker_shutdown_grace,
        max_concurrent_activities=settings.worker_max_concurrent_activities,
        max_cached_workflows=settings.worker_max_cached_workflows,
        interceptors=observability.interceptors_for(client, given),
    )


async def connect(settings: Settings, stop: asyncio.Event) -> Client | None:
    """Connect to Temporal (TLS, API key and the payload codec as configured: integrations/temporal.py),
    waiting for it if it is not up yet (or restarting)."""
    delay = 0.5
    while not stop.is_set():
        try:
            # tracing, when on: the worker on this client inherits it, the outbox's signals carry it
            return await connect_temporal(settings, interceptors=observability.temporal_interceptors())
        except RuntimeError as err:  # the reason in full: a refused certificate says so (TLS, mTLS)
            log.warning(
                "Temporal at %s not reachable (%s); retrying in %.1fs",
                settings.temporal_address,
                str(err).removeprefix("Failed client connect: ")[:300],
                delay,
            )
        try:
            await asyncio.wait_for(stop.wait(), timeout=delay)
        except TimeoutError:
            delay = min(delay * 2, 10)
    return None


async def keep_schedule(client: Client, schedule_id: str, schedule: Schedule) -> None:
    """Create the schedule once; a later start keeps it as the settings say now."""
    try:
        await client.create_schedule(schedule_id, schedule)
    except ScheduleAlreadyRunningError:
        await client.get_schedule_handle(schedule_id).update(lambda _: ScheduleUpdate(schedule=schedule))


async def ensure_reconcile_schedule(client: Client, settings: Settings) -> None:
    """The schedule that runs ReconcileWorkflow; created once, its interval kept up to date."""
    schedule = Schedule(
        action=ScheduleActionStartWorkflow(
            ReconcileWorkflow.run,
            c.ReconcileInput(
                older_than_seconds=settings.reconcile_after.total_seconds(),
                expire_after_seconds=settings.order_expires_after.total_seconds(),
            ),
            id="reconcile-payments-run",
            task_queue=settings.task_queue,
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=settings.reconcile_every)]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )
    await keep_schedule(client, c.RECONCILE_SCHEDULE_ID, schedule)


async def ensure_statement_schedule(client: Client, settings: Settings, integrations: Integrations) -> None:
    """Each morning, match yesterday's statements of the configured channels (none: no schedule)."""
    channels = [name for name, channel in integrations.channels.items() if channel.keeps_statements]
    if integrations.ebill is not None:
        channels.append(EBILL)  # the e-bill platform's totals of the day (checkTotalData), last
    channels.append(NHSA)  # the insurance bureau's totals of the day (3201 对总账)
    if not channels:
        return
    schedule = Schedule(
        action=ScheduleActionStartWorkflow(
            StatementWorkflow.run,
            c.StatementInput(channels=channels, timezone=settings.timezone),
            id="daily-statements-run",
            task_queue=settings.task_queue,
        ),
        spec=ScheduleSpec(cron_expressions=[settings.statement_cron], time_zone_name=settings.timezone),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )
    await keep_schedule(client, c.STATEMENT_SCHEDULE_ID, schedule)


async def ensure_credit_upkeep_schedule(client: Client, settings: Settings) -> None:
    """The schedule that runs CreditUpkeepWorkflow (objections answered, expired records deleted)."""
    schedule = Schedule(
        action=ScheduleActionStartWorkflow(
            CreditUpkeepWorkflow.run,
            k.CreditUpkeepInput(retention_days=settings.credit_retention_days),
            id="credit-upkeep-run",
            task_queue=settings.task_queue,
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=settings.credit_upkeep_every)]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )
    await keep_schedule(client, k.CREDIT_UPKEEP_SCHEDULE_ID, schedule)


async def main() -> None:
    settings = get_settings()
    observability.setup_logging(settings.log_format or "json", settings.log_level)
    observability.setup_tracing("yihoufu-worker")
    if settings.worker_metrics_address:  # before the first client: the SDK's metrics on this runtime
        Runtime.set_default(observability.temporal_runtime(settings.worker_metrics_address))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    settings.credit_creditor()  # no creditor code (outside the sandbox): stop here, before anything starts
    async with AsyncExitStack() as stack:
        integrations = build_integrations(settings, stack)  # a gateway without a URL stops us here
        client = await connect(settings, stop)
        if client is None:
            return
        engine = create_engine(settings.database_url)
        stack.push_async_callback(engine.dispose)
        factory = session_factory(engine)
        worker = create_worker(client, settings, factory, stack, integrations=integrations)
        await ensure_reconcile_schedule(client, settings)
        await ensure_statement_schedule(client, settings, integrations)
        await ensure_credit_upkeep_schedule(client, settings)
        # the outbox of visit notifications: what the API could not tell Temporal, told from here
        delivering = asyncio.create_task(Deliverer(client, factory).run(stop))
        async with worker:
            if settings.worker_health_address:
                health = await observability.serve_health(
                    settings.worker_health_address, observability.worker_ready(worker, client)
                )
                stack.callback(health.close)
            log.info("worker polling %s on %s", settings.task_queue, settings.temporal_address)
            await stop.wait()
        await delivering
    log.info("worker stopped")


if __name__ == "__main__":
    asyncio.run(main())
    # The Temporal core runtime's threads can trip CPython's finalizer ("PyGILState_Release");
    # everything is shut down and flushed by now, so leave without finalizing.
    logging.shutdown()
    os._exit(0)
