"""How each kind of side effect is tried: one retry policy and its timeouts per kind, named
for what it protects. Every activity call in workflows/ uses one of these.

Background steps that must happen in the end (the ledger, the sanctions and their undoing,
the channels' money) run through `workflows.steps.until_done`: rounds of `ALERT_AFTER`
without an attempt limit, an alert in Temporal UI while they keep failing. The others are
bounded: the HIS waiting on the line, a text, a scheduled sweep that runs again anyway."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from temporalio.common import RetryPolicy

# the activity found the data wrong: a retry cannot mend it
INVALID_INPUT = "invalid_input"


@dataclass(frozen=True)
class Retries:
    """A retry policy with its explicit timeouts."""

    policy: RetryPolicy
    start_to_close: timedelta
    schedule_to_close: timedelta | None = None  # None: as long as the policy allows


# A clinical event has the HIS waiting on the line: a few quick tries, then an answer.
CLINICAL_EVENT = Retries(
    RetryPolicy(
        initial_interval=timedelta(milliseconds=500),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(seconds=4),
        maximum_attempts=4,
        non_retryable_error_types=[INVALID_INPUT],
    ),
    start_to_close=timedelta(seconds=10),
    schedule_to_close=timedelta(seconds=20),
)

# Our own record of the visit: charges, balances, statuses, receipts, refunds asked for.
LEDGER_WRITE = Retries(
    RetryPolicy(
        initial_interval=timedelta(seconds=1),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(seconds=60),
        non_retryable_error_types=[INVALID_INPUT],
    ),
    start_to_close=timedelta(seconds=30),
)

# The card lock at the insurance bureau and the report to the credit platform, and above all
# their undoing after payment.
SANCTION = Retries(
    RetryPolicy(
        initial_interval=timedelta(seconds=1),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(seconds=60),
        non_retryable_error_types=[INVALID_INPUT],
    ),
    start_to_close=timedelta(seconds=30),
)

# Money at a payment channel or the bureau: a refund, an order closed, an insurance
# settlement or its reversal (冲正). A refund the channel answered with another amount is for
# a person to reconcile.
CHANNEL_CALL = Retries(
    RetryPolicy(
        initial_interval=timedelta(seconds=2),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(minutes=10),
        non_retryable_error_types=[INVALID_INPUT, "refund_mismatch"],
    ),
    start_to_close=timedelta(seconds=60),
)

# A text to the patient: it must not hold up the visit; a number the gateway refuses is final.
PATIENT_MESSAGE = Retries(
    RetryPolicy(
        initial_interval=timedelta(seconds=2),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(minutes=5),
        maximum_attempts=8,
        non_retryable_error_types=[INVALID_INPUT, "sms_rejected"],
    ),
    start_to_close=timedelta(seconds=30),
)

# The reconciliation sweep's questions (stale payments and refunds, a channel's answer about
# one order): a few tries; the next scheduled run asks again.
SWEEP = Retries(
    RetryPolicy(initial_interval=timedelta(seconds=2), maximum_interval=timedelta(seconds=30), maximum_attempts=5),
    start_to_close=timedelta(seconds=30),
)

# A channel's daily statement is ready some hours after midnight: keep asking for a while.
STATEMENT_DOWNLOAD = Retries(
    RetryPolicy(
        initial_interval=timedelta(seconds=10),
        backoff_coefficient=2.0,
        maximum_interval=timedelta(minutes=30),
        maximum_attempts=12,
        non_retryable_error_types=[INVALID_INPUT],
    ),
    start_to_close=timedelta(minutes=5),
)
