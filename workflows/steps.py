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
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, FailureError, RetryState

from workflows.retries import Retries

I = TypeVar("I")  # noqa: E741 (the input, beside T the result)
T = TypeVar("T")

ALERT_AFTER = timedelta(minutes=10)
# a local activity is tried once, for at most LOCAL_TRY: a workflow task waits on its local
# activities, and a worker that stops waits on the task
LOCAL_TRY = timedelta(seconds=5)
ONE_TRY = RetryPolicy(maximum_attempts=1)


async def call(
    activity: Callable[[I], Awaitable[T]], arg: I, *, retries: Retries, summary: str, local: bool = False
) -> T:
    """Run `activity` (a stub of workflows.activities) once, retried as `retries` says.

    `local`: first one try as a local activity, run by this worker inside the workflow task that
    asked for it and recorded as a marker, with no task round trip through the server; for short
    writes to our own database that someone is waiting on (a clinical event's booking). Should
    that try fail, the step goes on as a regular activity with `retries`: the same answers, and a
    worker that stops hands it over to the next one."""
    if local and (done := await _local_try(activity, arg, summary)) is not None:
        return done[0]
    return await workflow.execute_activity(
        activity,
        arg,
        start_to_close_timeout=retries.start_to_close,
        schedule_to_close_timeout=retries.schedule_to_close,
        retry_policy=retries.policy,
        summary=summary,
    )


async def _local_try(activity: Callable[[I], Awaitable[T]], arg: I, summary: str) -> tuple[T] | None:
    """One try as a local activity: its result, or None when it failed (whatever the failure:
    the regular activity after it decides, with its own retry policy)."""
    try:
        return (
            await workflow.execute_local_activity(
                activity,
                arg,
                start_to_close_timeout=LOCAL_TRY,
                retry_policy=ONE_TRY,
                summary=summary,
            ),
        )
    except FailureError:  # the SDK raises a local activity's failure as an ActivityError or as its cause
        return None


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
    `alert("")` once it succeeds after an alert. `local`: first one try as a local activity, as
    in `call`."""
    alerted = False
    if local and (done := await _local_try(activity, arg, summary)) is not None:
        return done[0]
    while True:
        try:
            result = await workflow.execute_activity(
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
