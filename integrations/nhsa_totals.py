"""3201 医药机构费用结算对总账 (the daily totals check of the NHSA spec): the hospital sends its own
totals of its settlements over a span of days for one 险种 (`insutype`) and 清算类别 (`clr_type`),
and the bureau answers whether its own agree (`stmtinfo.stmt_rslt` "0" 平, "1" 不平, with
`stmt_rslt_dscr`).

The input (`data`): insutype, clr_type, setl_optins (结算经办机构, the bureau's 6-digit area code),
stmt_begndate / stmt_enddate (yyyy-MM-dd, both included), medfee_sumamt (医疗费总额), fund_pay_sumamt
(基金支付总额), acct_pay (个人账户支付金额), in yuan, fixmedins_setl_cnt (定点医药机构结算笔数), and
refd_setl_flag "1": the totals include the reversals (退费/冲正 records, negative), so the figures are
the day's settlements net of the reversals made that day. A net amount may be negative.

InsuranceBureauClient.daily_totals sends it; the figures travel as `DailyTotals` (fen)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from integrations.nhsa import fen_to_yuan

INFNO = "3201"
BALANCED, UNBALANCED = "0", "1"  # stmt_rslt: 平, 不平
WITH_REVERSALS = "1"  # refd_setl_flag: the totals include the reversals (退费结算)


@dataclass(frozen=True, kw_only=True)
class DailyTotals:
    """Our totals of one (insutype, clr_type) over stmt_begndate..stmt_enddate, in fen."""

    insutype: str
    clr_type: str
    setl_optins: str
    stmt_begndate: date
    stmt_enddate: date
    medfee_sumamt_fen: int
    fund_pay_sumamt_fen: int
    acct_pay_fen: int
    fixmedins_setl_cnt: int

    def data(self) -> dict[str, Any]:
        """The input's `data`, amounts in yuan as on every NHSA wire."""
        return {
            "insutype": self.insutype,
            "clr_type": self.clr_type,
            "setl_optins": self.setl_optins,
            "stmt_begndate": self.stmt_begndate.isoformat(),
            "stmt_enddate": self.stmt_enddate.isoformat(),
            "medfee_sumamt": fen_to_yuan(self.medfee_sumamt_fen),
            "fund_pay_sumamt": fen_to_yuan(self.fund_pay_sumamt_fen),
            "acct_pay": fen_to_yuan(self.acct_pay_fen),
            "fixmedins_setl_cnt": self.fixmedins_setl_cnt,
            "refd_setl_flag": WITH_REVERSALS,
        }


def totals_result(output: dict[str, Any]) -> tuple[str, str]:
    """(stmt_rslt, stmt_rslt_dscr) of a 3201 answer's output; anything but "0"/"1" is not an answer."""
    info = output.get("stmtinfo")
    if not isinstance(info, dict) or str(info.get("stmt_rslt")) not in (BALANCED, UNBALANCED):
        raise ValueError("a 3201 answer without stmtinfo.stmt_rslt 0 or 1")
    return str(info["stmt_rslt"]), str(info.get("stmt_rslt_dscr") or "")
