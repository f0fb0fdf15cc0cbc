"""The credit upkeep's payloads (workflows/credit_upkeep.py): objections answered, expired
records deleted. Beside workflows/contracts.py; same rules."""

from dataclasses import dataclass, field
from datetime import datetime

# the credit upkeep (workflows/credit_upkeep.py): objections answered, expired records deleted
ANSWER_CREDIT_OBJECTIONS = "answer_credit_objections"
EXPIRE_CREDIT_RECORDS = "expire_credit_records"
CREDIT_UPKEEP_SCHEDULE_ID = "credit-upkeep"


@dataclass(frozen=True, kw_only=True)
class CreditUpkeepInput:
    retention_days: int  # a negative record is deleted this many days after its debt ended


@dataclass(frozen=True, kw_only=True)
class CreditSweepInput:
    at: datetime
    retention_days: int = 0


@dataclass(frozen=True, kw_only=True)
class CreditSweepResult:
    done: list[str] = field(default_factory=list)  # the objections answered, the records deleted
