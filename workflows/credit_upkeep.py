"""CreditUpkeepWorkflow: run by the `credit-upkeep` schedule. Tells the credit platform how
the objections (异议) it sent us ended, once their disputes are resolved, and asks it to delete
the negative records whose debt ended longer ago than the retention (5 years: 征信业管理条例
§16). The time is the workflow's: each run sweeps as of its own start."""

from __future__ import annotations

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from workflows import activities as a, contracts_credit as k
    from workflows.retries import SWEEP
    from workflows.steps import call


@workflow.defn
class CreditUpkeepWorkflow:
    @workflow.run
    async def run(self, inp: k.CreditUpkeepInput) -> k.CreditSweepResult:
        sweep = k.CreditSweepInput(at=workflow.now(), retention_days=inp.retention_days)
        answered = await call(a.answer_credit_objections, sweep, retries=SWEEP, summary="answer resolved objections")
        deleted = await call(a.expire_credit_records, sweep, retries=SWEEP, summary="delete expired credit records")
        workflow.set_current_details(
            f"**objections answered:** {len(answered.done)}\n\n**records deleted:** {len(deleted.done)}"
        )
        return k.CreditSweepResult(done=[*answered.done, *deleted.done])
