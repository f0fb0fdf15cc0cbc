"""Which database errors a retry cannot mend. A data exception (a NUL PostgreSQL will not
store, a value too long or too large) or an integrity error other than a unique key (a
concurrent retry that won the race, whose work the next attempt finds done) fails the same
way every time: it becomes a non-retryable `invalid_input`, so the caller hears at once.
The message names the error class only: the statement's parameters may be personal data."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from sqlalchemy.exc import DataError, DBAPIError, IntegrityError
from temporalio.exceptions import ApplicationError

P = ParamSpec("P")
R = TypeVar("R")


def cannot_succeed_on_retry(err: BaseException) -> bool:
    if isinstance(err, OverflowError):  # an integer the driver cannot send (SQLite)
        return True
    if not isinstance(err, DBAPIError):
        return False
    state = str(getattr(err.orig, "sqlstate", None) or getattr(err.orig, "pgcode", None) or "")
    if isinstance(err, DataError) or state.startswith("22"):  # SQLSTATE class 22: data exception
        return True
    if isinstance(err, IntegrityError) or state.startswith("23"):  # class 23: integrity constraint
        return state != "23505" and "UNIQUE constraint failed" not in str(err.orig)
    return False


def refuse_bad_data(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Wrap an activity: errors that cannot succeed on retry become non-retryable."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await fn(*args, **kwargs)
        except (DBAPIError, OverflowError) as err:
            if not cannot_succeed_on_retry(err):
                raise
            orig = getattr(err, "orig", None)
            cause = type(getattr(orig, "__cause__", None) or orig or err).__name__
            raise ApplicationError(
                f"the database refused the data ({cause})", type="invalid_input", non_retryable=True
            ) from None

    return wrapper
