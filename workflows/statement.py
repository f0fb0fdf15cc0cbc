"""StatementWorkflow: run each morning by the `daily-statements` schedule (or by an operator
for a given day). Fetches each channel's statement of the day and matches it against the
ledger; mismatches are stored for operators (GET /v1/ops/statements)."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from domain.statement import previous_local_day
    from workflows import contracts as c

# a bill is ready some hours after midnight: keep asking for a while
RETRY = RetryPolicy(initial_interval=timedelta(seconds=10), backoff_coefficient=2.0,
                    maximum_interval=timedelta(minutes=30), maximum_attempts=12,
                    non_retryable_error_types=["invalid_input"])


@workflow.defn
class StatementWorkflow:
    @workflow.run
    async def run(self, inp: c.StatementInput) -> c.StatementsResult:
        day = inp.day or previous_local_day(workflow.now(), inp.timezone)
        results = []
        for channel in inp.channels:
            result = await workflow.execute_activity(
                c.RECONCILE_STATEMENT, c.ReconcileStatementInput(channel=channel, day=day, timezone=inp.timezone),
                result_type=c.StatementResult, start_to_close_timeout=timedelta(minutes=5), retry_policy=RETRY,
                summary=f"match {channel}'s statement of {day}")
            results.append(result)
        workflow.set_current_details("\n\n".join(
            f"**{r.channel} {r.day}:** {r.matched} matched, {r.mismatches} mismatches" for r in results))
        return c.StatementsResult(day=day, results=results)
