"""How a workflow calls an activity, typed: `until_done` for background steps that must
happen in the end (a refund, an unlock after payment, booking money), `call` for bounded
ones. Deterministic: only sequencing.

`until_done` tries without an attempt limit, in rounds of ALERT_AFTER. When a round runs out
the workflow raises an alert (Temporal UI's current details and the worker log) and the next
round begins; a non-retryable failure is raised at once."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TypeVar

from temporalio import workflow
from temporalio.exceptions import ActivityError, RetryState

from workflows.retries import Retries

I = TypeVar("I")  # noqa: E741 (the input, beside T the result)
T = TypeVar("T")

ALERT_AFTER = timedelta(minutes=10)


async def call(
    activity: Callable[[I], Awaitable[T]], arg: I, *, retries: Retries, summary: str, local: bool = False
) -> T:
    """Run `activity` (a stub of workflows.activities) once, retried as `retries` says.

    `local`: as a local activity, run by this worker inside the workflow task that asked for it
    and recorded as a marker, with no task round trip through the server. For short writes to
    our own database that a caller is waiting on (a clinical event's booking); the retry policy
    and the timeouts are the same, and a retry is as safe, since the activity is idempotent."""
    if local:
        return await workflow.execute_local_activity(
            activity,
            arg,
            start_to_close_timeout=retries.start_to_close,
            schedule_to_close_timeout=retries.schedule_to_close,
            retry_policy=retries.policy,
            summary=summary,
        )
    return await workflow.execute_activity(
        activity,
        arg,
        start_to_close_timeout=retries.start_to_close,
        schedule_to_close_timeout=retries.schedule_to_close,
        retry_policy=retries.policy,
        summary=summary,
    )


async def until_done(
    activity: Callable[[I], Awaitable[T]],
    arg: I,
    *,
    retries: Retries,
    summary: str,
    alert: Callable[[str], None],
    local: bool = False,
) -> T:
    """Run `activity` until it succeeds; `alert(text)` after each round that runs out, and
    `alert("")` once it succeeds after an alert. `local` as in `call`."""
    alerted = False
    while True:
        try:
            run = workflow.execute_local_activity if local else workflow.execute_activity
            result = await run(
                activity,
                arg,
                start_to_close_timeout=retries.start_to_close,
                schedule_to_close_timeout=ALERT_AFTER,
                retry_policy=retries.policy,
                summary=summary,
            )
        except ActivityError as err:
            if err.retry_state is RetryState.NON_RETRYABLE_FAILURE:
                raise
            text = f"{summary}: still failing after {ALERT_AFTER} ({type(err.cause).__name__}); trying again"
            workflow.logger.warning("%s: %s", workflow.info().workflow_id, text)
            alert(text)
            alerted = True
            continue
        if alerted:
            alert("")
        return result
