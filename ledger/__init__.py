"""ledger/: the one home of money.

What it owns: every write of a money row. The charges (the registration fee, written once
under one key, and the items events order or cancel: charges.py); payments and their
allocations to the visits (payments.py); refunds and their reversals (refunds.py); waivers
when they come; and the hand-off of what was written to the visits' workflows (the outbox,
outbox.py, written with the payment, and handoff.py, which delivers it). Only repository.py
and outbox.py speak SQL to `ledger_entry`, `payment`, `refund` and `visit_notification`; no
other module of the product makes or changes those rows (tests/ledger/test_home.py checks).

The transaction rule: ledger functions run in the caller's transaction and never commit. The
caller commits once: an activity's `session.begin()`, or the API's request session, committed
by its dependency (api/deps.py; where a call to Temporal must see the rows first, through its
one `commit_before_call`). What follows a commit (telling the workflows) goes through
handoff.py after it, never inside it. A refusal raises a ledger.errors class with a stable
`code` and no HTTP status; the API maps each class to its status in one table (api/errors.py)."""
