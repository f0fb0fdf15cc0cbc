"""StatementWorkflow: run each morning by the `daily-statements` schedule (or by an operator
for a given day). Fetches each channel's statement of the day and matches it against the
ledger; mismatches are stored for operators (GET /v1/ops/statements). The channel `ebill`
(last, when the hospital has a fiscal e-bill platform) is the platform's totals check of the
day (checkTotalData), run by the same activity."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from domain.statement import previous_local_day
    from workflows import activities as a, contracts as c
    from workflows.retries import STATEMENT_DOWNLOAD
    from workflows.steps import call


@workflow.defn
class StatementWorkflow:
    @workflow.run
    async def run(self, inp: c.StatementInput) -> c.StatementsResult:
        day = inp.day or previous_local_day(workflow.now(), inp.timezone)
        results = []
        for channel in inp.channels:
            result = await call(
                a.reconcile_statement,
                c.ReconcileStatementInput(channel=channel, day=day, timezone=inp.timezone),
                retries=STATEMENT_DOWNLOAD,
                summary=f"match {channel}'s statement of {day}",
            )
            results.append(result)
        workflow.set_current_details(
            "\n\n".join(f"**{r.channel} {r.day}:** {r.matched} matched, {r.mismatches} mismatches" for r in results)
        )
        return c.StatementsResult(day=day, results=results)
