"""Raw Temporal in the shape of a visit, for the ratio benchmark (bench/raw.py): a workflow per
visit that takes events as updates, each running one no-op activity (local by default, as the
issue's baseline; a regular one with `regular`), then waits for a pay signal and completes.
Nothing of the product: only what Temporal itself costs for the same conversation."""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow
from temporalio.common import RetryPolicy

EVENTS = 12  # registration and the 11 events of tests/flows.py STEPS: one update each


@activity.defn(name="raw_noop")
async def noop(n: int) -> int:
    return n


@workflow.defn(name="RawVisit")
class RawVisit:
    def __init__(self) -> None:
        self.events = 0
        self.paid = False

    @workflow.run
    async def run(self) -> int:
        await workflow.wait_condition(lambda: self.paid)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.events

    @workflow.update
    async def record_event(self, mode: str) -> int:
        timeout = timedelta(seconds=10)
        retry = RetryPolicy(maximum_attempts=3)
        if mode == "regular":
            await workflow.execute_activity(noop, self.events, start_to_close_timeout=timeout, retry_policy=retry)
        else:
            await workflow.execute_local_activity(noop, self.events, start_to_close_timeout=timeout, retry_policy=retry)
        self.events += 1
        return self.events

    @workflow.signal
    def payment_received(self) -> None:
        self.paid = True
