"""The statement run's channel `nhsa`: the insurance bureau's daily totals check (3201 医药机构费用结算
对总账, integrations/nhsa_totals.py). Our totals of yesterday's settlements at the bureau (the
bureau's day, db/nhsa_totals.py) go out per 险种 and 清算类别; the bureau answers 平 or 不平. The
answer is stored as the day's run (GET /v1/ops/statements?channel=nhsa): 不平 is a finding
(`nhsa_totals_mismatch`, our figures and the bureau's description of its own), never a failure.

The msgid of a check is kept per (day, insutype, clr_type, the figures sent): a re-run of the day
with the same figures is the same request (the bureau answers it as the first time); figures that
changed since (a settlement booked late) are a new request. The bureau away is retried as the run's
other steps are (`bureau_unavailable`); a refusal is for a person (`bureau_refused`)."""

from __future__ import annotations

import logging
from datetime import date
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.exceptions import ApplicationError

from activities.insurance import bureau_msgid
from db.nhsa_totals import NhsaDayTotals, nhsa_day_totals
from db.repositories import utcnow
from domain.statement import day_window
from integrations.gateway import GatewayError
from integrations.insurance_bureau import WORKER, InsuranceBureauClient
from integrations.nhsa_totals import BALANCED, INFNO, DailyTotals
from workflows import contracts as c

log = logging.getLogger("yihoufu.statements")
NHSA = "nhsa"  # the statement run's name for the bureau's daily totals check
# (insutype, clr_type) of every settlement we make: 职工基本医疗保险 (2201/2207 send 310; a 6201 names none,
# the bureau's own), 门诊 (med_type 11)
GROUPS = (("310", "11"),)


def totals_finding(insutype: str, clr_type: str, ours: NhsaDayTotals, description: str) -> dict[str, Any]:
    """不平: our figures, and the bureau's own as its stmt_rslt_dscr words them."""
    return {
        "kind": "totals",
        "ref": (
            f"3201 {insutype}/{clr_type}: ours {ours.count} settlements, medfee {ours.medfee_fen}, "
            f"fund {ours.fund_fen}, acct {ours.acct_fen} fen; bureau: {description[:200]}"
        ),
        "problem": "nhsa_totals_mismatch",
        "channel_fen": None,  # the bureau answers no figures of its own, only its words
        "ledger_fen": ours.medfee_fen,
    }


async def check_totals(
    factory: async_sessionmaker[AsyncSession], bureau: InsuranceBureauClient, inp: c.ReconcileStatementInput
) -> c.StatementResult:
    """3201 of the day for each group; the answers stored as the day's run of `nhsa`."""
    from activities.statements import save_run  # the run's module calls this one: imported here

    day = date.fromisoformat(inp.day)
    start, end = day_window(inp.day, bureau.zone.key)  # the bureau's (Beijing) day
    async with factory() as session:
        ours = await nhsa_day_totals(session, start, end)
    findings: list[dict[str, Any]] = []
    for insutype, clr_type in GROUPS:
        totals = DailyTotals(
            insutype=insutype,
            clr_type=clr_type,
            setl_optins=bureau.admvs,
            stmt_begndate=day,
            stmt_enddate=day,
            medfee_sumamt_fen=ours.medfee_fen,
            fund_pay_sumamt_fen=ours.fund_fen,
            acct_pay_fen=ours.acct_fen,
            fixmedins_setl_cnt=ours.count,
        )
        figures = f"{ours.medfee_fen}:{ours.fund_fen}:{ours.acct_fen}:{ours.count}"
        key = f"{INFNO}:{inp.day}:{insutype}:{clr_type}:{figures}"
        msgid = await bureau_msgid(factory, bureau, key, INFNO)
        try:
            result, description = await bureau.daily_totals(
                totals, msgid=msgid, operator=WORKER, day=bureau.local_day(utcnow())
            )
        except GatewayError as err:
            if err.retryable:
                raise ApplicationError(f"the bureau did not answer 3201: {err}", type="bureau_unavailable") from err
            raise ApplicationError(
                f"the bureau refused the totals check: {err}", type="bureau_refused", non_retryable=True
            ) from err
        if result != BALANCED:
            findings.append(totals_finding(insutype, clr_type, ours, description))
    matched = 0 if findings else ours.settled + ours.reversed
    async with factory() as session, session.begin():
        await save_run(
            session,
            NHSA,
            inp.day,
            matched=matched,
            findings=findings,
            channel_total_fen=0 if findings else ours.medfee_fen,  # the bureau's: known only when it agrees
            ledger_total_fen=ours.medfee_fen,
        )
    for f in findings:
        log.warning("bureau totals %s: %s", inp.day, f["ref"])
    return c.StatementResult(channel=NHSA, day=inp.day, matched=matched, mismatches=len(findings))
